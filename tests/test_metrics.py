"""Metrics with bootstrap intervals, calibration curves and isotonic calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from gpuseg.evaluate.metrics import (
    brier,
    churn_report,
    class_roc_auc,
    class_top_decile_lift,
    down_roc_auc,
    down_top_decile_lift,
    expected_calibration_error,
    fit_isotonic,
    isotonic_calibrated,
    macro_f1,
    macro_roc_auc,
    migration_report,
    paired_difference,
    pr_auc,
    precision_at_k,
    reliability_curve,
    roc_auc,
    top_decile_lift,
    with_ci,
)


def scored(n: int, seed: int = 0, signal: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from a known probability, and a noisy score of it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    p_true = 1 / (1 + np.exp(-(signal * z - 1.5)))
    y = (rng.random(n) < p_true).astype(int)
    return y, p_true


def test_precision_at_k_and_lift_known_values():
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    assert precision_at_k(y, p, 0.2) == 0.5  # top 2: rows 0 and 1
    assert precision_at_k(y, p, 3) == pytest.approx(2 / 3)  # a count of rows
    assert precision_at_k(y, p, 0.01) == 1.0  # at least one row
    assert top_decile_lift(y, p) == pytest.approx(1.0 / 0.3)  # top row churns; base rate 0.3
    with pytest.raises(ValueError):
        precision_at_k(y, p, 0)


@pytest.mark.parametrize("n", [2000, 37])
def test_single_metrics_match_sklearn_and_definitions(n):
    y, p = scored(n)
    p = np.round(p, 2)  # ties
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert pr_auc(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert brier(y, p) == pytest.approx(np.mean((p - y) ** 2))
    assert roc_auc(y, -p) == pytest.approx(1 - roc_auc(y, p))
    with pytest.raises(ValueError):
        roc_auc(np.zeros(5), np.linspace(0, 1, 5))
    with pytest.raises(ValueError):
        pr_auc(np.zeros(5), np.linspace(0, 1, 5))


def test_reliability_curve_and_ece():
    # a constant 0.9 forecast for a 10% event: one bin, ECE 0.8
    y = np.array([1] + [0] * 9)
    p = np.full(10, 0.9)
    bins = reliability_curve(y, p, n_bins=10)
    assert len(bins) == 1
    assert bins[0]["n"] == 10 and bins[0]["mean_p"] == pytest.approx(0.9)
    assert bins[0]["frac_pos"] == pytest.approx(0.1)
    assert bins[0]["lo"] <= 0.9 <= bins[0]["hi"]
    assert expected_calibration_error(y, p) == pytest.approx(0.8)
    # the true probability is calibrated: ECE small, and far below a distorted forecast's
    y, p_true = scored(50_000, seed=1)
    ece_true = expected_calibration_error(y, p_true)
    assert ece_true < 0.01
    assert expected_calibration_error(y, p_true**0.5) > 10 * ece_true
    # counts add up, bins do not overlap, quantile bins are about equally full
    curve = reliability_curve(y, p_true, n_bins=5, strategy="quantile")
    assert sum(b["n"] for b in curve) == len(y)
    assert all(a["hi"] <= b["lo"] + 1e-12 for a, b in zip(curve[:-1], curve[1:], strict=True))
    assert max(b["n"] for b in curve) < 1.1 * len(y) / 5
    with pytest.raises(ValueError):
        reliability_curve(y, p_true, strategy="nope")


@pytest.mark.parametrize("metric", [roc_auc, pr_auc, brier, top_decile_lift])
def test_bootstrap_interval_contains_estimate_and_shrinks(metric):
    y_small, p_small = scored(400, seed=2)
    y_big, p_big = scored(20_000, seed=3)
    small = with_ci(metric, y_small, p_small, n_boot=200, seed=0)
    big = with_ci(metric, y_big, p_big, n_boot=200, seed=0)
    for ci in (small, big):
        assert ci["lo"] <= ci["value"] <= ci["hi"]
        assert ci["lo"] < ci["hi"]
    # width ~ 1/sqrt(n): 50x the data should give a clearly narrower interval
    assert (big["hi"] - big["lo"]) < 0.4 * (small["hi"] - small["lo"])


def test_bootstrap_is_reproducible_and_level_orders_intervals():
    y, p = scored(1000, seed=4)
    a = with_ci(roc_auc, y, p, n_boot=100, seed=7)
    assert a == with_ci(roc_auc, y, p, n_boot=100, seed=7)
    narrow = with_ci(roc_auc, y, p, n_boot=200, seed=7, level=0.5)
    wide = with_ci(roc_auc, y, p, n_boot=200, seed=7, level=0.99)
    assert wide["lo"] < narrow["lo"] < narrow["hi"] < wide["hi"]


def test_with_ci_undefined_metric_gives_nan():
    ci = with_ci(roc_auc, np.zeros(10), np.linspace(0, 1, 10), n_boot=20)
    assert all(math.isnan(v) for v in ci.values())
    no_boot = with_ci(brier, np.array([0, 1]), np.array([0.2, 0.6]), n_boot=0)
    assert no_boot["value"] == pytest.approx((0.04 + 0.16) / 2)
    assert math.isnan(no_boot["lo"]) and math.isnan(no_boot["hi"])


def test_churn_report_has_every_metric():
    y, p = scored(1500, seed=5)
    report = churn_report(y, p, k=0.05, n_boot=50, seed=0)
    for key in ("roc_auc", "pr_auc", "top_decile_lift", "precision_at_k", "brier", "ece"):
        assert set(report[key]) == {"value", "lo", "hi"}
    assert report["precision_at_k"]["value"] == pytest.approx(precision_at_k(y, p, 0.05))
    assert report["n"] == 1500 and report["positives"] == int(y.sum())
    assert sum(b["n"] for b in report["reliability"]) == 1500
    with pytest.raises(ValueError):
        churn_report(y, p[:-1])


def test_migration_report_and_macro_f1():
    y = np.array([0, 0, 1, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 1, 1])
    # F1: down 2/3 (tp 1, fn 1), stay 3/4 (tp 3, fp 2), up 0
    assert macro_f1(y, pred) == pytest.approx((2 / 3 + 3 / 4 + 0) / 3)
    rep = migration_report(y, pred, n_boot=30)
    assert rep["confusion"] == [[1, 1, 0], [0, 3, 0], [0, 1, 0]]
    assert rep["accuracy"] == pytest.approx(4 / 6)
    assert rep["macro_f1"]["value"] == pytest.approx(macro_f1(y, pred))
    assert migration_report(np.array([], int), np.array([], int))["n"] == 0


def test_paired_difference():
    y, p = scored(3000, seed=6)
    same = paired_difference(roc_auc, y, p, p, n_boot=50)
    assert same == {"value": 0.0, "lo": 0.0, "hi": 0.0}
    rng = np.random.default_rng(0)
    noisy = p + rng.normal(0, 0.3, len(p))  # a much worse ranking
    diff = paired_difference(roc_auc, y, p, noisy, n_boot=100)
    assert diff["value"] == pytest.approx(roc_auc(y, p) - roc_auc(y, noisy))
    assert 0 < diff["lo"] <= diff["value"] <= diff["hi"]


def test_isotonic_calibration_fixes_a_monotone_distortion():
    y_val, p_val = scored(20_000, seed=8)
    y_test, p_test = scored(20_000, seed=9)
    distort = lambda p: p**3  # noqa: E731  monotone: same ranking, badly calibrated
    knots = fit_isotonic(distort(p_val), y_val)
    fixed = isotonic_calibrated(distort(p_test), knots)
    assert np.all((fixed >= 0) & (fixed <= 1))
    assert np.all(np.diff(knots[1]) >= 0)  # non-decreasing step function
    assert expected_calibration_error(y_test, fixed) < 0.02
    assert expected_calibration_error(y_test, distort(p_test)) > 0.05
    assert brier(y_test, fixed) < brier(y_test, distort(p_test))
    # logits work as well (any increasing score); knots are JSON-friendly arrays
    logit = np.log(p_val / (1 - p_val))
    x, yk = fit_isotonic(logit, y_val)
    assert x.ndim == yk.ndim == 1 and len(x) == len(yk)


def test_isotonic_edge_cases():
    x, yk = fit_isotonic(np.array([0.1, 0.5, 0.9]), np.array([0, 0, 0]))
    assert np.all(isotonic_calibrated(np.array([0.0, 0.5, 2.0]), (x, yk)) == 0.0)
    with pytest.raises(ValueError):
        fit_isotonic(np.array([0.1, 0.2]), np.array([1]))


def test_multiclass_metrics_on_known_inputs():
    """Macro one-vs-rest ROC-AUC, the ROC-AUC and top-decile lift of down, by hand."""
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.3, 0.6, 0.1],
            [0.4, 0.5, 0.1],
            [0.1, 0.8, 0.1],
            [0.2, 0.2, 0.6],
            [0.1, 0.3, 0.6],
        ]
    )
    # down: positives 0.8, 0.3 against 0.4, 0.1, 0.2, 0.1 -> pairs won 4 + 3 of 8
    assert down_roc_auc(y, proba) == pytest.approx(7 / 8)
    assert class_roc_auc(y, proba, 0) == pytest.approx(7 / 8)
    # stay: positives 0.5, 0.8 against 0.1, 0.6, 0.2, 0.3 -> 3 + 4 of 8
    assert class_roc_auc(y, proba, 1) == pytest.approx(7 / 8)
    # up: 0.6, 0.6 above every 0.1 -> 1
    assert class_roc_auc(y, proba, 2) == 1.0
    assert macro_roc_auc(y, proba) == pytest.approx((7 / 8 + 7 / 8 + 1) / 3)
    assert macro_roc_auc(y, proba) == pytest.approx(
        roc_auc_score(y, proba, multi_class="ovr", average="macro")
    )
    # lift of down: 20 rows, 4 down; the top 2 by P(down) hold 1 down -> 0.5 / 0.2 = 2.5
    y20 = np.array([0, 1, 0, 0, 0] + [1] * 15)
    p20 = np.zeros((20, 3))
    p20[:, 0] = np.linspace(1, 0, 20)
    assert down_top_decile_lift(y20, p20) == pytest.approx(2.5)
    assert class_top_decile_lift(y20, p20, 1) == pytest.approx(0.5 / 0.8)
    with pytest.raises(ValueError, match="both classes"):  # a class absent: undefined
        macro_roc_auc(np.array([0, 1, 0, 1]), np.full((4, 3), 1 / 3))


def test_macro_roc_auc_matches_sklearn_on_random_scores():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 500)
    proba = rng.dirichlet(np.ones(3), 500) + 0.3 * np.eye(3)[y]
    proba /= proba.sum(1, keepdims=True)
    expected = roc_auc_score(y, proba, multi_class="ovr", average="macro")
    assert macro_roc_auc(y, proba) == pytest.approx(expected, abs=1e-12)
    assert down_roc_auc(y, proba) == pytest.approx(roc_auc_score(y == 0, proba[:, 0]))
