"""Window aggregates of usage series, in torch: one definition for the model and baselines."""

from __future__ import annotations

import numpy as np
import torch


def recent_periods(t: int) -> int:
    """Periods in the recent part ("last quarter") of a ``t``-period window: ``max(t // 4, 1)``.
    The one definition that every window aggregate (baselines, model summary, profile target)
    reads."""
    return max(t // 4, 1)


def signed_log1p(x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """sign(x) * log1p(|x|), elementwise: tames heavy-tailed attributes and keeps their sign. A
    NumPy array (scikit-learn pipelines) comes back as one, computed by the same torch code."""
    if isinstance(x, np.ndarray):
        return signed_log1p(torch.from_numpy(x)).numpy()
    return x.sign() * torch.log1p(x.abs())


def window_stats(usage: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Raw-scale window aggregates over present periods: usage (B, T, M), mask (B, T) ->
    (B, 6M + 1), grouped by statistic: every metric's mean, latest present value, mean over the
    last :func:`recent_periods` periods, least-squares slope per period, drop
    ``log1p(first-half mean) - log1p(last-quarter mean)`` (0 when either half has no present
    period) and population standard deviation; then the share of present periods.

    The features of :mod:`gpuseg.baselines`, and with ``wide_window_stats`` part of the heads'
    wide input, so the model reads what the logistic baseline reads. Absent periods never enter
    a statistic (whatever they hold); a subscriber with no present period gets zeros. Computed in
    ``usage``'s dtype.
    """
    present = mask.bool()  # (B, T)
    w = present.unsqueeze(-1).to(usage.dtype)  # (B, T, 1)
    u = torch.where(present.unsqueeze(-1), usage, 0.0)  # (B, T, M)
    b, t, _ = u.shape
    count = w.sum(1)  # (B, 1)
    safe = count.clamp_min(1.0)
    mean = u.sum(1) / safe  # (B, M)
    dev = (u - mean.unsqueeze(1)) * w  # (B, T, M)
    std = ((dev * dev).sum(1) / safe).sqrt()  # (B, M)
    steps = torch.arange(t, device=u.device, dtype=u.dtype).view(1, t, 1)  # (1, T, 1)
    t_dev = (steps - ((steps * w).sum(1) / safe).unsqueeze(1)) * w  # (B, T, 1)
    sxx = (t_dev * t_dev).sum(1)  # (B, 1)
    slope = torch.where(sxx > 0, (t_dev * dev).sum(1) / torch.where(sxx > 0, sxx, 1.0), 0.0)
    last_idx = t - 1 - present.flip(1).float().argmax(1)  # (B,) T - 1 when none
    last = u[torch.arange(b, device=u.device), last_idx] * present.any(1, keepdim=True)  # (B, M)
    periods = torch.arange(t, device=u.device)

    def window_mean(in_window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ww = w * in_window.view(1, t, 1).to(u.dtype)  # (B, T, 1)
        n = ww.sum(1)  # (B, 1)
        return (u * ww).sum(1) / n.clamp_min(1.0), n > 0

    last_q, has_q = window_mean(periods >= t - recent_periods(t))  # (B, M), (B, 1)
    first_h, has_h = window_mean(periods < max(t // 2, 1))
    drop = torch.where(
        has_q & has_h, torch.log1p(first_h.clamp_min(0)) - torch.log1p(last_q.clamp_min(0)), 0.0
    )
    return torch.cat([mean, last, last_q, slope, drop, std, count / t], dim=1)
