"""The contact plan: at most one action per subscriber (offer, channel, date), chosen to maximise
expected incremental value under a budget and channel capacities.

For every subscriber, offer and channel that are allowed (offer eligibility, value levels and
segments; channel consent, do-not-disturb and frequency caps, see :mod:`gpuseg.action.contact`;
a date in the offer's moment outside the subscriber's do-not-disturb window):

- churn probability over the label horizon without and with the action: learned from a campaign
  table (:mod:`gpuseg.action.uplift`), or, without one, the run's churn probability and the
  offer library's ``prior_uplift`` times the channel's ``prior_response`` (stated as priors);
- expected incremental value = LTV x (F(p_treated) / F(p_untreated) - 1) - cost, where LTV is
  the discounted lifetime value (:mod:`gpuseg.action.ltv`) and F(p) the discounted expected
  number of periods alive over the horizon at the per-period hazard that p implies: the
  retention uplift, turned into lifetime value; cost = offer cost + channel contact cost.
  Without a revenue metric there is no LTV: the value is then the expected number of subscribers
  retained, and the budget still bounds the cost.

Selection: greedy by value density (net value / cost) over all allowed options with positive
net value, skipping subscribers already planned, full channels and options over the remaining
budget. Its total is reported next to an upper bound of the LP relaxation (HiGHS through
scipy for up to ``LP_MAX_OPTIONS`` options, a Lagrangian bound otherwise; every feasible plan is
below both), so the gap of the greedy plan to the best possible plan is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.optimize import linprog
from scipy.sparse import csr_matrix, vstack

from gpuseg.action import contact
from gpuseg.action.features import PLAN_CHUNK, RunInputs, release_memory
from gpuseg.action.library import Library
from gpuseg.action.ltv import LTVResult, survival_factor, unavailable_reason
from gpuseg.action.uplift import Campaigns
from gpuseg.data.panel import read_rows
from gpuseg.errors import ConfigError
from gpuseg.io.store import write_csv_atomic, write_parquet_atomic
from gpuseg.segment import classic as seg
from gpuseg.segment.tags import apply_tags, build_tag_frame

LP_MAX_OPTIONS = 300_000
MOMENT_TEXT = {
    "renewal": "contract-renewal window",
    "abnormal": "service recovery after an abnormal moment",
    "first_use": "cross-sell after a first use",
    "special": "special date",
    "any": "no key moment needed",
}
# why a subscriber has no action: codes of the (N,) int8 array the plan keeps (0: has one)
SKIP_REASONS = (
    "",
    "no eligible offer",
    "no open channel (consent, do-not-disturb or frequency cap)",
    "do-not-disturb window covers every possible date",
    "no action with positive expected value",
    "budget or channel capacity reached",
)
SKIP_BLOCK = 1 << 20  # subscribers per block of the skipped table (Parquet's default row group)
GREEDY_BLOCK = 1 << 16  # options the greedy turns into Python values at a time


@dataclass
class Options:
    """Every allowed (subscriber, offer, channel) with its date and values."""

    row: np.ndarray
    offer: np.ndarray  # offer index
    channel: np.ndarray  # channel index
    date: np.ndarray
    p0: np.ndarray  # churn probability over the label horizon without the action
    p1: np.ndarray  # ... with it
    incremental: np.ndarray  # before cost
    cost: np.ndarray
    net: np.ndarray


@dataclass
class PlanResult:
    plan: pd.DataFrame
    skipped: pd.DataFrame
    summary: dict
    options: Options | None = None
    notes: list[str] = field(default_factory=list)


def plan_start(inputs: RunInputs) -> tuple[np.datetime64, float]:
    """(first day of the plan, days per period): the day after the data's last period."""
    periods = inputs.panel.meta.get("periods") or []
    try:
        days = pd.to_datetime(pd.Series(periods[-2:])).to_numpy().astype("datetime64[D]")
    except (ValueError, TypeError):
        days = None
    if days is None or len(days) < 2:
        today = np.datetime64(pd.Timestamp.now(tz="UTC").date().isoformat(), "D")
        return today, 7.0
    step = float((days[-1] - days[0]) / np.timedelta64(1, "D"))
    return days[-1] + np.timedelta64(int(round(step)), "D"), step


