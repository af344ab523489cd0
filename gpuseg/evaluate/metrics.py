"""Evaluation metrics for churn (binary) and migration (3 classes), with bootstrap intervals."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import (
    brier_score_loss,
    confusion_matrix,
    f1_score,
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
        return dict(
            roc_auc=float("nan"),
            pr_auc=float("nan"),
            top_decile_lift=float("nan"),
            brier=float(np.mean((p - y) ** 2)),
            n=len(y),
            positives=int(y.sum()),
        )
    return dict(
        roc_auc=roc_auc(y, p),
        pr_auc=pr_auc(y, p),
        top_decile_lift=top_fraction_lift(y, p, 0.1),
        brier=float(brier_score_loss(y, p)),
        n=int(len(y)),
        positives=int(y.sum()),
    )


NO_MIGRATION_LABELS = "no labels"  # what reports print where a run has no migration labels


def migration_metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    """Macro-F1, accuracy and the confusion matrix; with no labelled rows (churn-only labels)
    the scores are None and ``labels`` says so, rather than a made-up value."""
    y = np.asarray(y).astype(int)
    pred = np.asarray(pred).astype(int)
    if len(y) == 0:
        return dict(
            macro_f1=None,
            accuracy=None,
            confusion=None,
            classes=list(MIGRATION_NAMES),
            n=0,
            labels=NO_MIGRATION_LABELS,
        )
    return dict(
        macro_f1=float(f1_score(y, pred, average="macro", labels=[0, 1, 2], zero_division=0)),
        accuracy=float((y == pred).mean()) if len(y) else float("nan"),
        confusion=confusion_matrix(y, pred, labels=[0, 1, 2]).tolist(),
        classes=list(MIGRATION_NAMES),
    )


def bootstrap_ci(
    metric, *arrays: np.ndarray, n_boot: int = 200, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
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


# ---------------------------------------------------------------------------------------------
# Single metrics on (y, p) pairs, calibration, and metric + confidence interval reports


def _both_classes(y: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(y)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError(f"{what} needs both classes")
    return y


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC-AUC via the rank-sum (Mann-Whitney) form, ties counted half: equal to scikit-learn's
    ``roc_auc_score`` and several times faster, which matters inside the bootstrap.

    Raises ValueError when ``y`` holds one class only (bootstrap_ci skips such resamples).
    """
    y = _both_classes(y, "ROC-AUC") == 1
    n_pos = int(y.sum())
    ranks = rankdata(np.asarray(p, dtype=float))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(y) - n_pos)))


def pr_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision (scikit-learn's definition:
    sum over score thresholds of recall gain times precision, tied scores as one threshold)."""
    y = (_both_classes(y, "PR-AUC") == 1).astype(np.int64)
    p = np.asarray(p, dtype=float)
    order = np.argsort(-p, kind="stable")
    ps = p[order]
    last = np.r_[np.flatnonzero(np.diff(ps) != 0), len(ps) - 1]  # end of each tie group
    tps = np.cumsum(y[order])[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def top_decile_lift(y: np.ndarray, p: np.ndarray) -> float:
    """Churn rate among the top 10% by score over the overall churn rate."""
    return top_fraction_lift(np.asarray(y), np.asarray(p), 0.1)


def macro_roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """Macro one-vs-rest ROC-AUC: the mean over classes k of the ROC-AUC of ``proba[:, k]`` for
    ``y == k`` (y in 0..K-1, proba (n, K)). Raises ValueError when a class is absent from ``y``
    (or is every row), as :func:`roc_auc` does."""
    y = np.asarray(y).astype(int)
    proba = np.asarray(proba, dtype=float)
    return float(np.mean([roc_auc(y == k, proba[:, k]) for k in range(proba.shape[1])]))


def class_roc_auc(y: np.ndarray, proba: np.ndarray, k: int) -> float:
    """ROC-AUC of ``proba[:, k]`` for class ``k`` against the rest."""
    return roc_auc(np.asarray(y).astype(int) == k, np.asarray(proba, dtype=float)[:, k])


def class_top_decile_lift(y: np.ndarray, proba: np.ndarray, k: int) -> float:
    """Rate of class ``k`` among the top 10% by ``proba[:, k]`` over its overall rate."""
    yk = (np.asarray(y).astype(int) == k).astype(int)
    return top_fraction_lift(yk, np.asarray(proba, dtype=float)[:, k], 0.1)


def down_roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """Migration: the one-vs-rest ROC-AUC of ``down`` (value fall, churners included)."""
    return class_roc_auc(y, proba, MIGRATION_NAMES.index("down"))


def down_top_decile_lift(y: np.ndarray, proba: np.ndarray) -> float:
    """Migration: the rate of ``down`` in the top 10% by P(down) over its overall rate."""
    return class_top_decile_lift(y, proba, MIGRATION_NAMES.index("down"))


def precision_at_k(y: np.ndarray, p: np.ndarray, k: float = 0.05) -> float:
    """Share of positives among the ``k`` highest scores.

    ``k`` below 1 is a fraction of the rows (0.05: the top 5%), 1 or more a count of rows. Ties
    are broken by row order, so the result does not depend on the sort algorithm.
    """
    y = np.asarray(y)
    if k <= 0:
        raise ValueError(f"precision_at_k: k must be positive, got {k}")
    n = max(int(round(len(y) * k)), 1) if k < 1 else min(int(k), len(y))
    top = np.argsort(-np.asarray(p, dtype=float), kind="stable")[:n]
    return float(np.asarray(y)[top].mean())


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared difference between the probability and the 0/1 outcome."""
    return float(np.mean((np.asarray(p, dtype=float) - np.asarray(y, dtype=float)) ** 2))


