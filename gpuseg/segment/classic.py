"""Classic operator segmentations: value tiers, RFM, stability, lifecycle and profiles.

Everything here is computed from a :class:`~gpuseg.data.Panel` and its raw attributes frame, with
vectorised numpy over the (N, T) / (N, T, M) arrays. The entry point is :func:`classic_segments`,
which returns one row per subscriber (indexed by subscriber id, in panel row order):

==================== ======================================================================
column               meaning
==================== ======================================================================
revenue              total revenue over the window
arpu                 mean revenue per present period x periods per month
value_decile         1-10, ARPU deciles (10 = highest)
value_level          named ARPU level (default low/mid/high/premium/vip at the 40/70/90/98th
                     percentiles)
recency              periods since the last active period (T when never active)
frequency            share of the window's periods that are active
monetary             ARPU
r_score ... m_score  1-5 quintile scores (5 = best: most recent, most frequent, highest ARPU)
rfm_code, rfm_score  e.g. "545"; R + F + M (3-15)
rfm_group            champions / loyal / promising / at_risk / hibernating / need_attention
stability_*          components of the stability score, each in [0, 1] (NaN: no data)
stability            weighted mean of the components, in [0, 1]
stability_band       low / mid / high
usage_change         late-window usage over early-window usage, minus 1
lifecycle_stage      new / growing / mature / declining / near_contract_end
contract_group       prepaid / no_contract / 1-12m / 13-24m / 25m+ / unknown
bundling_profile     family_convergent / family / convergent / bundled / mobile_only / unknown
usage_profile        data_heavy / voice_centric / sms_centric / light (one per usage_reference)
priority, action     operation priority of the subscriber's value x stability cell (1 = first)
churn_prob           only when a churn probability array is given
==================== ======================================================================

Components that need data the panel does not have (no static table, no distinct_contacts metric)
are skipped; each skip is explained by one line in ``frame.attrs["notes"]``. A missing revenue
metric raises :class:`~gpuseg.errors.DataError`.

Population-relative cut points (deciles, value levels, RFM quintiles) come from
:func:`segment_edges`; pass them back in through ``edges=`` to score a part of the population
(a Dask partition, a scoring batch) against the cut points of the whole.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from gpuseg.config import LifecycleConfig, SegmentsConfig, StabilityConfig
from gpuseg.data.panel import Panel
from gpuseg.errors import ConfigError, DataError

STABILITY_BANDS = ("low", "mid", "high")
LIFECYCLE_STAGES = ("new", "growing", "mature", "declining", "near_contract_end")
CONTRACT_GROUPS = ("prepaid", "no_contract", "1-12m", "13-24m", "25m+", "unknown")
BUNDLING_PROFILES = (
    "family_convergent",
    "family",
    "convergent",
    "bundled",
    "mobile_only",
    "unknown",
)
PROFILE_NAMES = {"data_mb": "data_heavy", "voice_min": "voice_centric", "sms": "sms_centric"}

# RFM groups, first match wins; each entry is (name, R range, F range, M range), inclusive.
RFM_GROUPS: tuple[tuple[str, tuple[int, int], tuple[int, int], tuple[int, int]], ...] = (
    ("champions", (4, 5), (4, 5), (4, 5)),  # recent, frequent, high value
    ("loyal", (3, 5), (3, 5), (3, 5)),  # regular and paying well
    ("promising", (4, 5), (1, 2), (1, 5)),  # recent but infrequent: new or returning
    ("at_risk", (1, 2), (3, 5), (3, 5)),  # used to be frequent and valuable, not lately
    ("hibernating", (1, 2), (1, 2), (1, 5)),  # neither recent nor frequent
)
RFM_DEFAULT_GROUP = "need_attention"  # everyone else: middling scores
RFM_GROUP_NAMES = tuple(g[0] for g in RFM_GROUPS) + (RFM_DEFAULT_GROUP,)

# Value x stability: (value class, stability band) -> (priority, action); 1 is the most urgent.
# Value class: "top" is the highest value level (the two highest when there are 4 or 5 levels),
# "bottom" the lowest, "middle" the rest.
PRIORITY: dict[tuple[str, str], tuple[int, str]] = {
    ("top", "low"): (1, "retain now"),
    ("top", "mid"): (2, "secure loyalty"),
    ("middle", "low"): (2, "retain"),
    ("top", "high"): (3, "reward and upsell"),
    ("middle", "mid"): (3, "develop"),
    ("middle", "high"): (4, "upsell"),
    ("bottom", "low"): (4, "low-cost retention"),
    ("bottom", "mid"): (5, "automate"),
    ("bottom", "high"): (5, "maintain"),
}

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")  # period labels of date-based panels
DECILES = np.linspace(0.1, 0.9, 9)
QUINTILES = np.array([0.2, 0.4, 0.6, 0.8])


# ---------------------------------------------------------------------------------------------
# Small helpers


def metric(panel: Panel, name: str) -> np.ndarray | None:
    """The (N, T) values of metric ``name`` (0 where missing), or None when the panel lacks it."""
    if name not in panel.metrics:
        return None
    return np.asarray(panel.usage[:, :, panel.metrics.index(name)], dtype=np.float64)


def revenue_matrix(panel: Panel) -> np.ndarray:
    """(N, T) revenue; raises DataError naming the column when the revenue metric is missing."""
    name = panel.meta.get("revenue_metric", "revenue")
    rev = metric(panel, name)
    if rev is None:
        raise DataError(
            f"revenue metric '{name}' not in the panel (metrics: {', '.join(panel.metrics)}); "
            "set data.revenue_metric"
        )
    return rev


def periods_per_month(panel: Panel, cfg: SegmentsConfig) -> tuple[float, str | None]:
    """Periods per month from the config, else from the spacing of the period dates.

    Returns (value, note); the note says when a default had to be assumed.
    """
    if cfg.periods_per_month is not None:
        if cfg.periods_per_month <= 0:
            raise ConfigError(
                f"segments.periods_per_month: must be > 0, got {cfg.periods_per_month}"
            )
        return float(cfg.periods_per_month), None
    periods = [str(p) for p in panel.meta.get("periods", []) if not str(p).startswith("pad")]
    days = None
    if periods and all(_DATE.match(p) for p in periods):
        days = np.array(periods, dtype="datetime64[D]").astype(np.int64)
    if days is None or len(days) < 2:
        return (
            1.0,
            "periods are not dates: assuming monthly periods (set segments.periods_per_month)",
        )
    step = float(np.median(np.diff(days)))
    if 6 <= step <= 8:
        return 52.0 / 12.0, None
    if 28 <= step <= 31:
        return 1.0, None
    return 365.25 / 12.0 / step, None


def check_attributes(panel: Panel, attributes: pd.DataFrame | None) -> pd.DataFrame | None:
    """The attributes frame aligned to the panel rows (positionally), or None.

    Raises DataError when the row count differs or the id column disagrees with the panel ids.
    """
    if attributes is None:
        return None
    if len(attributes) != len(panel):
        raise DataError(
            f"attributes have {len(attributes)} rows, the panel {len(panel)}: "
            "use the attributes.parquet written with the panel"
        )
    id_col = panel.meta.get("id_column", "subscriber_id")
    if id_col in attributes.columns:
        ids = attributes[id_col].astype(str).to_numpy()
        bad = ids != np.asarray(panel.ids).astype(str)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"attributes row {row + 1}: id '{ids[row]}' != panel id '{panel.ids[row]}'"
            )
    return attributes.reset_index(drop=True)


def attribute_number(attributes: pd.DataFrame | None, column: str) -> np.ndarray | None:
    """Column as float64 (NaN where missing or unreadable); booleans and yes/no become 1/0."""
    if attributes is None or column not in attributes.columns:
        return None
    s = attributes[column]
    if s.dtype == bool or str(s.dtype) == "boolean":
        return s.astype("float64").to_numpy()
    if pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(dtype="float64", na_value=np.nan)
    text = s.astype("string").str.strip().str.lower()
    words = {"true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0, "y": 1.0, "n": 0.0}
    mapped = text.map(words).to_numpy(dtype="float64", na_value=np.nan)
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return np.where(np.isnan(mapped), numbers, mapped)


def quantile_edges(values: np.ndarray, quantiles: np.ndarray | list[float]) -> np.ndarray:
    """Cut points at ``quantiles`` of the finite values (zeros when there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return np.zeros(len(quantiles))
    return np.quantile(v, quantiles)


def score_by_edges(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """1 + the number of edges <= value: with quintile edges, a score 1-5 (ties share the top)."""
    return (1 + np.searchsorted(np.asarray(edges), np.asarray(values), side="right")).astype(
        np.int8
    )


def _categorical(
    values: np.ndarray, categories: tuple[str, ...] | list[str], ordered: bool = False
):
    return pd.Categorical(values, categories=list(categories), ordered=ordered)


# ---------------------------------------------------------------------------------------------
# Value


def arpu(revenue: np.ndarray, mask: np.ndarray, per_month: float) -> np.ndarray:
    """Mean revenue per present period x periods per month, (N,). 0 with no present period."""
    present = mask.sum(axis=1)
    total = np.where(mask, revenue, 0.0).sum(axis=1)
    return total / np.maximum(present, 1) * per_month


def _check_value_cfg(cfg: SegmentsConfig) -> None:
    q = np.asarray(cfg.value_quantiles, dtype=float)
    if not 3 <= len(cfg.value_levels) <= 5:
        raise ConfigError(f"segments.value_levels: need 3 to 5 names, got {len(cfg.value_levels)}")
    if len(q) != len(cfg.value_levels) - 1:
        raise ConfigError(
            f"segments.value_quantiles: need {len(cfg.value_levels) - 1} cut points for "
            f"{len(cfg.value_levels)} value_levels, got {len(q)}"
        )
    if ((q <= 0) | (q >= 1)).any() or (np.diff(q) <= 0).any():
        raise ConfigError(f"segments.value_quantiles: must increase within (0, 1), got {list(q)}")
    if len(set(cfg.value_levels)) != len(cfg.value_levels):
        raise ConfigError("segments.value_levels: names must be distinct")


def value_tiers(
    arpu_values: np.ndarray, cfg: SegmentsConfig, edges: dict | None = None
) -> pd.DataFrame:
    """ARPU deciles (1-10) and named value levels; cut points from ``edges`` or from the data."""
    _check_value_cfg(cfg)
    edges = edges or segment_edges_from(arpu_values, None, None, cfg)
    decile = score_by_edges(arpu_values, np.asarray(edges["arpu_deciles"]))
    level = np.searchsorted(np.asarray(edges["value_cuts"]), arpu_values, side="right")
    return pd.DataFrame(
        {
            "value_decile": decile,
            "value_level": _categorical(
                np.asarray(cfg.value_levels)[level], cfg.value_levels, True
            ),
        }
    )


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values: 0 all equal, (n-1)/n one holds everything."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total <= 0:
        return 0.0
    rank = np.arange(1, n + 1)
    return float(2.0 * (rank * x).sum() / (n * total) - (n + 1) / n)


def value_concentration(
    values: np.ndarray,
    tops: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2),
    n_points: int = 101,
) -> dict[str, Any]:
    """How concentrated revenue is across subscribers.

    ``values`` is one number per subscriber (e.g. :func:`subscriber_revenue`). Returns
    ``top_share`` ({"top_1pct": share, ...}: revenue share of the ceil(f x N) highest),
    ``lorenz`` ({"population": [...], "revenue": [...]}: ``n_points`` points of the Lorenz curve,
    cumulative revenue share of the poorest x share of subscribers), ``gini``, ``n`` and ``total``.
    """
    x = np.asarray(values, dtype=np.float64)
    if (x < 0).any() or not np.isfinite(x).all():
        raise DataError("value_concentration: values must be finite and non-negative")
    n, total = len(x), float(x.sum())
    desc = np.sort(x)[::-1]
    cum_desc = np.concatenate([[0.0], np.cumsum(desc)])
    top_share = {}
    for f in tops:
        k = min(n, max(1, int(np.ceil(f * n - 1e-9)))) if n else 0
        top_share[f"top_{f * 100:g}pct"] = float(cum_desc[k] / total) if total > 0 else 0.0
    cum_asc = np.concatenate([[0.0], np.cumsum(desc[::-1])])
    population = np.linspace(0.0, 1.0, n_points)
    pos = np.rint(population * n).astype(int)
    lorenz = cum_asc[pos] / total if total > 0 else population.copy()
    return dict(
        top_share=top_share,
        lorenz=dict(population=population.tolist(), revenue=lorenz.tolist()),
        gini=gini(x),
        n=n,
        total=total,
    )


def subscriber_revenue(panel: Panel) -> np.ndarray:
    """Total revenue over the window per subscriber, (N,)."""
    return np.where(panel.mask, revenue_matrix(panel), 0.0).sum(axis=1)


# ---------------------------------------------------------------------------------------------
# RFM


def activity(panel: Panel) -> np.ndarray:
    """(N, T) bool: present periods with revenue > 0 or top-ups > 0.

    A subscriber with no such period in the window falls back to any activity (any metric > 0).
    """
    mask = np.asarray(panel.mask, dtype=bool)
    paid = revenue_matrix(panel) > 0
    topups = metric(panel, "topups")
    if topups is not None:
        paid |= topups > 0
    paid &= mask
    never_paid = ~paid.any(axis=1)
    if never_paid.any():
        any_use = (np.asarray(panel.usage[never_paid]) > 0).any(axis=2) & mask[never_paid]
        paid[never_paid] = any_use
    return paid


def recency_frequency(active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Periods since the last active period (T when never active) and the active share of T."""
    n, t = active.shape
    last = np.where(active.any(axis=1), t - 1 - np.argmax(active[:, ::-1], axis=1), -1)
    recency = np.where(last >= 0, t - 1 - last, t).astype(np.int32)
    frequency = active.sum(axis=1) / max(t, 1)
    return recency, frequency


def rfm_groups(r: np.ndarray, f: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Group names from 1-5 scores by :data:`RFM_GROUPS` (first match wins)."""
    out = np.full(len(r), RFM_DEFAULT_GROUP, dtype=object)
    done = np.zeros(len(r), dtype=bool)
    for name, (r0, r1), (f0, f1), (m0, m1) in RFM_GROUPS:
        hit = ~done & (r >= r0) & (r <= r1) & (f >= f0) & (f <= f1) & (m >= m0) & (m <= m1)
        out[hit] = name
        done |= hit
    return out


def rfm(
    recency: np.ndarray, frequency: np.ndarray, monetary: np.ndarray, edges: dict
) -> pd.DataFrame:
    """RFM scores 1-5 (5 best) against quintile edges, the code, the sum and the named group."""
    r = score_by_edges(-recency.astype(np.float64), np.asarray(edges["recency"]))
    f = score_by_edges(frequency, np.asarray(edges["frequency"]))
    m = score_by_edges(monetary, np.asarray(edges["monetary"]))
    code = pd.Series(r.astype(str)).str.cat([pd.Series(f.astype(str)), pd.Series(m.astype(str))])
    return pd.DataFrame(
        {
            "recency": recency,
            "frequency": frequency,
            "monetary": monetary,
            "r_score": r,
            "f_score": f,
            "m_score": m,
            "rfm_code": code.to_numpy(),
            "rfm_score": (r.astype(np.int16) + f + m).astype(np.int8),
            "rfm_group": _categorical(rfm_groups(r, f, m), RFM_GROUP_NAMES),
        }
    )


# ---------------------------------------------------------------------------------------------
# Population cut points


def segment_edges_from(
    arpu_values: np.ndarray,
    recency: np.ndarray | None,
    frequency: np.ndarray | None,
    cfg: SegmentsConfig,
) -> dict[str, list[float]]:
    """Cut points for deciles, value levels and RFM quintiles from whole-population arrays."""
    edges = {
        "arpu_deciles": quantile_edges(arpu_values, DECILES).tolist(),
        "value_cuts": quantile_edges(arpu_values, cfg.value_quantiles).tolist(),
        "monetary": quantile_edges(arpu_values, QUINTILES).tolist(),
    }
    if recency is not None:
        edges["recency"] = quantile_edges(-np.asarray(recency, np.float64), QUINTILES).tolist()
    if frequency is not None:
        edges["frequency"] = quantile_edges(frequency, QUINTILES).tolist()
    return edges


def segment_edges(panel: Panel, cfg: SegmentsConfig) -> dict[str, list[float]]:
    """Cut points of the whole panel, to pass as ``edges=`` when scoring parts of it."""
    _check_value_cfg(cfg)
    per_month, _ = periods_per_month(panel, cfg)
    a = arpu(revenue_matrix(panel), np.asarray(panel.mask, bool), per_month)
    recency, frequency = recency_frequency(activity(panel))
    return segment_edges_from(a, recency, frequency, cfg)


# ---------------------------------------------------------------------------------------------
# Stability


def stability_score(
    panel: Panel, attributes: pd.DataFrame | None, cfg: StabilityConfig, notes: list[str]
) -> pd.DataFrame:
    """Components in [0, 1] and their weighted mean over the components each subscriber has.

    tenure: tenure_months / tenure_full_months; social: mean distinct_contacts per present period
    / contacts_full; services: mean of family_plan, broadband and n_bundles / bundles_full (those
    present); contract: contract_months / contract_full_months. All clipped to [0, 1].
    """
    n = len(panel)
    weights = {
        "tenure": cfg.tenure_weight,
        "social": cfg.social_weight,
        "services": cfg.services_weight,
        "contract": cfg.contract_weight,
    }
    for name, w in weights.items():
        if w < 0:
            raise ConfigError(f"segments.stability.{name}_weight: must be >= 0, got {w}")
    bands = np.asarray(cfg.bands, dtype=float)
    if len(bands) != 2 or not 0 <= bands[0] < bands[1] <= 1:
        raise ConfigError(
            f"segments.stability.bands: need two increasing cut points in [0, 1], got {cfg.bands}"
        )

    def scaled(x: np.ndarray | None, full: float) -> np.ndarray | None:
        return None if x is None else np.clip(x / full, 0.0, 1.0)

    comps: dict[str, np.ndarray | None] = {}
    comps["tenure"] = scaled(attribute_number(attributes, "tenure_months"), cfg.tenure_full_months)
    contacts = metric(panel, "distinct_contacts")
    if contacts is not None:
        mask = np.asarray(panel.mask, bool)
        mean = np.where(mask, contacts, 0.0).sum(1) / np.maximum(mask.sum(1), 1)
        comps["social"] = scaled(mean, cfg.contacts_full)
    else:
        comps["social"] = None
    parts = [
        attribute_number(attributes, "family_plan"),
        attribute_number(attributes, "broadband"),
        scaled(attribute_number(attributes, "n_bundles"), cfg.bundles_full),
    ]
    parts = [np.clip(p, 0.0, 1.0) for p in parts if p is not None]
    comps["services"] = np.nanmean(np.stack(parts), axis=0) if parts else None
    comps["contract"] = scaled(
        attribute_number(attributes, "contract_months"), cfg.contract_full_months
    )

    why = {
        "tenure": "no tenure_months attribute",
        "social": "no distinct_contacts metric",
        "services": "no family_plan, broadband or n_bundles attribute",
        "contract": "no contract_months attribute",
    }
    out = {}
    num = np.zeros(n)
    den = np.zeros(n)
    for name, c in comps.items():
        if c is None:
            notes.append(f"stability: {name} component skipped ({why[name]})")
            c = np.full(n, np.nan)
        out[f"stability_{name}"] = c
        ok = np.isfinite(c)
        num += np.where(ok, c, 0.0) * weights[name]
        den += ok * weights[name]
    score = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    if not (den > 0).any():
        notes.append("stability: no component available; stability is NaN and its band 'mid'")
    band_idx = np.where(np.isfinite(score), np.searchsorted(bands, score, side="right"), 1)
    out["stability"] = score
    out["stability_band"] = _categorical(
        np.asarray(STABILITY_BANDS)[band_idx], STABILITY_BANDS, True
    )
    return pd.DataFrame(out)


# ---------------------------------------------------------------------------------------------
# Lifecycle and profiles


def usage_change(usage: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Relative change of usage from the first k to the last k present periods, (N,).

    usage: (N, T, M) of the metrics to combine. Each metric is divided by the subscriber's own mean
    over present periods, the scaled metrics (those ever used) are averaged into one usage index
    per period, and the result is mean(last k) / mean(first k) - 1, capped at +10. With fewer than
    2k present periods, k shrinks to half of them; with fewer than 2 the change is 0.
    """
    if k < 1:
        raise ConfigError(f"segments.lifecycle.trend_periods: must be >= 1, got {k}")
    mask = np.asarray(mask, dtype=bool)
    u = np.where(mask[:, :, None], np.asarray(usage, dtype=np.float64), 0.0)
    count = mask.sum(axis=1)  # (N,)
    mean = u.sum(axis=1) / np.maximum(count, 1)[:, None]  # (N, M)
    used = mean > 0
    scaled = u / np.where(used, mean, 1.0)[:, None, :] * used[:, None, :]
    index = scaled.sum(axis=2) / np.maximum(used.sum(axis=1), 1)[:, None]  # (N, T)
    kk = np.minimum(k, count // 2)[:, None]
    rank = np.cumsum(mask, axis=1)  # 1-based rank of each present period
    early = mask & (rank <= kk)
    late = mask & (rank > count[:, None] - kk)
    e = (index * early).sum(1) / np.maximum(early.sum(1), 1)
    lt = (index * late).sum(1) / np.maximum(late.sum(1), 1)
    change = np.where(e > 0, lt / np.where(e > 0, e, 1.0) - 1.0, np.where(lt > 0, 10.0, 0.0))
    return np.minimum(change, 10.0)


def trend_usage(panel: Panel, cfg: LifecycleConfig, notes: list[str]) -> np.ndarray:
    """:func:`usage_change` over the configured trend metrics (revenue when none is present)."""
    names = [m for m in cfg.trend_metrics if m in panel.metrics]
    if not names:
        names = [panel.meta.get("revenue_metric", "revenue")]
        revenue_matrix(panel)  # raises when revenue is missing too
        notes.append(
            f"lifecycle: none of the trend metrics {cfg.trend_metrics} in the panel; "
            "trend from revenue"
        )
    idx = [panel.metrics.index(m) for m in names]
    return usage_change(np.asarray(panel.usage[:, :, idx]), panel.mask, cfg.trend_periods)


def lifecycle_stage(
    change: np.ndarray,
    tenure_months: np.ndarray | None,
    weeks_to_contract_end: np.ndarray | None,
    cfg: LifecycleConfig,
    joined_months: np.ndarray | None = None,
) -> np.ndarray:
    """One stage per subscriber, first match wins:

    1. ``new``: tenure_months < new_months (without tenure: joined inside the window, i.e. absent
       in the first period, less than new_months of present periods ago, ``joined_months``);
    2. ``declining``: usage change < -decline_pct;
    3. ``near_contract_end``: 0 <= weeks_to_contract_end <= contract_end_periods (in periods);
    4. ``growing``: usage change > growth_pct;
    5. ``mature``: everyone else.
    """
    n = len(change)
    stage = np.full(n, "mature", dtype=object)
    stage[change > cfg.growth_pct] = "growing"
    if weeks_to_contract_end is not None:
        w = weeks_to_contract_end
        near = np.isfinite(w) & (w >= 0) & (w <= cfg.contract_end_periods)
        stage[near] = "near_contract_end"
    stage[change < -cfg.decline_pct] = "declining"
    new = np.zeros(n, dtype=bool)
    if tenure_months is not None:
        new |= np.isfinite(tenure_months) & (tenure_months < cfg.new_months)
    if joined_months is not None:
        no_tenure = np.ones(n, bool) if tenure_months is None else ~np.isfinite(tenure_months)
        new |= no_tenure & np.isfinite(joined_months) & (joined_months < cfg.new_months)
    stage[new] = "new"
    return stage


def contract_group(attributes: pd.DataFrame | None, n: int) -> np.ndarray:
    """prepaid (plan_type 'prepaid') / no_contract (0 months) / 1-12m / 13-24m / 25m+ / unknown."""
    out = np.full(n, "unknown", dtype=object)
    months = attribute_number(attributes, "contract_months")
    if months is not None:
        ok = np.isfinite(months)
        out[ok & (months <= 0)] = "no_contract"
        out[ok & (months > 0) & (months <= 12)] = "1-12m"
        out[ok & (months > 12) & (months <= 24)] = "13-24m"
        out[ok & (months > 24)] = "25m+"
    if attributes is not None and "plan_type" in attributes.columns:
        plan = attributes["plan_type"].astype("string").str.strip().str.lower()
        out[(plan == "prepaid").fillna(False).to_numpy(dtype=bool)] = "prepaid"
    return out


def bundling_profile(attributes: pd.DataFrame | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(profile, n_products): family_convergent (family plan and broadband) / family /
    convergent (broadband) / bundled (n_bundles >= 1) / mobile_only / unknown (no such columns).

    n_products = n_bundles + family_plan + broadband over the columns present.
    """
    family = attribute_number(attributes, "family_plan")
    broadband = attribute_number(attributes, "broadband")
    bundles = attribute_number(attributes, "n_bundles")
    if family is None and broadband is None and bundles is None:
        return np.full(n, "unknown", dtype=object), np.full(n, np.nan)
    zero = np.zeros(n)
    fam = np.nan_to_num(family if family is not None else zero) > 0
    bb = np.nan_to_num(broadband if broadband is not None else zero) > 0
    bun = np.nan_to_num(bundles if bundles is not None else zero)
    out = np.full(n, "mobile_only", dtype=object)
    out[bun >= 1] = "bundled"
    out[bb] = "convergent"
    out[fam] = "family"
    out[fam & bb] = "family_convergent"
    return out, bun + fam + bb


def usage_profile(
    panel: Panel, per_month: float, cfg: SegmentsConfig, notes: list[str]
) -> np.ndarray:
    """The metric with the highest monthly level / reference (data_heavy, voice_centric, ...),
    or ``light`` when every reference metric is below light_fraction of its reference."""
    refs = {m: r for m, r in cfg.usage_reference.items() if m in panel.metrics}
    for m, r in refs.items():
        if r <= 0:
            raise ConfigError(f"segments.usage_reference.{m}: must be > 0, got {r}")
    skipped = sorted(set(cfg.usage_reference) - set(refs))
    if skipped:
        notes.append(f"usage_profile: metrics {skipped} not in the panel, left out")
    n = len(panel)
    if not refs:
        notes.append("usage_profile: no usage_reference metric in the panel; profile 'unknown'")
        return np.full(n, "unknown", dtype=object)
    mask = np.asarray(panel.mask, bool)
    idx = [panel.metrics.index(m) for m in refs]
    u = np.where(mask[:, :, None], np.asarray(panel.usage[:, :, idx], np.float64), 0.0)
    monthly = u.sum(axis=1) / np.maximum(mask.sum(axis=1), 1)[:, None] * per_month  # (N, K)
    ratio = monthly / np.asarray(list(refs.values()))[None, :]
    names = np.array([PROFILE_NAMES.get(m, f"{m}_centric") for m in refs], dtype=object)
    out = names[np.argmax(ratio, axis=1)]
    out[(ratio < cfg.light_fraction).all(axis=1)] = "light"
    return out


def usage_profile_names(cfg: SegmentsConfig) -> list[str]:
    return [PROFILE_NAMES.get(m, f"{m}_centric") for m in cfg.usage_reference] + [
        "light",
        "unknown",
    ]


# ---------------------------------------------------------------------------------------------
# Value x stability


def value_class(levels: list[str]) -> dict[str, str]:
    """Value level name -> top / middle / bottom (see :data:`PRIORITY`)."""
    n = len(levels)
    top = set(levels[-2:]) if n >= 4 else {levels[-1]}
    return {
        lv: "top" if lv in top else "bottom" if i == 0 else "middle" for i, lv in enumerate(levels)
    }


def cell_priority(
    value_level: np.ndarray, band: np.ndarray, levels: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(priority, action) per subscriber from value level and stability band."""
    vc = value_class(levels)
    keys = (
        pd.Series(value_level, dtype=object).map(vc).astype(str)
        + "|"
        + pd.Series(band, dtype=object).astype(str)
    )
    prio = keys.map({f"{v}|{b}": p for (v, b), (p, _) in PRIORITY.items()})
    action = keys.map({f"{v}|{b}": a for (v, b), (_, a) in PRIORITY.items()})
    return prio.to_numpy(dtype="float64"), action.to_numpy(dtype=object)


def value_stability_matrix(
    frame: pd.DataFrame, churn_prob: np.ndarray | None = None, levels: list[str] | None = None
) -> pd.DataFrame:
    """One row per (value_level, stability_band) cell.

    Columns: subscribers, share_subscribers, revenue (sum of ``revenue``), share_revenue, arpu
    (mean), mean_churn_risk (mean of ``churn_prob``, the argument or the frame's column; NaN
    without one), priority and action (:data:`PRIORITY`). Every cell is listed, empty ones too.
    ``frame`` is :func:`classic_segments` output; ``levels`` defaults to its value-level order.
    """
    for col in ("value_level", "stability_band", "revenue", "arpu"):
        if col not in frame.columns:
            raise DataError(
                f"value_stability_matrix: column '{col}' missing (use classic_segments)"
            )
    if levels is None:
        vl = frame["value_level"]
        levels = (
            list(vl.cat.categories)
            if isinstance(vl.dtype, pd.CategoricalDtype)
            else sorted(vl.unique())
        )
    if churn_prob is None and "churn_prob" in frame.columns:
        churn_prob = frame["churn_prob"].to_numpy()
    if churn_prob is not None and len(churn_prob) != len(frame):
        raise DataError(f"churn_prob has {len(churn_prob)} values for {len(frame)} subscribers")
    work = pd.DataFrame(
        {
            "value_level": pd.Categorical(
                frame["value_level"].astype(str), categories=levels, ordered=True
            ),
            "stability_band": pd.Categorical(
                frame["stability_band"].astype(str), categories=STABILITY_BANDS, ordered=True
            ),
            "revenue": frame["revenue"].to_numpy(dtype=float),
            "arpu": frame["arpu"].to_numpy(dtype=float),
            "risk": np.full(len(frame), np.nan)
            if churn_prob is None
            else np.asarray(churn_prob, float),
        }
    )
    g = work.groupby(["value_level", "stability_band"], observed=False)
    out = g.agg(
        subscribers=("revenue", "size"),
        revenue=("revenue", "sum"),
        arpu=("arpu", "mean"),
        mean_churn_risk=("risk", "mean"),
    ).reset_index()
    out["share_subscribers"] = out["subscribers"] / max(len(frame), 1)
    total = work["revenue"].sum()
    out["share_revenue"] = out["revenue"] / total if total > 0 else 0.0
    prio, action = cell_priority(
        out["value_level"].to_numpy(), out["stability_band"].to_numpy(), levels
    )
    out["priority"] = prio.astype(int)
    out["action"] = action
    cols = [
        "value_level",
        "stability_band",
        "subscribers",
        "share_subscribers",
        "revenue",
        "share_revenue",
        "arpu",
        "mean_churn_risk",
        "priority",
        "action",
    ]
    return out[cols]


# ---------------------------------------------------------------------------------------------
# Entry point


def classic_segments(
    panel: Panel,
    attributes: pd.DataFrame | None,
    cfg: SegmentsConfig | None = None,
    *,
    churn_prob: np.ndarray | None = None,
    edges: dict[str, list[float]] | None = None,
) -> pd.DataFrame:
    """Every classic segmentation of every subscriber, as one frame (see the module docstring).

    ``attributes`` is the raw static frame in panel row order
    (:func:`gpuseg.data.panel.load_attributes`)
    or None. ``edges`` are population cut points from :func:`segment_edges` (default: this panel's).
    ``frame.attrs`` holds ``notes`` (skipped components), ``edges`` and ``periods_per_month``.
    """
    cfg = cfg or SegmentsConfig()
    _check_value_cfg(cfg)
    notes: list[str] = []
    n = len(panel)
    rev = revenue_matrix(panel)
    mask = np.asarray(panel.mask, dtype=bool)
    attributes = check_attributes(panel, attributes)
    if attributes is None:
        notes.append("no attributes: static components (tenure, services, contract) skipped")
    per_month, note = periods_per_month(panel, cfg)
    if note:
        notes.append(note)

    a = arpu(rev, mask, per_month)
    recency, frequency = recency_frequency(activity(panel))
    if edges is None:
        edges = segment_edges_from(a, recency, frequency, cfg)
    missing = {"arpu_deciles", "value_cuts", "recency", "frequency", "monetary"} - set(edges)
    if missing:
        raise ConfigError(f"edges: missing {sorted(missing)} (use segment_edges)")
    if len(edges["value_cuts"]) != len(cfg.value_quantiles):
        raise ConfigError("edges: value_cuts do not match segments.value_quantiles")

    parts = [
        pd.DataFrame({"revenue": np.where(mask, rev, 0.0).sum(axis=1), "arpu": a}),
        value_tiers(a, cfg, edges),
        rfm(recency, frequency, a, edges),
        stability_score(panel, attributes, cfg.stability, notes),
    ]
    frame = pd.concat(parts, axis=1)

    change = trend_usage(panel, cfg.lifecycle, notes)
    tenure = attribute_number(attributes, "tenure_months")
    weeks_left = attribute_number(attributes, "weeks_to_contract_end")
    if tenure is None:
        notes.append("lifecycle: no tenure_months; 'new' means joined inside the window")
    if weeks_left is None:
        notes.append("lifecycle: no weeks_to_contract_end; near_contract_end skipped")
    t = mask.shape[1]
    first = np.where(mask.any(1), np.argmax(mask, axis=1), t)
    joined = np.where(first > 0, (t - first) / per_month, np.nan)
    frame["usage_change"] = change
    frame["lifecycle_stage"] = _categorical(
        lifecycle_stage(change, tenure, weeks_left, cfg.lifecycle, joined), LIFECYCLE_STAGES
    )
    if attributes is not None and "contract_months" not in attributes.columns:
        notes.append("contract_group: no contract_months attribute")
    frame["contract_group"] = _categorical(contract_group(attributes, n), CONTRACT_GROUPS)
    profile, products = bundling_profile(attributes, n)
    frame["bundling_profile"] = _categorical(profile, BUNDLING_PROFILES)
    frame["n_products"] = products
    frame["usage_profile"] = _categorical(
        usage_profile(panel, per_month, cfg, notes), list(dict.fromkeys(usage_profile_names(cfg)))
    )
    prio, action = cell_priority(
        frame["value_level"].astype(str).to_numpy(),
        frame["stability_band"].astype(str).to_numpy(),
        cfg.value_levels,
    )
    frame["priority"] = prio.astype(np.int8)
    frame["action"] = action
    if churn_prob is not None:
        if len(churn_prob) != n:
            raise DataError(f"churn_prob has {len(churn_prob)} values for {n} subscribers")
        frame["churn_prob"] = np.asarray(churn_prob, dtype=np.float64)

    frame.index = pd.Index(
        np.asarray(panel.ids).astype(str), name=panel.meta.get("id_column", "subscriber_id")
    )
    frame.attrs["notes"] = notes
    frame.attrs["edges"] = edges
    frame.attrs["periods_per_month"] = per_month
    return frame
