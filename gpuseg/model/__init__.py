"""The sequence model: a pure ``nn.Module`` (no device, I/O or logging inside)."""
