"""Calibration fitted on validation rows: Platt for churn, decision weights for migration."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from gpuseg.evaluate.metrics import fit_decision_weights


def fit_platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Calibration p = sigmoid(a * logit + b) fitted on validation (Platt scaling)."""

    if len(np.unique(y)) < 2:
        return 1.0, 0.0
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(logits.reshape(-1, 1), y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def fit_migration_weights(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-class multipliers on the migration probabilities that maximise macro-F1 on validation
    (the same decision rule the baselines get); ones when validation has no migration labels."""
    has = np.asarray(y) >= 0
    if not has.any():
        return np.ones(logits.shape[1])
    return fit_decision_weights(softmax(logits[has]), np.asarray(y)[has].astype(np.int64))


def migration_decision(logits: np.ndarray, weights) -> np.ndarray:
    """Migration class per row: argmax of the softmax probabilities times the class weights."""
    return np.argmax(softmax(logits) * np.asarray(weights), axis=1).astype(np.int8)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def calibrated(logits: np.ndarray, platt: tuple[float, float]) -> np.ndarray:
    a, b = platt
    return 1.0 / (1.0 + np.exp(-(a * logits + b)))