def streamed_edges(inputs: RunInputs, chunk: int) -> dict[str, list[float]]:
    """The classic segments' population cut points (ARPU deciles, value cuts, RFM quintiles),
    exact, from per-subscriber ARPU, recency and frequency computed ``chunk`` rows at a time:
    the same edges as :func:`gpuseg.segment.classic.segment_edges` without reading the whole
    (N, T) revenue matrix at once."""
    cfg = inputs.cfg.segments
    per_month, _ = seg.periods_per_month(inputs.panel, cfg)
    n = len(inputs.ids)
    a, r, f = np.empty(n), np.empty(n, np.int32), np.empty(n)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        sub = inputs.panel_rows(s, e)
        a[s:e] = seg.arpu(seg.revenue_matrix(sub), sub.mask.astype(bool), per_month)
        r[s:e], f[s:e] = seg.recency_frequency(seg.activity(sub))
    return seg.segment_edges_from(a, r, f, cfg)


def history_rows(history, start: int, stop: int, order: np.ndarray, srt: np.ndarray):
    """The contact history of panel rows [start, stop), rows renumbered from 0 (``order``: the
    history sorted by row, ``srt``: ``history.row[order]``, computed once for all chunks)."""
    if history is None:
        return None
    a, b = np.searchsorted(srt, [start, stop])
    i = order[a:b]
    return Campaigns(
        row=history.row[i] - start,
        offer=history.offer[i],
        channel=history.channel[i],
        treated=history.treated[i],
        retained=history.retained[i],
        date=None if history.date is None else history.date[i],
    )


OPTION_DTYPES = dict(
    row=np.int32,
    offer=np.int8,
    channel=np.int8,
    date="datetime64[D]",
    p0=np.float32,
    p1=np.float32,
    incremental=np.float32,
    cost=np.float64,  # exact: the budget is a hard limit
    net=np.float32,
)