def _bin_edges(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1)))
        edges[0], edges[-1] = 0.0, 1.0
        return edges
    raise ValueError(f"calibration bins: strategy is 'uniform' or 'quantile', not {strategy!r}")


def reliability_curve(
    y: np.ndarray, p: np.ndarray, n_bins: int = 10, strategy: str = "uniform"
) -> list[dict[str, float]]:
    """Reliability diagram: per probability bin, its edges, count, mean predicted probability and
    observed positive rate. Empty bins are left out."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    edges = _bin_edges(p, n_bins, strategy)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    count = np.bincount(which, minlength=len(edges) - 1)
    sum_p = np.bincount(which, weights=p, minlength=len(edges) - 1)
    sum_y = np.bincount(which, weights=y, minlength=len(edges) - 1)
    return [
        dict(
            lo=float(edges[b]),
            hi=float(edges[b + 1]),
            n=int(count[b]),
            mean_p=float(sum_p[b] / count[b]),
            frac_pos=float(sum_y[b] / count[b]),
        )
        for b in np.flatnonzero(count)
    ]


def expected_calibration_error(
    y: np.ndarray, p: np.ndarray, n_bins: int = 10, strategy: str = "uniform"
) -> float:
    """ECE: count-weighted mean of |observed rate - mean probability| over the reliability bins."""
    bins = reliability_curve(y, p, n_bins, strategy)
    n = sum(b["n"] for b in bins)
    if n == 0:
        return float("nan")
    return float(sum(b["n"] * abs(b["frac_pos"] - b["mean_p"]) for b in bins) / n)


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 over the three migration classes (down, stay, up)."""
    return float(f1_score(y, pred, average="macro", labels=[0, 1, 2], zero_division=0))


# ---------------------------------------------------------------------------------------------
# Class decisions for macro-F1

DECISION_GRID = np.exp(np.linspace(-1.0, 3.0, 17))  # class weight multipliers, e^-1 .. e^3


def fast_macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Macro-F1 over classes 0..n_classes-1 (0 for a class never true nor predicted)."""
    cm = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes)
    cm = cm.reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)
    return float(np.mean(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)))


def fit_decision_weights(
    proba: np.ndarray, y: np.ndarray, grid: Sequence[float] = tuple(DECISION_GRID)
) -> np.ndarray:
    """Per-class multipliers w so that ``argmax(proba * w)`` maximises macro-F1 on (proba, y).

    The most frequent class of ``y`` keeps weight 1; every other class tries each value of
    ``grid`` (an exhaustive search: 17^(K-1) candidates, 289 for the three migration classes).
    Ties keep the candidate closest to all-ones. ``y`` holds class positions 0..K-1.
    """
    proba = np.asarray(proba, dtype=float)
    y = np.asarray(y, dtype=np.int64)
    k = proba.shape[1]
    ref = int(np.argmax(np.bincount(y, minlength=k)))
    others = [c for c in range(k) if c != ref]
    best_w, best_score, best_dist = np.ones(k), -1.0, np.inf
    for combo in itertools.product(grid, repeat=len(others)):
        w = np.ones(k)
        w[others] = combo
        score = fast_macro_f1(y, np.argmax(proba * w, axis=1), k)
        dist = float(np.abs(np.log(w)).sum())
        if score > best_score + 1e-12 or (abs(score - best_score) <= 1e-12 and dist < best_dist):
            best_w, best_score, best_dist = w, score, dist
    return best_w


def with_ci(
    metric, *arrays: np.ndarray, n_boot: int = 200, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """``{"value", "lo", "hi"}``: the metric on the data and its bootstrap percentile interval.

    The value is NaN when the metric is undefined on the data (e.g. one class only); the interval
    is then NaN too.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    try:
        value = float(metric(*arrays))
    except ValueError:
        return dict(value=float("nan"), lo=float("nan"), hi=float("nan"))
    if n_boot <= 0:
        return dict(value=value, lo=float("nan"), hi=float("nan"))
    lo, hi = bootstrap_ci(metric, *arrays, n_boot=n_boot, seed=seed, level=level)
    return dict(value=value, lo=lo, hi=hi)


