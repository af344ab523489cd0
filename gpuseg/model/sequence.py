"""The subscriber model: a sequence encoder over masked usage, fused with static attributes.

Pure ``nn.Module``s: no device choice, I/O or logging here. Inputs are raw panel values; the
normalisation (log1p then standardise, statistics fitted on the training split) lives in buffers,
so a checkpoint is self-contained.

Shapes: B subscribers, T periods, M metrics, S static features, E embedding size, H hidden size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpuseg.config import ModelConfig
from gpuseg.features.window import recent_periods, signed_log1p, window_stats

N_MIGRATION = 3  # down, stay, up


SUMMARY_STATS = 7  # per-metric window aggregates in SubscriberModel.window_summary


class TemporalConv(nn.Module):
    """Causal dilated 1-D convolutions (a small TCN) over (B, T, H)."""

    def __init__(self, hidden: int, num_layers: int, dropout: float):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(hidden, hidden, kernel_size=3, dilation=2**i)
            for i in range(max(num_layers, 2))
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)  # (B, H, T)
        for conv in self.convs:
            pad = conv.dilation[0] * (conv.kernel_size[0] - 1)
            h = h + self.dropout(F.gelu(conv(F.pad(h, (pad, 0)))))  # causal: pad on the left
        return h.transpose(1, 2)  # (B, T, H)


class WideHead(nn.Module):
    """A linear term plus an optional one-hidden-layer MLP over the same input: (B, D) -> (B, O).

    The linear term holds what a logistic regression on the window aggregates would learn; the
    MLP adds thresholds and interactions (value-tier boundaries, contract-end windows)."""

    def __init__(self, d_in: int, hidden: int, out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, out)
        self.mlp = (
            nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, out))
            if hidden > 0
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)  # (B, O)
        return y if self.mlp is None else y + self.mlp(x)


class SubscriberModel(nn.Module):
    """Encoder -> embedding -> churn, migration and usage-profile heads.

    The profile head reconstructs each metric's mean over the whole window and over its last
    quarter; it keeps behaviour (not only risk) in the embedding, which the segments are cut from.
    """

    def __init__(self, n_metrics: int, n_static: int, n_periods: int, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.n_metrics, self.n_static, self.n_periods = n_metrics, n_static, n_periods
        h = cfg.hidden_size
        self.register_buffer("usage_mean", torch.zeros(n_metrics))
        self.register_buffer("usage_std", torch.ones(n_metrics))
        self.register_buffer("static_mean", torch.zeros(n_static))
        self.register_buffer("static_std", torch.ones(n_static))

        seq_out = 0
        if cfg.encoder != "static":
            self.input = nn.Linear(n_metrics + 1, h)  # metrics plus the mask channel
            if cfg.encoder == "gru":
                self.rnn = nn.GRU(
                    h,
                    h,
                    cfg.num_layers,
                    batch_first=True,
                    dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
                )
            elif cfg.encoder == "lstm":
                self.rnn = nn.LSTM(
                    h,
                    h,
                    cfg.num_layers,
                    batch_first=True,
                    dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
                )
            elif cfg.encoder == "transformer":
                self.position = nn.Parameter(torch.randn(n_periods, h) * 0.02)
                layer = nn.TransformerEncoderLayer(
                    h, cfg.n_heads, 2 * h, cfg.dropout, batch_first=True, norm_first=True
                )
                self.transformer = nn.TransformerEncoder(
                    layer, cfg.num_layers, enable_nested_tensor=False
                )
            elif cfg.encoder == "tcn":
                self.tcn = TemporalConv(h, cfg.num_layers, cfg.dropout)
            else:
                raise ValueError(f"unknown encoder {cfg.encoder!r}")
            seq_out = 2 * h  # last state and masked mean
        self.static_net = (
            nn.Sequential(nn.Linear(n_static, cfg.static_hidden), nn.GELU()) if n_static else None
        )
        summary = cfg.window_summary or cfg.encoder == "static"
        # window aggregates: SUMMARY_STATS per metric, the share present, the last-N level
        self.n_summary = (SUMMARY_STATS + (cfg.last_level_periods > 0)) * n_metrics + 1
        fused = (
            seq_out + (cfg.static_hidden if n_static else 0) + (self.n_summary if summary else 0)
        )
        self.to_embedding = nn.Sequential(
            nn.Linear(fused, h), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(h, cfg.embedding_dim)
        )
        e = cfg.embedding_dim
        # with wide_window_stats the wide path also reads the baselines' features (window_stats),
        # signed log1p then standardised with statistics fitted on training rows
        self.n_stats = 6 * n_metrics + 1 if cfg.wide_heads and cfg.wide_window_stats else 0
        if self.n_stats:
            self.register_buffer("stats_mean", torch.zeros(self.n_stats))
            self.register_buffer("stats_std", torch.ones(self.n_stats))
        if cfg.wide_heads:  # heads see [embedding, window aggregates, standardised static]
            n_wide = self.n_summary + self.n_stats + n_static
            n_binned = n_wide - self.n_stats  # the window stats enter the linear term only
            # bin edges of the piecewise-linear encoding, fitted on training rows (set_bins)
            self.register_buffer("bin_edges", torch.zeros(n_binned, cfg.wide_bins + 1))
            wide = e + n_wide + n_binned * cfg.wide_bins
            # the churn head reads the first churn_width inputs, then the last churn_tail ones
            # (the static attributes come last in the wide features, so do their bins)
            self.churn_width = wide if cfg.wide_bins_churn is True else e + n_wide
            self.churn_tail = n_static * cfg.wide_bins if cfg.wide_bins_churn == "static" else 0
            self.churn_head = WideHead(self.churn_width + self.churn_tail, cfg.head_hidden, 1)
            self.migration_head = WideHead(wide, cfg.head_hidden, N_MIGRATION)
        else:
            self.churn_head = self._head(e, cfg.head_hidden, 1)
            self.migration_head = self._head(e, cfg.head_hidden, N_MIGRATION)
        self.profile_head = nn.Linear(e, 2 * n_metrics)

    @staticmethod
    def _head(e: int, hidden: int, out: int) -> nn.Module:
        if hidden <= 0:
            return nn.Sequential(nn.GELU(), nn.Linear(e, out))
        return nn.Sequential(nn.GELU(), nn.Linear(e, hidden), nn.GELU(), nn.Linear(hidden, out))

    # -- normalisation -----------------------------------------------------------------------
    @torch.no_grad()
    def set_normalization(self, usage_mean, usage_std, static_mean, static_std) -> None:
        for name, value in (
            ("usage_mean", usage_mean),
            ("usage_std", usage_std),
            ("static_mean", static_mean),
            ("static_std", static_std),
        ):
            getattr(self, name).copy_(torch.as_tensor(value, dtype=torch.float32))

    @torch.no_grad()
    def set_stats_scale(self, mean, std) -> None:
        """Mean and std (6M + 1,) of signed log1p(window_stats) on training rows."""
        self.stats_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.stats_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def scaled_stats(self, usage: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The baselines' window aggregates, signed log1p and standardised: (B, 6M + 1)."""
        raw = window_stats(usage.float(), mask)  # (B, 6M + 1)
        return (signed_log1p(raw) - self.stats_mean) / self.stats_std

    @torch.no_grad()
    def set_bins(self, edges) -> None:
        """Quantile bin edges (F', wide_bins + 1) of :meth:`binned_inputs` for the
        piecewise-linear wide encoding."""
        self.bin_edges.copy_(torch.as_tensor(edges, dtype=torch.float32))

    def binned_inputs(self, wide: torch.Tensor) -> torch.Tensor:
        """The wide features (B, F) that get bins: all but the window stats, (B, F')."""
        if not self.n_stats:
            return wide
        return torch.cat([wide[:, : self.n_summary], wide[:, self.n_summary + self.n_stats :]], 1)

    def piecewise_linear(self, w: torch.Tensor) -> torch.Tensor:
        """(B, F) -> (B, F * K): per feature and bin, the position within the bin clipped to
        [0, 1] (0 below it, 1 above it), so a linear layer over it is a piecewise-linear function
        with knots at the training quantiles. A bin of zero width is a step at its edge."""
        lo, hi = self.bin_edges[:, :-1], self.bin_edges[:, 1:]  # (F, K)
        width = (hi - lo).clamp_min(1e-6)
        z = ((w.unsqueeze(-1).float() - lo) / width).clamp(0, 1)  # (B, F, K)
        return z.flatten(1).to(w.dtype)

    def scale_static(self, static: torch.Tensor) -> torch.Tensor:
        """Raw static (B, S) -> standardised (B, S), after signed log1p with ``static_log``."""
        if self.cfg.static_log:
            static = signed_log1p(static)
        return (static - self.static_mean) / self.static_std

    def normalize(self, usage: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # signed log1p: a negative value (a refund in ARPU, data.allow_negative) keeps its sign;
        # on values >= 0 it is log1p exactly
        x = (signed_log1p(usage) - self.usage_mean) / self.usage_std  # (B, T, M)
        return x * mask.unsqueeze(-1)  # missing periods are exactly 0

    @staticmethod
    def profile_target(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked mean of normalised usage over the window and over its last quarter: (B, 2M)."""
        m = mask.unsqueeze(-1).float()  # (B, T, 1)
        q = recent_periods(x.shape[1])
        whole = (x * m).sum(1) / m.sum(1).clamp_min(1)  # (B, M)
        recent = (x[:, -q:] * m[:, -q:]).sum(1) / m[:, -q:].sum(1).clamp_min(1)  # (B, M)
        return torch.cat([whole, recent], dim=1)

    def window_summary(
        self, x: torch.Tensor, mask: torch.Tensor, usage: torch.Tensor
    ) -> torch.Tensor:
        """Fixed window aggregates over present periods, per metric: of normalised usage x (B, T, M)
        the mean, the mean of the last quarter, the latest present value, the least-squares slope
        and the standard deviation; of raw usage the level of the whole window's and of the last
        quarter's mean (log1p then standardised, like ARPU), and with ``last_level_periods`` = k
        of the last k periods' mean; then the share of present periods: (B, 7M + 1), or
        (B, 8M + 1) with k. Late joiners and gaps only change which periods count."""
        m = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        t = x.shape[1]
        count = m.sum(1).clamp_min(1)  # (B, 1)
        mean = (x * m).sum(1) / count  # (B, M)
        q = recent_periods(t)
        recent = (x[:, -q:] * m[:, -q:]).sum(1) / m[:, -q:].sum(1).clamp_min(1)  # (B, M)
        steps = torch.arange(t, device=x.device, dtype=x.dtype).view(1, t, 1)  # (1, T, 1)
        last_idx = (steps * m).amax(1).long()  # (B, 1) latest present period (0 when none)
        last = x.gather(1, last_idx.unsqueeze(-1).expand(-1, 1, x.shape[2])).squeeze(1)  # (B, M)
        dt = (steps - (steps * m).sum(1, keepdim=True) / count.unsqueeze(1)) * m  # (B, T, 1)
        dev = (x - mean.unsqueeze(1)) * m  # (B, T, M)
        slope = (dt * dev).sum(1) / (dt * dt).sum(1).clamp_min(1e-6)  # (B, M)
        std = ((dev * dev).sum(1) / count).sqrt()  # (B, M)
        share = m.mean(1)  # (B, 1)
        raw = usage.to(x.dtype) * m  # (B, T, M)
        level = signed_log1p(raw.sum(1) / count)  # (B, M)
        level_recent = signed_log1p(raw[:, -q:].sum(1) / m[:, -q:].sum(1).clamp_min(1))  # (B, M)
        levels = [level, level_recent]
        k = self.cfg.last_level_periods
        if k > 0:  # (B, M) level over the last k periods, e.g. the last month's ARPU
            levels.append(signed_log1p(raw[:, -k:].sum(1) / m[:, -k:].sum(1).clamp_min(1)))
        levels = [(v - self.usage_mean) / self.usage_std for v in levels]
        return torch.cat([mean, recent, last, slope * (t / 4), std, *levels, share], dim=1)

    # -- forward -----------------------------------------------------------------------------
    def encode(self, usage: torch.Tensor, mask: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        """Raw usage (B, T, M), mask (B, T), raw static (B, S) -> embedding (B, E)."""
        return self._encode(usage, mask, static)[0]

    def _encode(
        self, usage: torch.Tensor, mask: torch.Tensor, static: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> embedding (B, E), and with ``wide_heads`` the heads' wide input (B, F)."""
        x = self.normalize(usage, mask)  # (B, T, M)
        m = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        parts = []
        summary = None
        if self.cfg.window_summary or self.cfg.encoder == "static" or self.cfg.wide_heads:
            summary = self.window_summary(x, mask, usage)  # (B, n_summary) window aggregates
        if self.cfg.window_summary or self.cfg.encoder == "static":
            parts.append(summary)
        if self.cfg.encoder != "static":
            h = self.input(torch.cat([x, m], dim=-1))  # (B, T, H)
            if self.cfg.encoder in ("gru", "lstm"):
                out, _ = self.rnn(h)  # (B, T, H)
            elif self.cfg.encoder == "transformer":
                pad = ~mask.bool()
                pad[:, -1] = False  # a subscriber with no period still attends to one slot
                out = self.transformer(
                    h + self.position[: h.shape[1]], src_key_padding_mask=pad
                )  # (B, T, H)
            else:
                out = self.tcn(h)  # (B, T, H)
            out = out.to(x.dtype)
            last = out[:, -1]  # (B, H) padded at the start, so the last step is the latest period
            mean = (out * m).sum(1) / m.sum(1).clamp_min(1)  # (B, H)
            parts += [last, mean]
        s = self.scale_static(static)  # (B, S)
        if self.static_net is not None:
            parts.append(self.static_net(s))  # (B, static_hidden)
        z = self.to_embedding(torch.cat(parts, dim=-1))  # (B, E)
        wide = None
        if self.cfg.wide_heads:
            wide = self.wide_features(summary, s, usage, mask)  # (B, F)
            if self.cfg.wide_bins > 0:
                bins = self.piecewise_linear(self.binned_inputs(wide))  # (B, F' K)
                wide = torch.cat([wide, bins], dim=-1)  # (B, F + F' K)
        return z, wide

    def wide_features(
        self, summary: torch.Tensor, s: torch.Tensor, usage: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Window aggregates (B, n_summary), with ``wide_window_stats`` the scaled baseline
        features (B, 6M + 1), and standardised static (B, S) last -> (B, F)."""
        parts = [summary]
        if self.n_stats:
            parts.append(self.scaled_stats(usage, mask).to(summary.dtype))
        return torch.cat([*parts, s.to(summary.dtype)], dim=-1)

    @torch.no_grad()
    def wide_inputs(
        self, usage: torch.Tensor, mask: torch.Tensor, static: torch.Tensor
    ) -> torch.Tensor:
        """The wide features before encoding, (B, F); :meth:`set_bins` is fitted on their
        :meth:`binned_inputs`."""
        x = self.normalize(usage, mask)
        summary = self.window_summary(x, mask, usage)
        return self.wide_features(summary, self.scale_static(static), usage, mask)

    def forward(
        self, usage: torch.Tensor, mask: torch.Tensor, static: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        z, wide = self._encode(usage, mask, static)  # (B, E), (B, F) or None
        h = z if wide is None else torch.cat([z, wide.to(z.dtype)], dim=-1)  # heads' input
        h_churn = h
        if wide is not None:
            h_churn = h[:, : self.churn_width]
            if self.churn_tail:
                h_churn = torch.cat([h_churn, h[:, -self.churn_tail :]], dim=-1)
        return {
            "embedding": z,
            "churn_logit": self.churn_head(h_churn).squeeze(-1),  # (B,)
            "migration_logits": self.migration_head(h),  # (B, 3)
            "profile": self.profile_head(z),  # (B, 2M)
        }


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_subscriber(model: SubscriberModel) -> float:
    """Approximate forward FLOPs for one subscriber (matmuls only), for throughput reports."""
    cfg, t, m = model.cfg, model.n_periods, model.n_metrics
    h = cfg.hidden_size
    per_step = 2 * (m + 1) * h
    if cfg.encoder == "gru":
        per_step += cfg.num_layers * 2 * 3 * (2 * h * h)
    elif cfg.encoder == "lstm":
        per_step += cfg.num_layers * 2 * 4 * (2 * h * h)
    elif cfg.encoder == "transformer":
        per_step += cfg.num_layers * (2 * 4 * h * h + 2 * 2 * t * h + 2 * 4 * h * h)
    elif cfg.encoder == "tcn":
        per_step += max(cfg.num_layers, 2) * 2 * 3 * h * h
    else:
        per_step = 0
    head = 2 * (4 * h * h + h * cfg.embedding_dim)
    return float(t * per_step + head + (2 * model.n_static * cfg.static_hidden))