def build_options(
    inputs: RunInputs,
    library: Library,
    ltv: LTVResult | None,
    horizon: int,
    effects=None,
    history=None,
    chunk: int = PLAN_CHUNK,
    keep: str = "positive",
) -> tuple[Options, dict, np.ndarray]:
    """The allowed options, the per-channel exclusion counts, and (N,) int8 per-subscriber code
    (:data:`SKIP_REASONS`) of the first filter that left the subscriber without any option (0
    when some remain).

    Built ``chunk`` subscribers at a time (the same rules; the cut points of value tiers and
    RFM scores are the whole population's, :func:`streamed_edges`), keeping ``keep``:
    ``positive``, the options with positive net value (all the selection and its bounds use),
    or ``all``. Compact dtypes (:data:`OPTION_DTYPES`): int32 rows, int8 offer and channel,
    float32 values (cost stays float64: the budget is a hard limit)."""
    if chunk < 1:
        raise ConfigError(f"plan: chunk size must be >= 1, got {chunk}")
    if keep not in ("positive", "all"):
        raise ConfigError(f"plan: keep must be 'positive' or 'all', got {keep!r}")
    if len(library.offers) > 127 or len(library.channels) > 127:
        raise ConfigError("offers library: at most 127 offers and 127 channels")
    n = len(inputs.ids)
    start, period_days = plan_start(inputs)
    edges = streamed_edges(inputs, chunk) if n else None
    channel_names = list(library.channels)
    exclusions = {c: dict.fromkeys((*contact.REASONS, "open"), 0) for c in channel_names}
    parts: dict[str, list] = {k: [] for k in Options.__dataclass_fields__}
    why = np.zeros(n, np.int8)
    order = srt = None
    if history is not None:  # int32 where the history fits: 16M tests at 10M subscribers
        itype = np.int32 if len(history.row) < 2**31 and n < 2**31 else np.int64
        order = np.argsort(history.row, kind="stable").astype(itype)
        srt = history.row[order].astype(itype)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        m = e - s
        sub = inputs.panel_rows(s, e)
        attrs = inputs.attribute_rows(s, e)
        p_chunk = inputs.churn_prob[s:e]
        classic = seg.classic_segments(
            sub, attrs, inputs.cfg.segments, churn_prob=p_chunk, edges=edges
        )
        frame = build_tag_frame(sub, attrs, classic, p_chunk, inputs.cfg.segments, inputs.cfg.tags)
        del classic
        eligible = apply_tags(frame, library.eligibility)
        levels = frame["value_level"].astype(str).to_numpy()
        del frame
        weeks = None
        if attrs is not None and "weeks_to_contract_end" in attrs.columns:
            weeks = pd.to_numeric(attrs["weeks_to_contract_end"], errors="coerce").to_numpy(float)
        dnd_from = contact.date_column(attrs, "dnd_from")
        dnd_to = contact.date_column(attrs, "dnd_to")
        hist = history_rows(history, s, e, order, srt)
        status = {
            sv: contact.channel_status(attrs, m, library, start, hist, service=sv)
            for sv in (False, True)
        }
        for c in channel_names:
            for r in contact.REASONS:
                exclusions[c][r] += int((status[False][c] == r).sum())
            exclusions[c]["open"] += int((status[False][c] == "").sum())
        X = p_ctrl = None
        if effects is not None:  # P(retained | control): once per chunk, for all its options
            X = read_rows(inputs.features, s, e)
            p_ctrl = effects.control(X, base=s)
        segment = inputs.segment[s:e]
        got_parts: dict[str, list] = {k: [] for k in Options.__dataclass_fields__}
        any_eligible = np.zeros(m, bool)
        any_channel = np.zeros(m, bool)
        any_date = np.zeros(m, bool)
        for oi, (oname, offer) in enumerate(library.offers.items()):
            ok = eligible[oname].to_numpy(bool).copy()
            if offer.value_levels is not None:
                ok &= np.isin(levels, offer.value_levels)
            if offer.segments is not None:
                ok &= np.isin(segment, offer.segments)
            any_eligible |= ok
            lo, hi = contact.moment_windows(
                offer.moment, m, start, library.plan_days, weeks, period_days, library.special_dates
            )
            day = contact.first_free_day(lo, hi, dnd_from, dnd_to)
            for cname in offer.channels:
                ci = channel_names.index(cname)
                open_ = ok & (status[offer.service][cname] == "")
                any_channel |= open_
                sel = open_ & ~np.isnat(day)
                any_date |= sel
                rows = np.flatnonzero(sel)
                if len(rows) == 0:
                    continue
                g = rows + s  # panel rows
                if effects is not None:
                    got = effects.effects(X, rows, oname, cname, base=s, control=p_ctrl)
                    if got is None:
                        continue
                    p0 = 1.0 - got[0]
                    p1 = 1.0 - got[1]
                else:
                    p0 = inputs.churn_prob[g]
                    gain = offer.prior_uplift * library.channels[cname].prior_response
                    p1 = np.clip(p0 - gain, 1e-4, 1.0)
                p0 = np.clip(p0, 1e-4, 1 - 1e-4)
                p1 = np.clip(p1, 1e-4, 1 - 1e-4)
                cost = np.full(len(rows), offer.cost + library.channels[cname].cost)
                if ltv is not None:
                    f0 = survival_factor(p0, horizon, ltv.n_future, ltv.discount, ltv.growth[g])
                    f1 = survival_factor(p1, horizon, ltv.n_future, ltv.discount, ltv.growth[g])
                    inc = ltv.value[g] * (f1 / f0 - 1.0)
                    net = inc - cost
                else:
                    inc = p0 - p1
                    net = inc
                kept = net > 0 if keep == "positive" else np.ones(len(rows), bool)
                for k, v in dict(
                    row=g,
                    offer=np.full(len(rows), oi),
                    channel=np.full(len(rows), ci),
                    date=day[rows],
                    p0=p0,
                    p1=p1,
                    incremental=inc,
                    cost=cost,
                    net=net,
                ).items():
                    got_parts[k].append(np.asarray(v)[kept].astype(OPTION_DTYPES[k]))
        for k, v in got_parts.items():
            if v:
                parts[k].append(np.concatenate(v))
        w = why[s:e]
        w[~any_eligible] = 1
        w[(w == 0) & ~any_channel] = 2
        w[(w == 0) & ~any_date] = 3
    del order, srt
    cat = {}
    for k in list(parts):  # one field's chunks at a time: never all the options twice
        v = parts.pop(k)
        cat[k] = np.concatenate(v) if v else np.zeros(0, OPTION_DTYPES[k])
        del v
    return Options(**cat), exclusions, why


