"""Sequence features that window aggregates miss: peaks, bursts, runs and sharp drops (issue 15).

The window aggregates of :mod:`gpuseg.features.aggregates` (mean, last, last quarter, slope,
drop, std) summarise a series by its level and trend; a short burst of failures two weeks ago, or
how long a subscriber has been quiet, is averaged away. Per metric, over present periods (absent
periods count as 0 usage):

- ``peak``        the largest value in the window, ``log1p``
- ``peak_age``    periods since that peak, over T (0: the latest period)
- ``burst``       ``log1p`` of the largest 2-period sum in the last quarter minus ``log1p`` of twice
                  the subscriber's mean over the rest of the window: > 0 when the recent weeks
                  spiked against the subscriber's own rate
- ``quiet_run``   trailing run of periods below a quarter of the subscriber's own mean, over T
- ``sharpest_drop`` the most negative one-period change of ``log1p`` usage

then ``absent_run``: the trailing run of absent periods, over T. Rows are computed chunk by chunk
(bounded memory, memory-mapped panels welcome).
"""

from __future__ import annotations

import math

import numpy as np

from gpuseg.data.panel import Panel

SEQUENCE_STATS = ("peak", "peak_age", "burst", "quiet_run", "sharpest_drop")
CHUNK_ROWS = 16_384


def sequence_feature_names(metrics: list[str]) -> list[str]:
    return [f"{m}__{s}" for s in SEQUENCE_STATS for m in metrics] + ["absent_run"]


def _trailing_run(flags: np.ndarray) -> np.ndarray:
    """Length of the run of True at the end of each row: flags (B, T, ...) -> (B, ...)."""
    t = flags.shape[1]
    rev = flags[:, ::-1]
    first_false = np.where((~rev).any(1), (~rev).argmax(1), t)
    return first_false.astype(np.float64)


def sequence_stats(usage: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One chunk: usage (B, T, M), mask (B, T) -> (B, 5M + 1) float32, as the module says."""
    u = np.where(mask[..., None], np.asarray(usage, dtype=np.float64), 0.0).clip(min=0)  # (B,T,M)
    b, t, _ = u.shape
    logu = np.log1p(u)
    peak = logu.max(1)  # (B, M)
    peak_age = u[:, ::-1].argmax(1) / t  # periods since the last occurrence of the max
    q = min(max(math.ceil(t / 4), 2), t)
    recent = u[:, t - q :]  # (B, q, M)
    two = recent[:, 1:] + recent[:, :-1] if q > 1 else recent  # (B, q - 1, M)
    rest_w = mask[:, : t - q].sum(1, keepdims=True).clip(min=1)  # (B, 1)
    rest_mean = u[:, : t - q].sum(1) / rest_w if t > q else u.mean(1)
    burst = np.log1p(two.max(1)) - np.log1p(2 * rest_mean)
    mean = u.sum(1) / mask.sum(1, keepdims=True).clip(min=1)  # (B, M)
    quiet = _trailing_run(u < 0.25 * mean[:, None, :]) / t
    quiet = np.where(mean > 0, quiet, 0.0)
    drop = np.diff(logu, axis=1).min(1) if t > 1 else np.zeros_like(peak)
    absent = _trailing_run(~mask.astype(bool)) / t  # (B,)
    out = np.concatenate([peak, peak_age, burst, quiet, drop, absent[:, None]], axis=1)
    return out.astype(np.float32)


def sequence_features(panel: Panel, rows: np.ndarray | None = None) -> np.ndarray:
    """:func:`sequence_stats` of ``rows`` of the panel (all when None), chunk by chunk."""
    rows = np.arange(len(panel.mask)) if rows is None else np.asarray(rows, dtype=np.int64)
    m = panel.usage.shape[2]
    out = np.empty((len(rows), len(SEQUENCE_STATS) * m + 1), dtype=np.float32)
    for start in range(0, len(rows), CHUNK_ROWS):
        r = rows[start : start + CHUNK_ROWS]
        out[start : start + len(r)] = sequence_stats(
            np.asarray(panel.usage[r]), np.asarray(panel.mask[r])
        )
    return out