def churn_report(
    y: np.ndarray,
    p: np.ndarray,
    k: float = 0.05,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    n_bins: int = 10,
) -> dict:
    """Every churn metric with its bootstrap interval, for one (labels, probabilities) pair.

    Keys: roc_auc, pr_auc, top_decile_lift, precision_at_k, brier, ece (each ``{value, lo, hi}``),
    then k, n, positives and the reliability curve. All intervals use the same resamples (the same
    seed), so intervals of different models on the same rows are paired. ECE is biased upward
    under resampling (each resample adds bin noise), so its percentile interval can lie above
    the value on the data; read it as a spread, not as a coverage interval.
    """
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    if len(y) != len(p):
        raise ValueError(f"churn_report: {len(y)} labels but {len(p)} probabilities")
    kw = dict(n_boot=n_boot, seed=seed, level=level)
    return dict(
        roc_auc=with_ci(roc_auc, y, p, **kw),
        pr_auc=with_ci(pr_auc, y, p, **kw),
        top_decile_lift=with_ci(top_decile_lift, y, p, **kw),
        precision_at_k=with_ci(lambda a, b: precision_at_k(a, b, k), y, p, **kw),
        brier=with_ci(brier, y, p, **kw),
        ece=with_ci(lambda a, b: expected_calibration_error(a, b, n_bins), y, p, **kw),
        k=k,
        n=int(len(y)),
        positives=int(y.sum()),
        reliability=reliability_curve(y, p, n_bins),
    )


def migration_report(
    y: np.ndarray, pred: np.ndarray, n_boot: int = 200, seed: int = 0, level: float = 0.95
) -> dict:
    """Macro-F1 with its bootstrap interval, accuracy and the confusion matrix (rows: truth)."""
    y = np.asarray(y).astype(int)
    pred = np.asarray(pred).astype(int)
    if len(y) == 0:
        return dict(
            macro_f1=dict(value=float("nan"), lo=float("nan"), hi=float("nan")),
            accuracy=float("nan"),
            confusion=[[0] * 3 for _ in range(3)],
            classes=list(MIGRATION_NAMES),
            n=0,
        )
    base = migration_metrics(y, pred)
    return dict(
        macro_f1=with_ci(macro_f1, y, pred, n_boot=n_boot, seed=seed, level=level),
        accuracy=base["accuracy"],
        confusion=base["confusion"],
        classes=base["classes"],
        n=int(len(y)),
    )


def paired_difference(
    metric,
    y: np.ndarray,
    p_a: np.ndarray,
    p_b: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """``metric(y, p_a) - metric(y, p_b)`` with a paired bootstrap interval (same resampled rows
    for both), e.g. how much a model's ROC-AUC exceeds a baseline's on the same test set."""
    return with_ci(
        lambda yy, a, b: metric(yy, a) - metric(yy, b),
        y,
        p_a,
        p_b,
        n_boot=n_boot,
        seed=seed,
        level=level,
    )


# ---------------------------------------------------------------------------------------------
# Isotonic calibration (an alternative to Platt scaling in gpuseg.train)


def fit_isotonic(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic calibration fitted on validation: returns the step function as (x, y) knots.

    ``scores`` may be logits or probabilities (any increasing score). The knots are plain arrays,
    so they can be stored in JSON; :func:`isotonic_calibrated` applies them (linear between knots,
    constant outside). With one class only the result maps every score to that class's rate.
    """

    scores = np.asarray(scores, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if len(scores) != len(y) or len(y) == 0:
        raise ValueError(f"fit_isotonic: need equal non-zero lengths, got {len(scores)}, {len(y)}")
    if len(np.unique(y)) < 2:
        return np.array([scores.min(), scores.max()]), np.full(2, y.mean())
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(scores, y)
    return np.asarray(iso.X_thresholds_, dtype=float), np.asarray(iso.y_thresholds_, dtype=float)


def isotonic_calibrated(scores: np.ndarray, knots: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Calibrated probabilities from :func:`fit_isotonic`'s knots."""
    x, yk = (np.asarray(a, dtype=float) for a in knots)
    return np.interp(np.asarray(scores, dtype=float), x, yk)
