"""Measure an action run against the synthetic world's truth (``synth.campaigns: true``).

- uplift: Qini coefficient per offer of the learned (out-of-fold) effects, of the oracle (the
  true retention gain of each test's offer and channel) and of the risk ranking (churn
  probability), on every test of the campaign table, with bootstrap intervals;
- lifetime value: normalised Gini, Spearman and decile calibration of each estimate and of the
  oracle (the true expected discounted value) against the realised discounted future revenue;
- plan: the TRUE expected incremental value (true effect x true revenue path - cost) of the plan,
  next to the churn x value target list (:func:`gpuseg.segment.targets.select_targets`) spending the
  same budget with the playbook offer of each subscriber's value level (high and above: device
  upgrade, mid: family bundle, low: data gift) through the first open channel of that offer, and
  the share of sleeping dogs in each; intervals by resampling subscribers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gpuseg.action import contact
from gpuseg.action.ltv import ltv_metrics
from gpuseg.action.plan import plan_start
from gpuseg.action.stage import ActionRun
from gpuseg.action.uplift import qini_report
from gpuseg.data.campaigns import effect_logit, incremental_value, treated_probability
from gpuseg.errors import DataError
from gpuseg.io.store import read_json
from gpuseg.segment.tags import build_tag_frame
from gpuseg.segment.targets import select_targets

PLAYBOOK = {
    "vip": "device_upgrade",
    "premium": "device_upgrade",
    "high": "device_upgrade",
    "mid": "family_bundle",
    "low": "data_gift",
}


def _truth(a: ActionRun) -> tuple[pd.DataFrame, dict]:
    if a.world is None or not (a.world / "effects.parquet").is_file():
        raise DataError("evaluation needs a synthetic run with synth.campaigns: true")
    eff = pd.read_parquet(a.world / "effects.parquet").set_index("subscriber_id")
    return eff.loc[a.inputs.ids], read_json(a.world / "world.json")["campaigns"]


def true_values(eff: pd.DataFrame, meta: dict, rows, offers, channels, costs) -> np.ndarray:
    """True expected incremental value minus cost of each (row, offer, channel)."""
    out = np.zeros(len(rows))
    for o in np.unique(offers):
        for c in np.unique(channels):
            sel = (offers == o) & (channels == c)
            if sel.any():
                out[sel] = incremental_value(
                    eff.iloc[rows[sel]], o, c, meta["horizon"], meta["n_future"], meta["discount"]
                )
    return out - costs


def evaluate_uplift(a: ActionRun, eff: pd.DataFrame, n_boot: int = 200) -> dict:
    camp, cf = a.campaigns, a.effects
    p0 = eff["churn_prob"].to_numpy()[camp.row]
    oracle = np.zeros(len(camp.row))
    for o in np.unique(camp.offer):
        for c in np.unique(camp.channel):
            s = (camp.offer == o) & (camp.channel == c)
            tau = effect_logit(
                eff[f"benefit_{o}"].to_numpy()[camp.row[s]],
                eff["sleeping_dog"].to_numpy(float)[camp.row[s]],
                c,
            )
            oracle[s] = p0[s] - treated_probability(p0[s], tau)
    out = {}
    for o in np.unique(camp.offer):
        s = camp.offer == o
        out[str(o)] = qini_report(
            camp.retained[s],
            camp.treated[s],
            dict(learned=cf.oof_uplift[s], oracle=oracle[s], risk=a.inputs.churn_prob[camp.row[s]]),
            n_boot=n_boot,
            ratio_to="oracle",
        )
    return out


def risk_list_actions(a: ActionRun, budget: float) -> pd.DataFrame:
    """The churn x value list spending ``budget`` with the playbook offer (module docstring)."""
    lib = a.library
    t = select_targets(a.inputs.run_dir, horizon_months=lib.horizon_months)
    pos = pd.Series(np.arange(len(a.inputs.ids)), index=a.inputs.ids)
    rows = pos.loc[t[a.inputs.id_column].astype(str)].to_numpy()

    frame = build_tag_frame(
        a.inputs.panel,
        a.inputs.attributes,
        None,
        a.inputs.churn_prob,
        a.inputs.cfg.segments,
        a.inputs.cfg.tags,
    )
    levels = frame["value_level"].astype(str).to_numpy()
    start, _ = plan_start(a.inputs)
    status = contact.channel_status(a.inputs.attributes, len(pos), lib, start, a.history)
    chosen = []
    spend = 0.0
    for r in rows:
        offer = PLAYBOOK.get(levels[r])
        if offer is None or offer not in lib.offers:
            continue
        chans = [c for c in lib.offers[offer].channels if status[c][r] == ""]
        if not chans:
            continue
        cost = lib.offers[offer].cost + lib.channels[chans[0]].cost
        if spend + cost > budget:
            break
        spend += cost
        chosen.append((r, offer, chans[0], cost))
    return pd.DataFrame(chosen, columns=["row", "offer", "channel", "cost"])


def risk_list_best_option(a: ActionRun, budget: float) -> pd.DataFrame:
    """The churn x value list spending ``budget``, each subscriber with the plan's own best
    option (highest predicted net value, whatever its sign) within the channel capacities: the
    same offers, channels and dates as the plan, only the ranking differs. Needs every option:
    plan with ``plan_run(..., keep="all")`` (by default only positive ones are kept)."""
    lib, opts = a.library, a.result.options
    t = select_targets(a.inputs.run_dir, horizon_months=lib.horizon_months)
    pos = pd.Series(np.arange(len(a.inputs.ids)), index=a.inputs.ids)
    rows = pos.loc[t[a.inputs.id_column].astype(str)].to_numpy()
    order = np.lexsort((-opts.net, opts.row))
    by_row: dict[int, list[int]] = {}
    for j in order:
        by_row.setdefault(int(opts.row[j]), []).append(int(j))
    names = list(lib.channels)
    left = np.array(
        [np.inf if lib.channels[c].capacity is None else lib.channels[c].capacity for c in names],
        dtype=float,
    )
    offers = list(lib.offers)
    chosen, spend = [], 0.0
    for r in rows:
        for j in by_row.get(int(r), []):
            c = opts.channel[j]
            if left[c] < 1:
                continue
            if spend + opts.cost[j] > budget:
                break
            left[c] -= 1
            spend += opts.cost[j]
            chosen.append((r, offers[opts.offer[j]], names[c], opts.cost[j]))
            break
        if spend >= budget - 1e-9:
            break
    return pd.DataFrame(chosen, columns=["row", "offer", "channel", "cost"])


def evaluate_plan(
    a: ActionRun, eff: pd.DataFrame, meta: dict, n_boot: int = 500, seed: int = 0
) -> dict:
    n = len(a.inputs.ids)
    plan = a.result.plan
    pos = pd.Series(np.arange(n), index=a.inputs.ids)
    prow = pos.loc[plan[a.inputs.id_column].astype(str)].to_numpy()
    pval = true_values(
        eff,
        meta,
        prow,
        plan["offer"].to_numpy(),
        plan["channel"].to_numpy(),
        plan["cost"].to_numpy(),
    )
    lst = risk_list_actions(a, a.result.summary["spend"])
    lrow = lst["row"].to_numpy().astype(np.int64)
    lval = true_values(
        eff, meta, lrow, lst["offer"].to_numpy(), lst["channel"].to_numpy(), lst["cost"].to_numpy()
    )
    same = risk_list_best_option(a, a.result.summary["spend"])
    srow = same["row"].to_numpy().astype(np.int64)
    sval = true_values(
        eff,
        meta,
        srow,
        same["offer"].to_numpy(),
        same["channel"].to_numpy(),
        same["cost"].to_numpy(),
    )
    per_p, per_l = np.zeros(n), np.zeros(n)
    per_p[prow], per_l[lrow] = pval, lval
    per_s = np.zeros(n)
    per_s[srow] = sval
    sd = eff["sleeping_dog"].to_numpy(bool)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        boots.append(
            (
                per_p[i].sum(),
                per_l[i].sum(),
                per_s[i].sum(),
            )
        )
    b = np.array(boots)
    ratio = b[:, 0] / np.where(b[:, 1] == 0, np.nan, b[:, 1])
    q = lambda x: [float(np.nanquantile(x, 0.025)), float(np.nanquantile(x, 0.975))]  # noqa: E731
    return dict(
        budget=a.result.summary["budget"],
        plan=dict(
            n=int(len(prow)),
            spend=float(plan["cost"].sum()),
            true_value=float(pval.sum()),
            true_value_ci=q(b[:, 0]),
            expected_value=float(plan["expected_incremental_value"].sum()),
            sleeping_dogs=float(sd[prow].mean()) if len(prow) else 0.0,
        ),
        risk_list=dict(
            n=int(len(lrow)),
            spend=float(lst["cost"].sum()),
            true_value=float(lval.sum()),
            true_value_ci=q(b[:, 1]),
            sleeping_dogs=float(sd[lrow].mean()) if len(lrow) else 0.0,
        ),
        risk_list_same_options=dict(
            n=int(len(srow)),
            spend=float(same["cost"].sum()),
            true_value=float(sval.sum()),
            sleeping_dogs=float(sd[srow].mean()) if len(srow) else 0.0,
            true_value_ci=q(b[:, 2]),
        ),
        ratio_same_options=float(pval.sum() / sval.sum()) if sval.sum() else float("nan"),
        ratio_same_options_ci=q(b[:, 0] / np.where(b[:, 2] == 0, np.nan, b[:, 2])),
        ratio=float(pval.sum() / lval.sum()) if lval.sum() else float("nan"),
        ratio_ci=q(ratio),
        population_sleeping_dogs=float(sd.mean()),
    )


def evaluate_ltv(a: ActionRun, eff: pd.DataFrame) -> dict:
    if a.ltv is None or not a.ltv.metrics:
        return {}
    fut = pd.read_parquet(a.world / "future.parquet").set_index("subscriber_id")
    y = fut.loc[a.inputs.ids, "future_revenue_disc"].to_numpy()
    out = {k: {kk: vv for kk, vv in v.items()} for k, v in a.ltv.metrics.items()}
    out["oracle"] = ltv_metrics(y, eff["ltv_disc"].to_numpy())
    return out


def evaluate(a: ActionRun, n_boot: int = 200) -> dict:
    eff, meta = _truth(a)
    out = dict(plan=evaluate_plan(a, eff, meta), ltv=evaluate_ltv(a, eff))
    if a.effects is not None:
        out["uplift"] = evaluate_uplift(a, eff, n_boot)
    return out
