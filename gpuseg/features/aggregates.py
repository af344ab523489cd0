"""Per-subscriber aggregate features of a panel, in NumPy chunks: window features and means."""

from __future__ import annotations

import numpy as np
import torch

from gpuseg.data.panel import Panel
from gpuseg.errors import DataError
from gpuseg.features.window import window_stats as model_window_stats

WINDOW_STATS = ("mean", "last", "last_quarter", "slope", "drop", "std")


FEATURE_CHUNK_ROWS = 16_384  # subscribers per extraction pass: ~30 MB of float64 at T=26, M=9


def feature_names(panel: Panel) -> list[str]:
    """Names of :func:`window_features` columns, in order: ``{metric}__{stat}`` grouped by stat,
    then ``share_present``, then ``static__{name}`` for each encoded static feature."""
    n_metrics, n_static = panel.usage.shape[2], panel.static.shape[1]
    metrics = list(panel.meta.get("metrics") or [f"m{j}" for j in range(n_metrics)])
    static = list(panel.meta.get("static_features") or [f"s{j}" for j in range(n_static)])
    names = [f"{m}__{s}" for s in WINDOW_STATS for m in metrics]
    return [*names, "share_present", *(f"static__{s}" for s in static)]


def window_stats(usage: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Window aggregates of one chunk: usage (B, T, M), mask (B, T) -> (B, 6 * M + 1).

    Columns are grouped by statistic (all metrics' means, then all metrics' last values, ...) and
    end with the share of present periods. Computed by
    :func:`gpuseg.features.window.window_stats` in
    float64 (the model's ``wide_window_stats`` reads the same features), returned as float32.
    """
    out = model_window_stats(
        torch.as_tensor(np.asarray(usage, dtype=np.float64)),
        torch.as_tensor(np.asarray(mask, dtype=bool)),
    )
    return out.numpy().astype(np.float32)


def window_features(
    panel: Panel, rows: np.ndarray | None = None, chunk_rows: int = FEATURE_CHUNK_ROWS
) -> np.ndarray:
    """Feature matrix (len(rows), F) float32 for ``rows`` of the panel (all rows when None).

    Columns as in :func:`feature_names`. Reads ``chunk_rows`` subscribers at a time.
    """
    n_total = len(panel.mask)
    rows = np.arange(n_total) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= n_total):
        raise DataError(f"feature rows out of range for a panel of {n_total} subscribers")
    n_metrics = panel.usage.shape[2]
    n_static = panel.static.shape[1]
    width = len(WINDOW_STATS) * n_metrics + 1 + n_static
    out = np.empty((len(rows), width), dtype=np.float32)
    for start in range(0, len(rows), chunk_rows):
        r = rows[start : start + chunk_rows]
        stop = start + len(r)
        out[start:stop, : width - n_static] = window_stats(panel.usage[r], panel.mask[r])
        out[start:stop, width - n_static :] = np.asarray(panel.static[r], dtype=np.float32)
    return out


def subscriber_means(panel: Panel, chunk: int = 65_536) -> np.ndarray:
    """Mean of each metric over present periods, (N, M) float32, read in chunks (bounded memory)."""
    n, _, m = panel.usage.shape
    out = np.zeros((n, m), dtype=np.float32)
    for s in range(0, n, chunk):
        u = np.asarray(panel.usage[s : s + chunk], dtype=np.float32)
        w = np.asarray(panel.mask[s : s + chunk], dtype=np.float32)[..., None]
        out[s : s + chunk] = (u * w).sum(1, dtype=np.float64) / np.maximum(w.sum(1), 1)
    return out