def greedy(opts: Options, budget: float, capacity: np.ndarray, n: int) -> np.ndarray:
    """Indices of the chosen options (see the module docstring)."""
    cand = np.flatnonzero(opts.net > 0)
    density = np.where(
        opts.cost[cand] > 0, opts.net[cand] / np.maximum(opts.cost[cand], 1e-12), np.inf
    )
    order = cand[np.lexsort((opts.row[cand], -opts.net[cand], -density))]
    taken = np.zeros(n, bool)
    left = capacity.astype(float).copy()
    spend = 0.0
    chosen = []
    # no option cheaper than this is left: once the budget cannot pay it, nothing more fits
    cheapest = float(opts.cost[cand].min()) if len(cand) else 0.0
    for b in range(0, len(order), GREEDY_BLOCK):  # Python values for one block at a time
        if spend + cheapest > budget + 1e-9:
            break
        blk = order[b : b + GREEDY_BLOCK]
        rows, chans, costs = (a[blk].tolist() for a in (opts.row, opts.channel, opts.cost))
        for j, r, c, cost in zip(blk.tolist(), rows, chans, costs, strict=True):
            if spend + cheapest > budget + 1e-9:
                break
            if taken[r] or left[c] < 1 or spend + cost > budget + 1e-9:
                continue
            taken[r] = True
            left[c] -= 1
            spend += cost
            chosen.append(j)
    return np.asarray(chosen, dtype=np.int64)


def lagrangian_bound(opts: Options, budget: float, capacity: np.ndarray, n: int) -> float:
    """Upper bound on any plan's total net value: min over a grid of budget multipliers of
    lam * budget + sum_c mu_c * cap_c + sum_i max(0, max_j net_ij - lam cost_ij - mu_c(j)),
    with mu from a few subgradient steps (every lam, mu >= 0 gives a valid bound)."""
    pos = np.flatnonzero(opts.net > 0)
    pos = pos[np.argsort(opts.row[pos], kind="stable")]  # grouped by subscriber
    row, c = opts.row[pos], opts.channel[pos]
    # net stays float32: numpy widens it exactly wherever it meets the float64 cost
    net, cost = opts.net[pos], opts.cost[pos].astype(np.float64)
    del pos
    cap = np.where(np.isfinite(capacity), capacity, 0.0)
    finite = np.isfinite(capacity)
    starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]]) if len(row) else np.zeros(0, int)
    group = (
        np.cumsum(np.r_[False, row[1:] != row[:-1]], dtype=np.int32)
        if len(row)
        else np.zeros(0, int)
    )

    def best_of(red: np.ndarray) -> np.ndarray:  # each subscriber's best reduced value
        return np.maximum.reduceat(red, starts)

    def value(lam: float, mu: np.ndarray) -> tuple[float, np.ndarray]:
        # net - lam * cost - mu[c] in one array (the same operations: the same floats)
        red = np.multiply(cost, lam)
        np.subtract(net, red, out=red)
        if mu.any():  # x - 0.0 is x
            red -= mu[c]
        best = np.maximum(best_of(red), 0.0)
        return lam * budget + float((mu * cap).sum()) + float(best.sum()), red

    if len(net) == 0:
        return 0.0
    mu = np.zeros(len(capacity))
    best_bound = np.inf
    dens = np.sort(net / np.maximum(cost, 1e-12))
    grid = np.unique(np.concatenate([[0.0], np.quantile(dens, np.linspace(0, 1, 60))]))
    del dens
    for _ in range(8):
        vals = [value(lam, mu)[0] for lam in grid]
        i = int(np.argmin(vals))
        best_bound = min(best_bound, vals[i])
        lam = grid[i]
        _, red = value(lam, mu)
        # subgradient on mu: capacity minus the channel use of each row's best option
        top = best_of(red)
        use = np.zeros(len(capacity))
        hit = (red >= top[group]) & (red > 0)
        np.add.at(use, c[hit], 1.0)
        del red, top, hit  # not held through the next grid pass
        step = np.where(finite, (use - cap), 0.0)
        if not np.any(step > 0):
            break
        mu = np.maximum(0.0, mu + step * (np.abs(lam) + 1.0) / max(np.abs(step).max(), 1.0))
    return float(best_bound)


