"""Training: the loop, checkpoints, calibration, DDP under torchrun and Optuna tuning."""
