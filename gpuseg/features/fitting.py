"""Preprocessing fitted on training rows: usage and static normalisation, the window-stats scale."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from gpuseg.data.panel import Panel
from gpuseg.features.window import signed_log1p, window_stats

CHUNK_ROWS = 65_536  # rows per host->device copy and per normalisation pass


def fit_normalization(
    panel: Panel, rows: np.ndarray, static_log: bool = False
) -> dict[str, np.ndarray]:
    """Per-metric mean/std of signed log1p(usage) over present periods, and static mean/std (of
    signed log1p(static) with ``static_log``, as :meth:`SubscriberModel.scale_static` reads it),
    on ``rows``."""
    m = panel.usage.shape[2]
    s1, s2, cnt = np.zeros(m), np.zeros(m), 0.0
    for start in range(0, len(rows), CHUNK_ROWS):
        r = rows[start : start + CHUNK_ROWS]
        u = np.asarray(panel.usage[r], dtype=np.float64)
        x = np.sign(u) * np.log1p(np.abs(u))  # (b, T, M) signed log1p, as the model reads it
        w = np.asarray(panel.mask[r], dtype=np.float64)[..., None]  # (b, T, 1)
        s1 += (x * w).sum((0, 1))
        s2 += (x * x * w).sum((0, 1))
        cnt += w.sum()
    mean = s1 / max(cnt, 1)
    std = np.sqrt(np.maximum(s2 / max(cnt, 1) - mean**2, 0)) + 1e-3
    static = np.asarray(panel.static[rows], dtype=np.float64)
    if static_log:
        static = signed_log1p(torch.from_numpy(static)).numpy()
    smean = static.mean(0) if len(static) else np.zeros(panel.static.shape[1])
    sstd = static.std(0) + 1e-3 if len(static) else np.ones(panel.static.shape[1])
    return dict(usage_mean=mean, usage_std=std, static_mean=smean, static_std=sstd)


def sample_rows(rows: np.ndarray, seed: int, sample: int) -> np.ndarray:
    """A seeded sample of at most ``sample`` of ``rows``, sorted (sequential reads)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=min(sample, len(rows)), replace=False))


def sampled_chunks(
    panel: Panel, rows: np.ndarray, seed: int, sample: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """usage (b, T, M), mask (b, T) and static (b, S) of a seeded sample of at most ``sample`` of
    ``rows``, ``CHUNK_ROWS`` subscribers at a time, as stored."""
    rows = sample_rows(rows, seed, sample)
    for start in range(0, len(rows), CHUNK_ROWS):
        r = rows[start : start + CHUNK_ROWS]
        yield panel.usage[r], panel.mask[r], panel.static[r]


def fit_stats_scale(
    panel: Panel, rows: np.ndarray, seed: int, sample: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (6M + 1,) of signed log1p of :func:`gpuseg.features.window.window_stats` over (a
    seeded sample of at most ``sample`` of) the training ``rows``: the scale of the model's
    ``wide_window_stats`` inputs."""
    parts = []
    for usage, mask, _ in sampled_chunks(panel, rows, seed, sample):
        raw = window_stats(
            torch.as_tensor(np.asarray(usage, dtype=np.float64)),
            torch.as_tensor(np.asarray(mask, dtype=bool)),
        )
        parts.append(signed_log1p(raw).numpy())
    x = np.concatenate(parts)  # (n, 6M + 1)
    return x.mean(0), x.std(0) + 1e-3


def fit_bins(
    model: Any, panel: Panel, rows: np.ndarray, n_bins: int, seed: int, sample: int = 100_000
) -> np.ndarray:
    """Quantile bin edges (F', n_bins + 1) of ``model.binned_inputs(model.wide_inputs(...))``
    (a :class:`gpuseg.model.sequence.SubscriberModel`) over (a seeded sample of at most ``sample``
    of) the training ``rows``; the model's normalisation (and window-stats scale) must be set
    first."""
    parts = []
    for usage, mask, static in sampled_chunks(panel, rows, seed, sample):
        wide = model.wide_inputs(
            torch.as_tensor(np.asarray(usage, dtype=np.float32)),
            torch.as_tensor(np.asarray(mask, dtype=np.float32)),
            torch.as_tensor(np.asarray(static, dtype=np.float32)),
        )
        parts.append(model.binned_inputs(wide).numpy())
    w = np.concatenate(parts).astype(np.float64)  # (n, F')
    return np.quantile(w, np.linspace(0.0, 1.0, n_bins + 1), axis=0).T  # (F', n_bins + 1)
