"""Lifetime value: Gini and calibration metrics, the survival sum, the ZILN head."""

from __future__ import annotations

import numpy as np

from gpuseg.action.ltv import (
    ZILNRegressor,
    decile_calibration,
    ltv_metrics,
    normalized_gini,
    survival_factor,
)


def test_gini_and_deciles():
    rng = np.random.default_rng(0)
    y = rng.lognormal(3, 1, 2000) * (rng.random(2000) < 0.7)
    assert normalized_gini(y, y) == 1.0
    assert abs(normalized_gini(y, rng.random(2000))) < 0.1
    assert normalized_gini(y, -y) < -0.9
    d = decile_calibration(y, y)
    assert len(d) == 10 and d[0]["actual"] <= d[-1]["actual"]
    m = ltv_metrics(y, y + rng.normal(0, 5, 2000), n_boot=30)
    assert m["gini_ci"][0] <= m["gini"] <= m["gini_ci"][1] and m["spearman"] > 0.5


def test_survival_factor():
    # no churn, no discount: the number of periods
    assert np.allclose(survival_factor(np.array([0.0]), 8, 52, 1.0), 52, rtol=1e-4)
    # churn within 8 periods is certain: a hazard of 0.82 per period, ~0.2 periods alive
    assert survival_factor(np.array([1.0]), 8, 52, 1.0)[0] < 0.3
    f = survival_factor(np.array([0.1, 0.3]), 8, 52, 0.998)
    assert f[0] > f[1]


def test_ziln_learns_zeros_and_scale():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(4000, 3)).astype(np.float32)
    p = 1 / (1 + np.exp(-2 * X[:, 0]))
    y = (rng.random(4000) < p) * np.exp(3 + X[:, 1] + 0.3 * rng.normal(size=4000))
    m = ZILNRegressor(epochs=30, seed=0).fit(X[:3000], y[:3000])
    pred = m.predict(X[3000:])
    assert (pred >= 0).all()
    assert normalized_gini(y[3000:], pred) > 0.6
    assert 0.6 < pred.mean() / y[3000:].mean() < 1.5
