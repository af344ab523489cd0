"""Lifetime value: expected revenue over a horizon (12 months by default) and its discounted sum.

Four estimates, all in the run's money units:

- ``arpu_baseline``: the last 3 periods' ARPU times the expected number of (discounted) periods
  a subscriber stays at the population's average churn rate ("ARPU x retention");
- ``customer_base``: a probabilistic customer-base model fitted on the run's own revenue series
  and churn labels (:mod:`gpuseg.action.customer_base`): BG/NBD x Gamma-Gamma spend for
  transactional (prepaid, or gaps in the revenue series) subscribers, shifted-beta-geometric
  retention x last-3-periods ARPU for contract ones;
- ``hazard_value``: each subscriber's own churn hazard (the model's churn probability over the
  label horizon, held constant per period) times a revenue path (level over the last 4 periods,
  growth from the window, held within [0.3, 3] of today's level);
- ``ziln``: a zero-inflated lognormal value head (Wang et al. 2019): a small network over the
  run's features, the model's churn probability and ``log1p(hazard_value)`` that predicts
  P(revenue > 0) and a lognormal for the positive part; the mean is p * exp(mu + sigma^2 / 2).
  It needs observed future revenue (a table of subscriber id and revenue over the horizon, e.g.
  the synthetic world's ``future.parquet``) and is cross-fitted: every subscriber's value comes
  from a model that did not see that subscriber's revenue.

Metrics against realised revenue: normalised Gini of the predicted value, Spearman rank
correlation, and mean predicted vs mean actual per decile of prediction.

Without a revenue metric in the panel there is no lifetime value: :func:`estimate_ltv` returns
None with the reason, and the plan counts retained subscribers instead of money.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from scipy.stats import spearmanr
from torch import nn

from gpuseg.action.customer_base import TransactionSummaries, customer_base_value
from gpuseg.action.features import take_rows
from gpuseg.data.ids import index_in_blocks
from gpuseg.data.panel import read_rows
from gpuseg.errors import ConfigError, DataError
from gpuseg.segment.classic import periods_per_month

FIT_SAMPLE = 200_000  # subscribers the ZILN head and the uplift learners are fitted on, at most


def per_period_hazard(p_churn: np.ndarray, horizon: int) -> np.ndarray:
    p = np.clip(np.asarray(p_churn, dtype=np.float64), 1e-6, 1 - 1e-6)
    return 1.0 - (1.0 - p) ** (1.0 / horizon)


def survival_factor(
    p_churn: np.ndarray, horizon: int, n_future: int, discount: float, growth=None
) -> np.ndarray:
    """sum_t P(alive at t) * discount^t * (growth path)_t over t = 1..n_future, per subscriber."""
    p_churn = np.asarray(p_churn, dtype=np.float64)
    out = np.empty(len(p_churn))
    t = np.arange(1, n_future + 1)[None, :]
    for s in range(0, len(p_churn), 200_000):
        e = s + 200_000
        lam = per_period_hazard(p_churn[s:e], horizon)[:, None]
        w = (1.0 - lam) ** t * discount**t
        if growth is not None:
            w = w * np.clip(np.exp(np.asarray(growth)[s:e, None] * t), 0.3, 3.0)
        out[s:e] = w.sum(1)
    return out


def recent_revenue(revenue: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Mean revenue per period over each subscriber's last ``k`` present periods (0 if none)."""
    mask = np.asarray(mask, dtype=bool)
    rank = np.cumsum(mask, axis=1)
    last = mask & (rank > rank[:, -1:] - k)
    return np.where(last, revenue, 0.0).sum(1) / np.maximum(last.sum(1), 1)


