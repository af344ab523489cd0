"""Probabilistic customer-base models: the "customer_base" lifetime-value baseline.

Two classic models, fitted by maximum likelihood on the run's own data (scipy; no churn model,
no features), each for the kind of subscriber it describes:

- :class:`BGNBD`, the beta-geometric / negative binomial distribution model (Fader, Hardie &
  Lee 2005, "Counting your customers the easy way"), for transactional subscribers (prepaid
  top-ups). A *transaction* is a period with revenue > 0; per subscriber x = active periods
  after the first, t_x = periods from the first to the last active one, T = periods from the
  first active one to the last period of the window. While alive a subscriber transacts at rate
  lambda ~ Gamma(r, alpha), and after each repeat transaction drops out with probability
  p ~ Beta(a, b). The model is in continuous time and counts rather than active periods; on
  period data it is an approximation (its discrete sibling is the BG/BB) that holds while rates
  stay below about one transaction per period. Expected active periods in future period k are
  E[Y(k)] - E[Y(k-1)] of the conditional expectation E[Y(t) | x, t_x, T], times the spend per
  active period.
- Spend per active period: :class:`GammaGamma` (Fader, Hardie & Lee 2005, "RFM and CLV"), the
  subscriber's mean revenue over its active periods shrunk towards the population's, the more
  the fewer active periods it has.
- :class:`ShiftedBetaGeometric` (Fader & Hardie 2007, "How to project customer retention") for
  contract subscribers: each churns in each period with a constant probability theta ~
  Beta(gamma, delta), so S(t) = B(gamma, delta + t) / B(gamma, delta) and the population's
  hazard falls with tenure. Fitted on the run's *training* churn labels (``split.npz``; every
  known label when the run has no split): P(churn within the label horizon h | alive after n
  periods) = 1 - B(gamma, delta + n + h) / B(gamma, delta + n), n = tenure in periods from a
  ``tenure_months`` (or ``tenure``, months) attribute when the run has one, else the periods
  present in the window. Value: sum_k S(n + k) / S(n) x last-3-periods ARPU x discount^k.

Which model a subscriber gets (:func:`transactional`): BG/NBD when a ``plan_type`` attribute says
``prepaid`` (any case) or when its revenue series has a present period with revenue <= 0 after
its first positive one (activity with gaps); sBG otherwise. A subscriber without any positive
revenue in the window is valued 0.

Bounded memory: :class:`TransactionSummaries` is filled chunk by chunk from the panel pass of
:func:`gpuseg.action.ltv.revenue_summaries` and holds a few O(N) arrays (int32, float64, bool);
the BG/NBD is fitted and evaluated on the distinct (x, t_x, T) triples, which are few (at most
T^3 / 6 for a window of T periods), the Gamma-Gamma and the sBG on random samples of at most
50,000 subscribers (:data:`PARAM_SAMPLE`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.optimize import minimize
from scipy.special import betaincinv, betaln, gammaln, roots_legendre

from gpuseg.data.split import load_split
from gpuseg.errors import DataError, GpusegError

TENURE_COLUMNS = ("tenure_months", "tenure")  # months
MIN_LABELS = 100  # known training labels the sBG needs (with churners and stayers among them)
PARAM_SAMPLE = 50_000  # subscribers the Gamma-Gamma and the sBG are fitted on, at most


def _check_rfm(x, t_x, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    if not (x.shape == t_x.shape == T.shape) or x.ndim != 1:
        raise DataError(f"BG/NBD: x, t_x, T must be 1-D of one length, got {x.shape}, {t_x.shape}")
    if not (np.isfinite(x).all() and np.isfinite(t_x).all() and np.isfinite(T).all()):
        raise DataError("BG/NBD: x, t_x and T must be finite")
    if (x < 0).any() or (t_x < 0).any():
        raise DataError("BG/NBD: negative frequency x or recency t_x")
    if (t_x > T).any():
        raise DataError("BG/NBD: age T below recency t_x for some subscriber")
    if ((x > 0) & (t_x <= 0)).any():
        raise DataError("BG/NBD: repeat transactions (x > 0) need recency t_x > 0")
    return x, t_x, T


def _weights(w, n: int) -> np.ndarray:
    w = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
    if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise DataError("customer-base model: weights must be finite, >= 0, one per row")
    return w


LOG_BOUND = 20.0  # log-parameters stay in [-20, 20]: a boundary optimum is a limit, kept finite


def _fit(nll, starts: list[list[float]]) -> np.ndarray:
    """Minimise ``nll`` over log-parameters within the bounds: L-BFGS-B from each start (the
    likelihoods have boundary optima a single start can fall into), the best result."""
    best = None
    for x0 in starts:
        res = minimize(
            nll,
            np.asarray(x0, np.float64),
            method="L-BFGS-B",
            bounds=[(-LOG_BOUND, LOG_BOUND)] * len(x0),
        )
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best = res
    if best is None:
        raise GpusegError("customer-base model: the likelihood is not finite at any start")
    return np.clip(best.x, -LOG_BOUND, LOG_BOUND)


class BGNBD:
    """BG/NBD (Fader, Hardie & Lee 2005). ``fit(x, t_x, T)`` returns self with ``r_``,
    ``alpha_``, ``a_``, ``b_`` (maximum likelihood over log-parameters); ``weights`` count
    repeated rows (e.g. distinct triples and how many subscribers share each)."""

    @staticmethod
    def _loglik(params, x, t_x, T) -> np.ndarray:
        r, alpha, a, b = params
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
        a3 = -(r + x) * np.log(alpha + T)
        rep = x > 0
        a4 = np.where(
            rep,
            np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
        return a1 + a2 + np.logaddexp(a3, a4)

    def fit(self, x, t_x, T, weights=None) -> BGNBD:
        x, t_x, T = _check_rfm(x, t_x, T)
        w = _weights(weights, len(x))
        scale = max(float(np.average(T, weights=w)), 1.0)  # alpha is in units of time

        def nll(theta: np.ndarray) -> float:
            p = np.exp(np.clip(theta, -LOG_BOUND, LOG_BOUND))
            ll = float(w @ self._loglik(p, x, t_x, T)) / w.sum()
            return -ll

        rate = max(float(np.average(x, weights=w)) / scale, 1e-3)  # repeat transactions per time
        starts = [[0.0, -np.log(rate), 0.0, 0.0], [0.0, -np.log(rate), 1.0, 2.0]]
        theta = _fit(nll, starts + [[np.log(10.0), np.log(10.0 / rate), -2.0, 2.0]])
        self.r_, self.alpha_, self.a_, self.b_ = (float(v) for v in np.exp(theta))
        self.log_likelihood_ = -nll(theta) * float(w.sum())
        return self

    @property
    def params_(self) -> tuple[float, float, float, float]:
        return self.r_, self.alpha_, self.a_, self.b_

    def p_alive(self, x, t_x, T) -> np.ndarray:
        """P(still alive at T | x, t_x, T)."""
        x, t_x, T = _check_rfm(x, t_x, T)
        r, alpha, a, b = self.params_
        log_odds = np.where(
            x > 0,
            np.log(a)
            - np.log(np.maximum(b + x - 1, 1e-300))
            + (r + x) * np.log1p((T - t_x) / (alpha + t_x)),
            -np.inf,
        )
        return np.exp(-np.logaddexp(0.0, log_odds))

    def expected(self, t: float, x, t_x, T, nodes: int = 64) -> np.ndarray:
        """E[Y(t) | x, t_x, T]: expected transactions in (T, T + t].

        Computed as P(alive) x E[(1 - (1 + p t / (alpha + T))^-(r + x)) / p] over the posterior
        p ~ Beta(a, b + x) of an alive subscriber (its lambda ~ Gamma(r + x, alpha + T)
        integrated in closed form), by Gauss-Legendre quadrature over the quantiles of p with
        ``nodes`` points: the value of eq. 10 of Fader, Hardie & Lee (2005) without its 2F1,
        which loses all precision at the large r, alpha, b of a population without
        heterogeneity in rate or dropout."""
        x, t_x, T = _check_rfm(x, t_x, T)
        if t < 0:
            raise DataError(f"BG/NBD: future span t must be >= 0, got {t}")
        r, alpha, a, b = self.params_
        v, w = roots_legendre(nodes)
        v, w = (v + 1.0) / 2.0, w / 2.0  # on (0, 1), weights sum to 1
        out = np.empty(len(x))
        for xv in np.unique(x):
            sel = x == xv
            p = betaincinv(a, b + xv, v)[None, :]  # (1, Q) quantiles of the posterior dropout
            k, rate = r + xv, t / (alpha + T[sel, None])  # (S, 1)
            tiny = p * rate * k < 1e-12  # (1 - (1 + p rate)^-k) / p -> k rate as p -> 0
            safe = np.where(tiny, 1.0, p)
            f = np.where(tiny, k * rate, -np.expm1(-k * np.log1p(safe * rate)) / safe)  # (S, Q)
            out[sel] = f @ w
        return out * self.p_alive(x, t_x, T)

    def discounted_periods(self, n_future: int, discount: float, x, t_x, T) -> np.ndarray:
        """sum_k (E[Y(k)] - E[Y(k-1)]) discount^k over k = 1..n_future: the discounted expected
        number of active periods ahead."""
        out = np.zeros(len(np.asarray(x)))
        prev = np.zeros_like(out)
        for k in range(1, n_future + 1):
            cur = self.expected(float(k), x, t_x, T)
            out += (cur - prev) * discount**k
            prev = cur
        return out


class GammaGamma:
    """Gamma-Gamma spend model (Fader, Hardie & Lee 2005). ``fit(count, mean_spend)`` (count >=
    1 transactions, mean spend > 0 each) returns self with ``p_``, ``q_``, ``v_``;
    :meth:`expected_spend` is E[spend per transaction | count, mean_spend]."""

    def fit(self, count, mean_spend) -> GammaGamma:
        c, m = self._check(count, mean_spend)

        def nll(theta: np.ndarray) -> float:
            p, q, v = np.exp(np.clip(theta, -LOG_BOUND, LOG_BOUND))
            px = p * c
            ll = (
                gammaln(px + q)
                - gammaln(px)
                - gammaln(q)
                + q * np.log(v)
                + (px - 1) * np.log(m)
                + px * np.log(c)
                - (px + q) * np.log(v + c * m)
            )
            return -float(ll.mean())

        lm = float(np.log(np.mean(m)))
        theta = _fit(nll, [[np.log(2.0), np.log(3.0), lm], [np.log(10.0), np.log(3.0), lm]])
        self.p_, self.q_, self.v_ = (float(v) for v in np.exp(theta))
        return self

    @staticmethod
    def _check(count, mean_spend) -> tuple[np.ndarray, np.ndarray]:
        c, m = np.asarray(count, np.float64), np.asarray(mean_spend, np.float64)
        if c.shape != m.shape or (c < 1).any() or not (np.isfinite(m).all() and (m > 0).all()):
            raise DataError("Gamma-Gamma: need count >= 1 and finite mean spend > 0 per row")
        return c, m

    def expected_spend(self, count, mean_spend) -> np.ndarray:
        c, m = self._check(count, mean_spend)
        p, q, v = self.p_, self.q_, self.v_
        if q <= 1:  # no finite population mean: the subscriber's own mean
            return m
        return (p * v + p * c * m) / (p * c + q - 1)


class ShiftedBetaGeometric:
    """Shifted-beta-geometric (Fader & Hardie 2007). ``fit(n, churned, horizon)``: subscribers
    alive after ``n`` periods, ``churned`` 1 if they left within the next ``horizon``; returns
    self with ``gamma_``, ``delta_`` (maximum likelihood over log-parameters)."""

    @staticmethod
    def _log_survival(gamma, delta, t) -> np.ndarray:  # log S(t), t periods survived
        return betaln(gamma, delta + t) - betaln(gamma, delta)

    def fit(self, n, churned, horizon: int, weights=None) -> ShiftedBetaGeometric:
        n, y = np.asarray(n, np.float64), np.asarray(churned, np.float64)
        if n.shape != y.shape or n.ndim != 1 or not np.isfinite(n).all() or (n < 0).any():
            raise DataError("sBG: tenure n must be finite, >= 0, one per churn label")
        if not np.isin(y, (0.0, 1.0)).all():
            raise DataError("sBG: churn labels must be 0 or 1")
        if horizon < 1:
            raise DataError(f"sBG: horizon must be >= 1, got {horizon}")
        w = _weights(weights, len(n))

        def nll(theta: np.ndarray) -> float:
            g, d = np.exp(np.clip(theta, -LOG_BOUND, LOG_BOUND))
            log_keep = betaln(g, d + n + horizon) - betaln(g, d + n)  # log P(alive at n + h | n)
            log_churn = np.log(-np.expm1(np.minimum(log_keep, -1e-300)))
            return -float(w @ np.where(y == 1, log_churn, log_keep)) / w.sum()

        theta = _fit(nll, [[0.0, 0.0], [0.0, np.log(10.0)], [np.log(4.0), np.log(50.0)]])
        self.gamma_, self.delta_ = (float(v) for v in np.exp(theta))
        return self

    def churn_within(self, n, horizon: int) -> np.ndarray:
        n = np.asarray(n, np.float64)
        return 1.0 - np.exp(self._log_survival(self.gamma_, self.delta_ + n, horizon))

    def discounted_periods(
        self, n, n_future: int, discount: float, chunk: int = 262_144
    ) -> np.ndarray:
        """sum_k S(n + k) / S(n) discount^k over k = 1..n_future, per subscriber, by the
        recursion S(t + 1) / S(t) = (delta + t) / (gamma + delta + t), ``chunk`` at a time."""
        n = np.asarray(n, np.float64)
        out = np.zeros(len(n))
        for s in range(0, len(n), chunk):
            d = self.delta_ + n[s : s + chunk]
            keep = np.ones(len(d))
            for k in range(1, n_future + 1):
                keep *= d / (self.gamma_ + d)
                out[s : s + chunk] += keep * discount**k
                d = d + 1.0
        return out


# ---------------------------------------------------------------------------------------------
# Over a run


@dataclass
class TransactionSummaries:
    """Per-subscriber activity summaries of the revenue series, filled chunk by chunk."""

    n: int
    x: np.ndarray = field(init=False)  # (N,) int32 active periods after the first
    t_x: np.ndarray = field(init=False)  # (N,) int32 periods from first to last active
    age: np.ndarray = field(init=False)  # (N,) int32 periods from first active to window end
    spend: np.ndarray = field(init=False)  # (N,) mean revenue per active period (0 if none)
    gap: np.ndarray = field(init=False)  # (N,) bool: a present period with revenue <= 0 after
    present: np.ndarray = field(init=False)  # (N,) int32 periods present in the window

    def __post_init__(self) -> None:
        self.x = np.zeros(self.n, np.int32)
        self.t_x = np.zeros(self.n, np.int32)
        self.age = np.zeros(self.n, np.int32)
        self.spend = np.zeros(self.n)
        self.gap = np.zeros(self.n, bool)
        self.present = np.zeros(self.n, np.int32)

    def add(self, start: int, rev: np.ndarray, mask: np.ndarray) -> None:
        """Rows [start, start + len(rev)): revenue (R, T) and presence (R, T) of a chunk."""
        t = rev.shape[1]
        stop = start + len(rev)
        active = mask & (rev > 0)
        count = active.sum(1)
        has = count > 0
        first = np.where(has, active.argmax(1), t - 1)
        last = np.where(has, t - 1 - active[:, ::-1].argmax(1), t - 1)
        self.x[start:stop] = np.maximum(count - 1, 0)
        self.t_x[start:stop] = last - first
        self.age[start:stop] = t - 1 - first
        self.spend[start:stop] = np.where(active, rev, 0.0).sum(1) / np.maximum(count, 1)
        after = np.arange(t)[None, :] > first[:, None]
        self.gap[start:stop] = has & (mask & (rev <= 0) & after).any(1)
        self.present[start:stop] = mask.sum(1)


def _attribute(inputs, name: str, kind: pa.DataType) -> pa.ChunkedArray | None:
    """The raw attribute ``name`` cast to ``kind`` in Arrow (no Python object per subscriber);
    None when the run has no such attribute or its values are not of that kind."""
    table = inputs.attribute_table
    if table is None or name not in table.column_names:
        return None
    col = table.column(name)
    if pa.types.is_dictionary(col.type):  # text held compact (features.compact_attributes)
        col = pc.cast(col, col.type.value_type)
    try:
        return pc.cast(col, kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def transactional(inputs, summ: TransactionSummaries) -> np.ndarray:
    """(N,) bool: subscribers the BG/NBD describes (see the module docstring)."""
    plan = _attribute(inputs, "plan_type", pa.string())
    if plan is None:
        return summ.gap
    return summ.gap | pc.fill_null(pc.equal(pc.utf8_lower(plan), "prepaid"), False).to_numpy()


def tenure_periods(inputs, summ: TransactionSummaries, per_month: float) -> np.ndarray:
    """Tenure at the end of the window in periods: the first numeric tenure attribute (months)
    where finite and >= 0, else the periods present in the window."""
    out = summ.present.astype(np.float64)
    for name in TENURE_COLUMNS:
        months = _attribute(inputs, name, pa.float64())
        if months is not None:
            months = pc.fill_null(months, np.nan).to_numpy()
            ok = np.isfinite(months) & (months >= 0)
            out[ok] = months[ok] * per_month
            break
    return out


@dataclass
class CustomerBaseFit:
    value: np.ndarray | None  # (N,) discounted expected revenue over the horizon; None: unfit
    transactional: np.ndarray  # (N,) bool: BG/NBD (True) or sBG (False)
    bgnbd: BGNBD | None
    gamma_gamma: GammaGamma | None
    sbg: ShiftedBetaGeometric | None
    notes: list[str]


def customer_base_value(
    inputs,
    summ: TransactionSummaries,
    last3: np.ndarray,
    horizon: int,
    n_future: int,
    discount: float,
    per_month: float,
    fit_sample: int = 200_000,
    seed: int = 0,
) -> CustomerBaseFit:
    """The customer-base lifetime value of every subscriber (BG/NBD x Gamma-Gamma for the
    transactional ones, sBG x last-3-periods ARPU for the others); ``value`` None, with the
    reason in ``notes``, when the run has too few churn labels for the sBG. The Gamma-Gamma and
    the sBG (2-3 parameters each) are fitted on random samples of at most
    min(``fit_sample``, :data:`PARAM_SAMPLE`) subscribers; the BG/NBD on every one."""
    n = summ.n
    fit_sample = min(fit_sample, PARAM_SAMPLE)
    trans = transactional(inputs, summ)
    value = np.zeros(n)
    notes: list[str] = []
    bg = gg = sbg = None
    labels = np.asarray(inputs.panel.churn)
    try:
        train = load_split(inputs.run_dir, n).train
        where = "training"
    except GpusegError:
        train, where = np.arange(n), "known"
    train = train[labels[train] >= 0]
    rows = np.flatnonzero(trans & (summ.spend > 0))
    if len(rows):
        # distinct (x, t_x, T) triples: the fit and the expectation are the same for all sharers
        span = int(summ.age.max()) + 1
        key = (summ.x[rows].astype(np.int64) * span + summ.t_x[rows]) * span + summ.age[rows]
        uniq, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
        ux, ut, uT = uniq // (span * span), (uniq // span) % span, uniq % span
        bg = BGNBD().fit(ux, ut, uT, weights=cnt)
        per_key = bg.discounted_periods(n_future, discount, ux, ut, uT)
        count = summ.x[rows] + 1.0
        pick = rows
        if len(rows) > fit_sample:
            pick = np.sort(np.random.default_rng([seed, 17]).choice(rows, fit_sample, False))
        gg = GammaGamma().fit(summ.x[pick] + 1.0, summ.spend[pick])
        value[rows] = per_key[inv] * gg.expected_spend(count, summ.spend[rows])
        alive = float(bg.p_alive(ux, ut, uT) @ cnt) / cnt.sum()
        seen = labels[train[trans[train]]]
        check = (
            f", while {seen.mean():.1%} of their {len(seen):,} {where} labels churned within the "
            "label horizon (the model sees only dropout inside the window)"
            if len(seen)
            else ""
        )
        notes.append(
            f"customer_base: BG/NBD for {int(trans.sum()):,} transactional subscribers (r "
            f"{bg.r_:.3g}, alpha {bg.alpha_:.3g}, a {bg.a_:.3g}, b {bg.b_:.3g}; Gamma-Gamma spend "
            f"p {gg.p_:.3g}, q {gg.q_:.3g}, v {gg.v_:.3g}); mean P(alive) at the window's end "
            f"{alive:.1%}{check}"
        )
    contract = np.flatnonzero(~trans)
    if len(contract):
        tenure = tenure_periods(inputs, summ, per_month)
        fit_rows = train[~trans[train]]
        if not _fittable(labels[fit_rows]):
            fit_rows = train
            where += " (all plans)"
        if not _fittable(labels[fit_rows]):
            notes.append(
                f"customer_base: unavailable, the shifted-beta-geometric needs at least "
                f"{MIN_LABELS:,} known {where} churn labels with churners and stayers among them"
            )
            return CustomerBaseFit(None, trans, bg, gg, None, notes)
        sampled = ""
        if len(fit_rows) > fit_sample:
            sampled = f", a random sample of their {len(fit_rows):,}"
            pick = np.random.default_rng([seed, 18]).choice(len(fit_rows), fit_sample, False)
            fit_rows = fit_rows[np.sort(pick)]
        sbg = ShiftedBetaGeometric().fit(tenure[fit_rows], labels[fit_rows], horizon)
        value[contract] = last3[contract] * sbg.discounted_periods(
            tenure[contract], n_future, discount
        )
        notes.append(
            f"customer_base: shifted-beta-geometric for {len(contract):,} contract subscribers "
            f"(gamma {sbg.gamma_:.3g}, delta {sbg.delta_:.3g}, fitted on {len(fit_rows):,} "
            f"{where} churn labels{sampled})"
        )
    return CustomerBaseFit(value, trans, bg, gg, sbg, notes)


def _fittable(labels: np.ndarray) -> bool:
    return len(labels) >= MIN_LABELS and 0 < int(labels.sum()) < len(labels)
