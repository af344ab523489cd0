"""Evaluation metrics for churn (binary) and migration (3 classes), with bootstrap intervals."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

MIGRATION_NAMES = ("down", "stay", "up")


def top_fraction_lift(y: np.ndarray, p: np.ndarray, fraction: float = 0.1) -> float:
    """Churn rate among the top ``fraction`` by score, over the overall churn rate."""
    n = max(int(round(len(y) * fraction)), 1)
    top = np.argsort(-p, kind="stable")[:n]
    base = y.mean()
    return float(y[top].mean() / base) if base > 0 else float("nan")


def churn_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    if len(np.unique(y)) < 2:
        return dict(roc_auc=float("nan"), pr_auc=float("nan"), top_decile_lift=float("nan"), brier=float(np.mean((p - y) ** 2)), n=len(y), positives=int(y.sum()))
    return dict(
        roc_auc=float(roc_auc_score(y, p)),
        pr_auc=float(average_precision_score(y, p)),
        top_decile_lift=top_fraction_lift(y, p, 0.1),
        brier=float(brier_score_loss(y, p)),
        n=int(len(y)),
        positives=int(y.sum()),
    )


def migration_metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    y = np.asarray(y).astype(int)
    pred = np.asarray(pred).astype(int)
    return dict(
        macro_f1=float(f1_score(y, pred, average="macro", labels=[0, 1, 2], zero_division=0)),
        accuracy=float((y == pred).mean()) if len(y) else float("nan"),
        confusion=confusion_matrix(y, pred, labels=[0, 1, 2]).tolist(),
        classes=list(MIGRATION_NAMES),
    )


def bootstrap_ci(metric, *arrays: np.ndarray, n_boot: int = 200, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``metric(*resampled arrays)`` over subscriber-level resamples."""
    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        try:
            values.append(metric(*(a[idx] for a in arrays)))
        except ValueError:  # a resample with one class only
            continue
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)