def lp_bound(opts: Options, budget: float, capacity: np.ndarray, n: int) -> float | None:
    """Optimum of the LP relaxation (HiGHS), or None when there are too many options."""

    pos = np.flatnonzero(opts.net > 0)
    m = len(pos)
    if m == 0:
        return 0.0
    if m > LP_MAX_OPTIONS:
        return None
    rows = opts.row[pos]
    uniq, sub = np.unique(rows, return_inverse=True)
    a_sub = csr_matrix((np.ones(m), (sub, np.arange(m))), shape=(len(uniq), m))
    a_bud = csr_matrix(opts.cost[pos][None, :])
    finite = np.flatnonzero(np.isfinite(capacity))
    chans = opts.channel[pos]
    a_cap = csr_matrix(
        (
            np.ones(np.isin(chans, finite).sum()),
            (
                np.searchsorted(finite, chans[np.isin(chans, finite)]),
                np.flatnonzero(np.isin(chans, finite)),
            ),
        ),
        shape=(len(finite), m),
    )
    A = vstack([a_sub, a_bud, a_cap]).tocsr()
    b = np.concatenate([np.ones(len(uniq)), [budget], capacity[finite]])
    res = linprog(-opts.net[pos], A_ub=A, b_ub=b, bounds=(0, 1), method="highs")
    return float(-res.fun) if res.status == 0 else None


def skipped_frame(
    ids: np.ndarray, planned: np.ndarray, why: np.ndarray, id_column: str, block: int = SKIP_BLOCK
) -> pd.DataFrame:
    """The subscribers without an action (``~planned``) and the reason (``why``: codes of
    :data:`SKIP_REASONS`), in panel order: the frame ``pd.DataFrame({id_column:
    ids[~planned], "reason": pd.Categorical(reasons)})`` would be, built without a Python string
    per subscriber: the ids go to Arrow ``block`` rows at a time (the pandas column is that
    Arrow data where pandas stores strings in Arrow, as pandas 3 does), the reasons are one
    byte each, categories sorted as ``pd.Categorical`` sorts them."""
    if block < 1:
        raise ConfigError(f"plan: block size must be >= 1, got {block}")
    left = ~planned
    parts = [
        pa.array(ids[s : s + block][left[s : s + block]], pa.large_string())
        for s in range(0, len(ids), block)
    ]
    id_col = pa.chunked_array(parts, pa.large_string()).to_pandas()
    del parts
    code = why[left]
    present = np.flatnonzero(np.bincount(code, minlength=len(SKIP_REASONS)))
    categories = sorted(SKIP_REASONS[i] for i in present)
    remap = np.full(len(SKIP_REASONS), -1, np.int8)  # reason code -> category code
    remap[present] = [categories.index(SKIP_REASONS[i]) for i in present]
    reason = pd.Categorical.from_codes(remap[code], categories=pd.Index(categories))
    return pd.DataFrame({id_column: id_col, "reason": reason})


