from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from scipy.special import betaln, hyp2f1

from gpuseg.action.customer_base import (
    BGNBD,
    GammaGamma,
    ShiftedBetaGeometric,
    TransactionSummaries,
    customer_base_value,
)
from gpuseg.errors import DataError

# a population with rate and dropout heterogeneity (CDNOW-like shapes, rates per period)
R, ALPHA, A, B = 0.8, 4.0, 0.8, 2.5


def simulate_bgnbd(n: int, T: np.ndarray, t_more: float, seed: int):
    """The BG/NBD process over (0, T + t_more]: (x, t_x) at T and the repeat transactions in
    (T, T + t_more] per customer. Dropout only after a repeat transaction."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(R, 1.0 / ALPHA, n)
    p = rng.beta(A, B, n)
    now = np.zeros(n)
    alive = np.ones(n, bool)
    x, t_x, future = np.zeros(n), np.zeros(n), np.zeros(n)
    end = T + t_more
    while alive.any():
        now[alive] += rng.exponential(1.0, alive.sum()) / lam[alive]
        alive &= now <= end
        seen = alive & (now <= T)
        x[seen] += 1
        t_x[seen] = now[seen]
        future[alive & (now > T)] += 1
        alive &= rng.random(n) >= p
    return x, t_x, future


def test_bgnbd_recovers_known_parameters():
    # n = 20,000 customers, ages 20-40 periods; every estimate within 15 % of the truth (over
    # eight simulated samples their relative standard errors were r 0.8 %, alpha 1.2 %, a 4 %,
    # b 5.5 %)
    rng = np.random.default_rng(1)
    T = rng.integers(20, 41, 20_000).astype(float)
    x, t_x, _ = simulate_bgnbd(len(T), T, 0.0, seed=2)
    m = BGNBD()
    assert m.fit(x, t_x, T) is m
    for got, want in zip(m.params_, (R, ALPHA, A, B), strict=True):
        assert got == pytest.approx(want, rel=0.15)


def test_bgnbd_fit_on_distinct_triples_equals_the_fit_on_rows():
    rng = np.random.default_rng(3)
    T = rng.integers(5, 12, 3_000).astype(float)
    x, t_x, _ = simulate_bgnbd(len(T), T, 0.0, seed=4)
    x, t_x = x, np.ceil(t_x)  # period data: integer recency
    t_x = np.minimum(np.where(x > 0, np.maximum(t_x, 1), 0), T)
    rows = BGNBD().fit(x, t_x, T)
    trip, count = np.unique(np.stack([x, t_x, T], 1), axis=0, return_counts=True)
    grouped = BGNBD().fit(*trip.T, weights=count)
    np.testing.assert_allclose(grouped.params_, rows.params_, rtol=1e-3)


def test_conditional_expectation_matches_monte_carlo_and_the_closed_form():
    m = BGNBD()
    m.r_, m.alpha_, m.a_, m.b_ = R, ALPHA, A, B
    # Monte Carlo: the realised transactions in (T, T + 10] of 200,000 simulated customers,
    # against the mean of E[Y(10) | x, t_x, T], per frequency group, within 4 standard errors
    T = np.full(200_000, 20.0)
    x, t_x, future = simulate_bgnbd(len(T), T, 10.0, seed=5)
    pred = m.expected(10.0, x, t_x, T)
    for sel in (x == 0, (x >= 1) & (x <= 3), x >= 4, np.ones(len(x), bool)):
        se = future[sel].std() / np.sqrt(sel.sum())
        assert abs(pred[sel].mean() - future[sel].mean()) < 4 * se + 1e-3
    # eq. 10 of Fader, Hardie & Lee (2005) with its 2F1, where that is accurate
    xs, txs, Ts = np.array([0.0, 1, 4, 12]), np.array([0.0, 3, 15, 19]), np.full(4, 20.0)
    for t in (1.0, 10.0, 52.0):
        z = t / (ALPHA + Ts + t)
        c = A + B + xs - 1
        head = c / (A - 1) * (1 - (1 - z) ** (R + xs) * hyp2f1(R + xs, B + xs, c, z))
        odds = (xs > 0) * A / (B + xs - 1) * ((ALPHA + Ts) / (ALPHA + txs)) ** (R + xs)
        np.testing.assert_allclose(m.expected(t, xs, txs, Ts), head / (1 + odds), rtol=1e-4)
    # per-period differences sum to the whole span, discounting lowers it
    whole = m.expected(12.0, xs, txs, Ts)
    np.testing.assert_allclose(m.discounted_periods(12, 1.0, xs, txs, Ts), whole, rtol=1e-9)
    assert (m.discounted_periods(12, 0.99, xs, txs, Ts) < whole).all()


def test_conditional_expectation_without_heterogeneity_stays_finite():
    # the boundary optimum of a world with one rate and no dropout: E[Y(t)] -> rate x t
    m = BGNBD()
    m.r_, m.alpha_, m.a_, m.b_ = 3e7, 5e7, 7e-9, 5e5
    xs, txs, Ts = np.array([0.0, 5, 15]), np.array([0.0, 10, 24]), np.full(3, 25.0)
    np.testing.assert_allclose(m.expected(10.0, xs, txs, Ts), 10 * 3e7 / (5e7 + 25), rtol=1e-4)


def test_sbg_recovers_gamma_and_delta_on_simulated_cohorts():
    # 20,000 subscribers alive after 0-59 periods, churned or not within the next 4; an alive
    # subscriber's churn probability is Beta(gamma, delta + n); gamma within 10 %, delta within
    # 30 % (relative standard errors over eight samples: 2.4 % and 9 %)
    rng = np.random.default_rng(6)
    gamma, delta, h = 1.2, 6.0, 4
    n = rng.integers(0, 60, 20_000).astype(float)
    theta = rng.beta(gamma, delta + n)
    churned = (rng.random(len(n)) < 1 - (1 - theta) ** h).astype(int)
    m = ShiftedBetaGeometric().fit(n, churned, h)
    assert m.gamma_ == pytest.approx(gamma, rel=0.1)
    assert m.delta_ == pytest.approx(delta, rel=0.3)
    # the fitted churn-within-h matches the simulated share by tenure
    for lo, hi in ((0, 5), (20, 40)):
        sel = (n >= lo) & (n < hi)
        assert m.churn_within(n[sel], h).mean() == pytest.approx(churned[sel].mean(), abs=0.02)
    # retention: S(n + k) / S(n) with discount 1 and one period is 1 - E[theta | alive at n]
    np.testing.assert_allclose(
        m.discounted_periods(np.array([0.0, 10.0]), 1, 1.0),
        1 - m.gamma_ / (m.gamma_ + m.delta_ + np.array([0.0, 10.0])),
    )
    # and over 12 periods the sum of B(gamma, delta + n + k) / B(gamma, delta + n) x 0.99^k
    k = np.arange(1, 13)
    ratio = np.exp(betaln(m.gamma_, m.delta_ + 7.5 + k) - betaln(m.gamma_, m.delta_ + 7.5))
    got = m.discounted_periods(np.array([7.5, 7.5, 7.5]), 12, 0.99, chunk=2)
    np.testing.assert_allclose(got, (ratio * 0.99**k).sum())


def test_gamma_gamma_shrinks_few_transactions_towards_the_mean():
    rng = np.random.default_rng(7)
    count = rng.integers(1, 20, 5_000).astype(float)
    mean_spend = rng.gamma(6.0, 1.0, 5_000) * rng.gamma(4 * count, 1 / (4 * count))
    gg = GammaGamma().fit(count, mean_spend)
    pop = gg.p_ * gg.v_ / (gg.q_ - 1)
    one, many = gg.expected_spend([1.0, 50.0], [3 * pop, 3 * pop])
    assert pop < one < many < 3 * pop


def test_transaction_summaries_of_period_series():
    rev = np.array([[0, 5, 0, 3, 0], [2, 2, 2, 2, 2], [0, 0, 0, 0, 0], [0, 0, 0, 0, 4.0]])
    mask = np.ones(rev.shape, bool)
    mask[1, 2] = False  # a missing period is not a gap
    s = TransactionSummaries(4)
    s.add(0, rev, mask)
    np.testing.assert_array_equal(s.x, [1, 3, 0, 0])
    np.testing.assert_array_equal(s.t_x, [2, 4, 0, 0])
    np.testing.assert_array_equal(s.age, [3, 4, 0, 0])
    np.testing.assert_array_equal(s.gap, [True, False, False, False])
    np.testing.assert_allclose(s.spend, [4.0, 2.0, 0.0, 4.0])
    np.testing.assert_array_equal(s.present, [5, 4, 5, 5])


def test_bad_inputs_raise_data_errors():
    with pytest.raises(DataError, match="negative frequency"):
        BGNBD().fit([1.0, -1.0], [2.0, 0.0], [3.0, 3.0])
    with pytest.raises(DataError, match="age T below recency"):
        BGNBD().fit([1.0, 2.0], [2.0, 5.0], [3.0, 3.0])
    with pytest.raises(DataError, match="finite"):
        BGNBD().fit([1.0, np.nan], [2.0, 1.0], [3.0, 3.0])
    with pytest.raises(DataError, match="0 or 1"):
        ShiftedBetaGeometric().fit([1.0, 2.0], [0, 2], 4)
    with pytest.raises(DataError, match="tenure"):
        ShiftedBetaGeometric().fit([-1.0, 2.0], [0, 1], 4)
    with pytest.raises(DataError, match="count >= 1"):
        GammaGamma().fit([0.0, 2.0], [1.0, 2.0])


def run_like(tmp_path, churn, plan_type=None, tenure_months=None):
    """What customer_base_value reads of a run: churn labels, attributes, a run dir (no split:
    every known label is used)."""
    cols = {}
    if plan_type is not None:
        cols["plan_type"] = pa.array(plan_type)
    if tenure_months is not None:
        cols["tenure_months"] = pa.array(tenure_months, pa.float64())
    return SimpleNamespace(
        panel=SimpleNamespace(churn=np.asarray(churn, np.int8)),
        attribute_table=pa.table(cols) if cols else None,
        run_dir=tmp_path,
    )


def test_customer_base_value_routes_each_subscriber_to_its_model(tmp_path):
    rng = np.random.default_rng(8)
    n, t = 2_000, 20
    kind = rng.integers(0, 3, n)  # 0: prepaid by attribute, 1: gaps, 2: steady monthly fee
    rev = np.where(kind[:, None] == 2, 10.0, 0.0) + np.where(
        kind[:, None] < 2, (rng.random((n, t)) < 0.6) * rng.gamma(4.0, 2.0, (n, t)), 0.0
    )
    rev[:5] = 0.0  # no revenue at all: value 0
    mask = np.ones((n, t), bool)
    summ = TransactionSummaries(n)
    for s in range(0, n, 700):  # chunked like the panel pass
        summ.add(s, rev[s : s + 700], mask[s : s + 700])
    plan = np.where(kind == 0, "Prepaid", "postpaid")
    tenure = rng.uniform(1, 60, n)
    churn = (rng.random(n) < 0.3 / (1 + tenure / 12)).astype(np.int8)
    churn[::50] = -1  # unknown labels are left out of the fit
    inputs = run_like(tmp_path, churn, plan, tenure)
    last3 = rev[:, -3:].mean(1)
    fit = customer_base_value(inputs, summ, last3, 4, 12, 0.99, 4.0)
    gaps = kind == 1
    np.testing.assert_array_equal(fit.transactional, (kind == 0) | (gaps & summ.gap))
    assert fit.transactional[kind == 1][5:].mean() > 0.99 and not fit.transactional[kind == 2].any()
    assert fit.bgnbd is not None and fit.sbg is not None and len(fit.notes) == 2
    assert (fit.value[:5] == 0).all() and (fit.value[5:] > 0).all()
    steady = np.flatnonzero(kind == 2)
    # sBG: a longer tenure, the same fee, a higher value
    old, young = steady[np.argmax(tenure[steady])], steady[np.argmin(tenure[steady])]
    assert fit.value[old] > fit.value[young] and fit.value[old] < 12 * 10.0
    # text attributes held as dictionaries (as read_run holds them): the same routing and values
    from gpuseg.action.features import compact_attributes

    inputs.attribute_table = pa.table(
        {"plan_type": pa.array(plan), "tenure_months": pa.array(tenure.astype(str))}
    )
    inputs.attribute_table, types = compact_attributes(inputs.attribute_table)
    assert "plan_type" in types and pa.types.is_dictionary(inputs.attribute_table["plan_type"].type)
    again = customer_base_value(inputs, summ, last3, 4, 12, 0.99, 4.0)
    np.testing.assert_array_equal(again.transactional, fit.transactional)
    np.testing.assert_allclose(again.value, fit.value)
    # without enough labels it says so instead of guessing
    few = run_like(tmp_path, np.full(n, -1), plan, tenure)
    none = customer_base_value(few, summ, last3, 4, 12, 0.99, 4.0)
    assert none.value is None and "unavailable" in none.notes[-1]