def revenue_growth(revenue: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-period log growth of revenue: first half of the window against its last quarter."""
    t = mask.shape[1]
    idx = np.arange(t)
    mask = np.asarray(mask, dtype=bool)
    first = mask & (idx < t // 2)
    lastq = mask & (idx >= t - max(t // 4, 1))
    m1 = np.where(first, revenue, 0.0).sum(1) / np.maximum(first.sum(1), 1)
    m2 = np.where(lastq, revenue, 0.0).sum(1) / np.maximum(lastq.sum(1), 1)
    gap = (t - max(t // 4, 1) / 2) - (t // 2) / 2  # distance between the two windows' centres
    g = (np.log1p(m2) - np.log1p(m1)) / max(gap, 1.0)
    ok = first.any(1) & lastq.any(1)
    return np.clip(np.where(ok, g, 0.0), -0.03, 0.01)


# ---------------------------------------------------------------------------------------------
# ZILN value head


class ZILNHead(nn.Module):
    """MLP -> (logit of P(value > 0), mu, raw sigma) of a zero-inflated lognormal."""

    def __init__(self, n_in: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.out = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, 3)
        return self.out(self.net(x))


def ziln_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of y (B,) >= 0 under the zero-inflated lognormal ``out`` (B, 3)."""
    logit, mu, sig = out[:, 0], out[:, 1], nn.functional.softplus(out[:, 2]) + 1e-3
    pos = (y > 0).float()
    cls = nn.functional.binary_cross_entropy_with_logits(logit, pos, reduction="none")
    logy = torch.log(y.clamp_min(1e-6))
    nll = logy + torch.log(sig) + 0.5 * ((logy - mu) / sig) ** 2
    return (cls + pos * nll).mean()


def ziln_mean(out: torch.Tensor) -> torch.Tensor:
    sig = nn.functional.softplus(out[:, 2]) + 1e-3
    return torch.sigmoid(out[:, 0]) * torch.exp(out[:, 1].clamp(max=20) + 0.5 * sig**2)


class ZILNRegressor:
    """scikit-learn style: ``fit(X, y)`` returns self; ``predict(X)`` the expected value."""

    def __init__(
        self,
        epochs: int = 25,
        batch_size: int = 512,
        lr: float = 2e-3,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed
        self.device = torch.device(device)

    def fit(self, X: np.ndarray, y: np.ndarray) -> ZILNRegressor:
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        self.mean_ = X.mean(0)
        self.scale_ = X.std(0) + 1e-6
        x = torch.as_tensor((X - self.mean_) / self.scale_, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.float32)
        n = len(x)
        val = torch.randperm(n, generator=gen)[: max(n // 10, 1)]
        tr = torch.ones(n, dtype=torch.bool)
        tr[val] = False
        tr = torch.nonzero(tr).squeeze(1)
        model = ZILNHead(x.shape[1]).to(self.device)
        with torch.no_grad():  # start at the data's zero share and log-scale
            pos = y[y > 0]
            p = float((y > 0).mean())
            model.out.bias.copy_(
                torch.tensor(
                    [
                        np.log(p / max(1 - p, 1e-6)),
                        float(np.log(pos).mean()) if len(pos) else 0.0,
                        0.5,
                    ]
                )
            )
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=1e-4)
        best, best_state, bad = np.inf, None, 0
        for _ in range(self.epochs):
            model.train()
            order = tr[torch.randperm(len(tr), generator=gen)]
            for s in range(0, len(order), self.batch_size):
                b = order[s : s + self.batch_size]
                loss = ziln_loss(model(x[b].to(self.device)), yt[b].to(self.device))
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                v = float(ziln_loss(model(x[val].to(self.device)), yt[val].to(self.device)))
            if v < best - 1e-4:
                best, bad = v, 0
                best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
            else:
                bad += 1
                if bad >= 4:
                    break
        model.load_state_dict(best_state)
        self.model_ = model.eval()
        return self

    @torch.no_grad()
    def predict(self, X: np.ndarray) -> np.ndarray:
        out = []
        for s in range(0, len(X), 65_536):
            x = torch.as_tensor((X[s : s + 65_536] - self.mean_) / self.scale_, dtype=torch.float32)
            out.append(ziln_mean(self.model_(x.to(self.device))).cpu().numpy())
        return np.concatenate(out).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# Metrics


def normalized_gini(actual: np.ndarray, pred: np.ndarray) -> float:
    """Gini of ``actual`` ordered by ``pred``, over the Gini of ``actual`` ordered by itself."""

    def g(a: np.ndarray, p: np.ndarray) -> float:
        order = np.lexsort((np.arange(len(p)), -p))
        cum = np.cumsum(a[order]) / a.sum()
        return float(cum.sum() / len(a) - (len(a) + 1) / (2 * len(a)))

    actual = np.asarray(actual, dtype=np.float64)
    return g(actual, np.asarray(pred, dtype=np.float64)) / g(actual, actual)


def decile_calibration(actual: np.ndarray, pred: np.ndarray) -> list[dict]:
    """Mean predicted and mean actual value per decile of prediction (1 = lowest)."""
    order = np.argsort(pred, kind="stable")
    out = []
    for i, part in enumerate(np.array_split(order, 10)):
        out.append(
            dict(
                decile=i + 1, predicted=float(pred[part].mean()), actual=float(actual[part].mean())
            )
        )
    return out


def ltv_metrics(actual: np.ndarray, pred: np.ndarray, n_boot: int = 200, seed: int = 0) -> dict:
    """Normalised Gini (with a bootstrap 95% interval), Spearman and decile calibration."""
    rng = np.random.default_rng(seed)
    n = len(actual)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        boots.append(normalized_gini(actual[i], pred[i]))
    return dict(
        gini=normalized_gini(actual, pred),
        gini_ci=[float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))],
        spearman=float(spearmanr(actual, pred).statistic),
        deciles=decile_calibration(actual, pred),
        n=int(n),
    )


# ---------------------------------------------------------------------------------------------
# Estimation over a run


@dataclass
class LTVResult:
    value: np.ndarray  # (N,) the chosen estimate (discounted)
    model: str  # which estimate ``value`` is
    estimates: dict[str, np.ndarray]  # every estimate, discounted
    rev_now: np.ndarray
    growth: np.ndarray
    n_future: int
    discount: float
    horizon: int
    metrics: dict = field(default_factory=dict)  # per estimate, against realised revenue
    notes: list[str] = field(default_factory=list)


def unavailable_reason(panel, revenue_metric: str) -> str | None:
    if revenue_metric not in panel.metrics:  # (never reads the values: they may be 10 GB)
        return (
            f"lifetime value unavailable: the panel has no revenue metric '{revenue_metric}' "
            "(data.revenue_metric); the plan counts expected subscribers retained instead of money"
        )
    return None


def revenue_summaries(
    inputs, revenue_metric: str, chunk: int, activity: TransactionSummaries | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(level over the last 4 periods, mean of the last 3, per-period growth), (N,) each, read
    from the panel chunk by chunk; None without the revenue metric. ``activity``, when given,
    is filled in the same pass."""
    panel = inputs.panel
    if revenue_metric not in panel.metrics:
        return None
    idx = panel.metrics.index(revenue_metric)
    n = len(panel)
    level, last3, growth = np.empty(n), np.empty(n), np.empty(n)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        mask = read_rows(panel.mask, s, e).astype(bool)
        rev = np.where(mask, read_rows(panel.usage, s, e)[:, :, idx].astype(np.float64), 0.0)
        level[s:e] = recent_revenue(rev, mask, 4)
        last3[s:e] = recent_revenue(rev, mask, 3)
        growth[s:e] = revenue_growth(rev, mask)
        if activity is not None:
            activity.add(s, rev, mask)
    return level, last3, growth


def estimate_ltv(
    inputs,
    horizon: int,
    horizon_months: float = 12.0,
    discount_annual: float = 0.10,
    future: pd.DataFrame | None = None,
    future_column: str = "future_revenue_disc",
    folds: int = 3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    fit_sample: int = FIT_SAMPLE,
    chunk: int = 65_536,
) -> LTVResult | None:
    """Lifetime value of every subscriber of a run (see the module docstring); None when the
    panel has no revenue metric. ``future``: observed revenue over the horizon (id column of the
    run plus ``future_column``) to train and measure the ZILN head; without it the hazard x value
    estimate is used.

    Bounded memory: the panel is read ``chunk`` subscribers at a time. The ZILN head is
    cross-fitted on at most ``fit_sample`` subscribers with observed revenue (a uniform random
    sample when there are more; all of them otherwise, the whole-run fit); each sampled
    subscriber's value comes from the fold model that did not see it, everyone else's from the
    mean of the fold models, predicted chunk by chunk. Metrics are over the fitted subscribers
    (out of fold)."""
    if fit_sample < 1 or chunk < 1:
        raise ConfigError(f"ltv: fit_sample and chunk must be >= 1, got {fit_sample}, {chunk}")
    panel = inputs.panel
    activity = TransactionSummaries(len(panel))
    summaries = revenue_summaries(inputs, inputs.cfg.data.revenue_metric, chunk, activity)
    if summaries is None:
        return None
    level, last3, growth = summaries
    per_month, _ = periods_per_month(panel, inputs.cfg.segments)
    n_future = int(round(horizon_months * per_month))
    discount = (1.0 + discount_annual) ** (-1.0 / (12.0 * per_month))
    p = inputs.churn_prob
    est = {
        "arpu_baseline": last3
        * survival_factor(np.full(len(p), p.mean()), horizon, n_future, discount),
        "hazard_value": level * survival_factor(p, horizon, n_future, discount, growth),
    }
    base = customer_base_value(
        inputs, activity, last3, horizon, n_future, discount, per_month, fit_sample, seed
    )
    if base.value is not None:
        est["customer_base"] = base.value
    del last3, activity
    res = LTVResult(
        est["hazard_value"], "hazard_value", est, level, growth, n_future, discount, horizon
    )
    res.notes.extend(base.notes)
    if future is None:
        res.notes.append("no future revenue table: lifetime value from churn hazard x value")
        return res
    id_col = inputs.id_column
    for col in (id_col, future_column):
        if col not in future.columns:
            raise DataError(f"future revenue table: no '{col}' column")
    # each run id's first row in the table, matched in Arrow (no pandas index of 10M ids)
    keys = pa.array(future[id_col].astype(str), pa.string())
    at = index_in_blocks(pa.array(inputs.ids, pa.string()), keys)  # hashed a block at a time
    del keys
    values = future[future_column].to_numpy(float)
    y = np.full(len(inputs.ids), np.nan)
    ok = at >= 0
    y[ok] = values[at[ok]]
    del at, ok, values
    if np.any(y[np.isfinite(y)] < 0):
        raise DataError(f"future revenue table: negative '{future_column}'")
    known = np.flatnonzero(np.isfinite(y))
    if len(known) < 100:
        raise DataError(f"future revenue table: only {len(known)} subscribers of the run")
    fit = known
    if len(known) > fit_sample:
        pick = np.random.default_rng([seed, 16]).choice(len(known), fit_sample, replace=False)
        fit = known[np.sort(pick)]
    log_hazard = np.log1p(est["hazard_value"]).astype(np.float32)

    def design(rows: np.ndarray) -> np.ndarray:  # (R, F + 1) float32
        return np.concatenate([take_rows(inputs.features, rows), log_hazard[rows, None]], axis=1)

    def design_range(s: int, e: int) -> np.ndarray:
        return np.concatenate([read_rows(inputs.features, s, e), log_hazard[s:e, None]], axis=1)

    rng = np.random.default_rng(seed)
    fold = rng.integers(0, folds, len(fit))
    ziln = np.zeros(len(p))
    unseen = np.ones(len(p), bool)
    unseen[fit] = False
    for k in range(folds):
        tr, te = fit[fold != k], fit[fold == k]
        m = ZILNRegressor(seed=seed + k, device=device).fit(design(tr), y[tr])
        ziln[te] = m.predict(design(te))
        for s in range(0, len(p), chunk):
            e = min(s + chunk, len(p))
            sel = np.flatnonzero(unseen[s:e])
            if len(sel):
                ziln[s + sel] += m.predict(design_range(s, e)[sel]) / folds
    est["ziln"] = ziln
    res.value, res.model = ziln, "ziln"
    sampled = f" (a random sample of {len(known):,})" if len(fit) < len(known) else ""
    res.notes.append(
        f"ZILN value head cross-fitted over {folds} folds of {len(fit):,} subscribers{sampled}"
    )
    res.metrics = {k: ltv_metrics(y[fit], v[fit], seed=seed) for k, v in est.items()}
    return res