def make_plan(
    inputs: RunInputs,
    library: Library,
    budget: float,
    ltv: LTVResult | None,
    horizon: int,
    effects=None,
    history=None,
    effects_source: str = "",
    chunk: int = PLAN_CHUNK,
    keep: str = "positive",
) -> PlanResult:
    """The plan (see the module docstring). ``effects``: a :class:`gpuseg.action.uplift.CrossFit`
    or None for the library's priors; ``history``: the campaign table, for frequency caps;
    ``chunk`` and ``keep``: see :func:`build_options` (``result.options`` holds what ``keep``
    kept)."""
    if not (np.isfinite(budget) and budget >= 0):
        raise ConfigError(f"budget: must be a number >= 0, got {budget}")
    n = len(inputs.ids)
    notes = []
    reason = unavailable_reason(inputs.panel, inputs.cfg.data.revenue_metric)
    if ltv is None and reason:
        notes.append(reason)
    if effects is None:
        notes.append(
            "effects: the offer library's prior_uplift x channel prior_response "
            "(no campaign table; priors, not measured)"
        )
    else:
        notes.append(f"effects: learned from the campaign table ({effects_source})")
    capped = [c for c, ch in library.channels.items() if ch.frequency_cap is not None]
    if capped and (history is None or history.date is None):
        notes.append(
            "frequency caps not checked: no contact history with dates (a campaign table with "
            f"a date column); channels with caps: {', '.join(capped)}"
        )
    opts, exclusions, why = build_options(
        inputs, library, ltv, horizon, effects, history, chunk, keep
    )
    release_memory()
    channel_names = list(library.channels)
    offer_names = list(library.offers)
    capacity = np.array(
        [
            np.inf if library.channels[c].capacity is None else float(library.channels[c].capacity)
            for c in channel_names
        ]
    )
    chosen = greedy(opts, budget, capacity, n)
    total = float(opts.net[chosen].astype(np.float64).sum())
    bound = lp_bound(opts, budget, capacity, n)
    bound_kind = "LP relaxation (HiGHS)"
    if bound is None:
        bound, bound_kind = lagrangian_bound(opts, budget, capacity, n), "Lagrangian bound"
    has_positive = np.zeros(n, bool)
    has_positive[opts.row[opts.net > 0]] = True
    planned = np.zeros(n, bool)
    planned[opts.row[chosen]] = True
    why[(why == 0) & ~has_positive] = 4
    why[(why == 0) & ~planned] = 5
    start, _ = plan_start(inputs)

    rows = opts.row[chosen]
    ch = library.channels
    o = np.array(offer_names)[opts.offer[chosen]] if len(chosen) else np.array([], dtype=str)
    c = np.array(channel_names)[opts.channel[chosen]] if len(chosen) else np.array([], dtype=str)
    hours = [
        f"{ch[x].hours[0]:02d}:00-{ch[x].hours[1]:02d}:00" if ch[x].hours else "any" for x in c
    ]
    ltv_vals = ltv.value[rows] if ltv is not None else np.full(len(rows), np.nan)
    plan = pd.DataFrame(
        {
            inputs.id_column: inputs.ids[rows],
            "segment": inputs.segment[rows],
            "offer": o,
            "channel": c,
            "date": opts.date[chosen].astype("datetime64[ms]"),
            "hours": hours,
            "churn_prob": opts.p0[chosen].astype(np.float64),
            "churn_prob_treated": opts.p1[chosen].astype(np.float64),
            "uplift": opts.p0[chosen].astype(np.float64) - opts.p1[chosen],
            "ltv": ltv_vals,
            "cost": opts.cost[chosen].astype(np.float64),
            "expected_incremental_value": opts.net[chosen].astype(np.float64),
        }
    )
    src = "learned from campaigns" if effects is not None else "offer prior"
    plan["reason"] = [
        f"{oo} via {cc} on {str(d)[:10]} ({MOMENT_TEXT[library.offers[oo].moment]}); "
        f"retention +{u:.1%} ({src}); "
        + (
            f"LTV {lv:.0f}; net {v:.1f} after cost {k:.1f}"
            if np.isfinite(lv)
            else f"expected retained {v:.3f}, cost {k:.1f}"
        )
        for oo, cc, d, u, lv, v, k in zip(
            plan["offer"],
            plan["channel"],
            plan["date"],
            plan["uplift"],
            plan["ltv"],
            plan["expected_incremental_value"],
            plan["cost"],
            strict=True,
        )
    ]
    plan = plan.sort_values("expected_incremental_value", ascending=False, kind="stable")
    plan = plan.reset_index(drop=True)
    skipped = skipped_frame(inputs.ids, planned, why, inputs.id_column)
    del why, has_positive

    def by(col: str) -> dict:
        g = plan.groupby(col)
        return {
            str(k): dict(
                n=int(len(v)),
                spend=float(v["cost"].sum()),
                value=float(v["expected_incremental_value"].sum()),
            )
            for k, v in g
        }

    summary = dict(
        plan_start=str(start),
        budget=float(budget),
        spend=float(plan["cost"].sum()),
        planned=int(len(plan)),
        subscribers=int(n),
        expected_incremental_value=total,
        value_unit="money (discounted lifetime value)"
        if ltv is not None
        else "subscribers retained",
        bound=float(bound),
        bound_kind=bound_kind,
        gap=float((bound - total) / bound) if bound > 0 else 0.0,
        per_offer=by("offer"),
        per_channel=by("channel"),
        per_segment=by("segment"),
        skipped=skipped["reason"].value_counts().to_dict(),
        channel_exclusions=exclusions,
        effects="campaign table" if effects is not None else "offer-library priors",
        ltv=(ltv.model if ltv is not None else None),
        notes=notes + (ltv.notes if ltv is not None else []),
        options=int(len(opts.row)),
    )
    return PlanResult(plan, skipped, summary, opts, notes)


def write_plan(result: PlanResult, out_path: str | Path) -> tuple[Path, Path]:
    """The plan as Parquet (or CSV) at ``out_path`` and the skipped subscribers beside it."""
    path = Path(out_path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise ConfigError(f"{path}: output must end in .parquet or .csv")
    skipped = path.with_name(path.stem + ".skipped" + path.suffix)
    if suffix == ".csv":
        write_csv_atomic(path, result.plan)
        write_csv_atomic(skipped, result.skipped)
    else:
        write_parquet_atomic(path, result.plan)
        write_parquet_atomic(skipped, result.skipped)
    return path, skipped
