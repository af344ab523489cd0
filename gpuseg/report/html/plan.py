"""The plan's section of the HTML report, from ``RUN/report/plan.json`` (aggregates only).

``gpuseg plan`` writes that file (:func:`write_plan_report`): spend and expected value per offer,
channel and segment, the value curve (cumulative expected value against cumulative spend, in the
plan's order), the Qini curves per offer of the learned effects and of the churn-risk ranking
(out of fold, when a campaign table was used), the channel exclusions and the notes. No
subscriber id is in it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gpuseg.io.store import read_json, write_json_atomic
from gpuseg.report.html.charts import (
    bar_chart,
    color_at,
    esc,
    figure,
    line_chart,
    not_available,
    num,
    table,
)

CURVE_POINTS = 50


def plan_report_data(a) -> dict:
    """The aggregates of an :class:`gpuseg.action.stage.ActionRun` for the report."""

    s = a.result.summary
    plan = a.result.plan
    order = np.argsort(
        -(plan["expected_incremental_value"] / plan["cost"].clip(lower=1e-9)).to_numpy(),
        kind="stable",
    )
    spend = np.concatenate([[0.0], np.cumsum(plan["cost"].to_numpy()[order])])
    value = np.concatenate([[0.0], np.cumsum(plan["expected_incremental_value"].to_numpy()[order])])
    pick = np.unique(np.linspace(0, len(spend) - 1, CURVE_POINTS).round().astype(int))
    out = {
        k: s[k]
        for k in (
            "plan_start",
            "budget",
            "spend",
            "planned",
            "subscribers",
            "expected_incremental_value",
            "value_unit",
            "bound",
            "bound_kind",
            "gap",
            "per_offer",
            "per_channel",
            "per_segment",
            "skipped",
            "channel_exclusions",
            "effects",
            "ltv",
            "notes",
        )
    }
    out["value_curve"] = dict(spend=spend[pick].tolist(), value=value[pick].tolist())
    if a.qini is not None:
        out["qini"] = a.qini
    if a.ltv is not None and a.ltv.metrics:
        out["ltv_metrics"] = {
            k: dict(gini=v["gini"], gini_ci=v["gini_ci"], spearman=v["spearman"])
            for k, v in a.ltv.metrics.items()
        }
    return out


def write_plan_json(a) -> Path:
    """Write ``RUN/report/plan.json``: the aggregates the report's plan section shows."""
    return write_json_atomic(a.inputs.run_dir / "report" / "plan.json", plan_report_data(a))


HEADING = "From segments to actions: the contact plan"


def plan_section(run_dir: str | Path) -> tuple[str, str]:
    """(nav link, ``<section>``) of the plan for the report page; empty strings until
    ``gpuseg plan`` wrote ``report/plan.json``."""
    if not (Path(run_dir) / "report" / "plan.json").is_file():
        return "", ""
    body = section_plan(run_dir)
    return (
        f'<a href="#plan">{esc(HEADING)}</a>',
        f'<section id="plan"><h2>{esc(HEADING)}</h2>{body}</section>',
    )


def section_plan(run_dir: str | Path) -> str:
    """The HTML of the plan section (``not available`` until ``gpuseg plan`` ran)."""
    path = Path(run_dir) / "report" / "plan.json"
    if not path.is_file():
        return not_available("no plan yet; run gpuseg plan RUN --offers configs/offers.yaml")
    d = read_json(path)
    money = d["value_unit"].startswith("money")
    lead = (
        f"<p>{d['planned']:,} actions planned from {d['plan_start']}, spending "
        f"{d['spend']:,.0f} of a budget of {d['budget']:,.0f}; expected incremental value "
        f"{d['expected_incremental_value']:,.1f} ({d['value_unit']}), "
        f"{d['bound_kind']} {d['bound']:,.1f} (greedy gap {d['gap']:.1%}). Effects: "
        f"{d['effects']}; lifetime value: {d['ltv'] or 'unavailable'}.</p>"
    )
    notes = "".join(f"<li>{esc(n)}</li>" for n in d["notes"])
    parts = [lead, f"<ul class='small'>{notes}</ul>" if notes else ""]
    for by in ("offer", "channel", "segment"):
        rows = d[f"per_{by}"]
        if not rows:
            continue
        frame = pd.DataFrame(
            [
                dict(**{by: k}, actions=v["n"], spend=v["spend"], value=v["value"])
                for k, v in rows.items()
            ]
        )
        parts.append(
            table(
                frame,
                {
                    "actions": lambda v: f"{int(v):,}",
                    "spend": lambda v: f"{v:,.0f}",
                    "value": lambda v: f"{v:,.1f}",
                },
            )
        )
    c = d["value_curve"]
    if len(c["spend"]) > 1:
        parts.append(
            figure(
                line_chart(
                    [dict(name="plan", x=c["spend"], y=c["value"], color=color_at(0))],
                    title="Expected incremental value against spend",
                    x_label="cumulative spend",
                    y_label="cumulative expected value",
                    xlim=(0.0, max(c["spend"][-1], 1.0)),
                    ylim=(min(0.0, min(c["value"])), max(max(c["value"]), 1.0)),
                    fmt_x=lambda v: f"{v:,.0f}",
                    fmt_y=lambda v: f"{v:,.0f}" if money else num(v, 2),
                ),
                "The plan in its greedy order (value density): how much value each unit of budget "
                "buys; a flattening curve means the last actions are worth less.",
            )
        )
    for offer, q in (d.get("qini") or {}).items():
        ys = q["curves"]["learned"] + q["curves"]["risk"]
        parts.append(
            figure(
                line_chart(
                    [
                        dict(
                            name="learned uplift",
                            x=q["x"],
                            y=q["curves"]["learned"],
                            color=color_at(0),
                        ),
                        dict(name="churn risk", x=q["x"], y=q["curves"]["risk"], color=color_at(1)),
                        dict(
                            name="random",
                            x=[0.0, 1.0],
                            y=[0.0, q["curves"]["learned"][-1]],
                            color="#888888",
                            dash=True,
                        ),
                    ],
                    title=f"Qini curve: {offer}",
                    x_label="share of tested subscribers, best score first",
                    y_label="incremental retained / tests",
                    ylim=(min(0.0, min(ys)), max(max(ys), 1e-6)),
                    fmt_y=lambda v: num(v, 3),
                ),
                f"{offer}: {q['n']:,} past tests, effects out of fold. Qini coefficient learned "
                f"{q['learned']:.4f} [{q['learned_ci'][0]:.4f}, {q['learned_ci'][1]:.4f}], churn "
                f"risk {q['risk']:.4f} [{q['risk_ci'][0]:.4f}, {q['risk_ci'][1]:.4f}]"
                + (f": the learned effects are {q['verdict']}." if q.get("verdict") else "."),
            )
        )
    ex = d["channel_exclusions"]
    frame = pd.DataFrame([dict(channel=k, **v) for k, v in ex.items()])
    parts.append(
        "<p>Who may be contacted, per channel (each subscriber counted once, under the "
        "first rule that excludes them):</p>" + table(frame)
    )
    skipped = pd.DataFrame([dict(reason=k, subscribers=v) for k, v in d["skipped"].items()])
    if len(skipped):
        parts.append("<p>Subscribers without an action, by reason:</p>" + table(skipped))
    if d.get("ltv_metrics"):
        lm = d["ltv_metrics"]
        labels = list(lm)
        parts.append(
            figure(
                bar_chart(
                    labels,
                    [("normalised Gini", [lm[k]["gini"] for k in labels], color_at(2))],
                    title="Lifetime value: normalised Gini against realised revenue",
                    fmt=lambda v: num(v, 3),
                    errors={
                        "normalised Gini": (
                            [lm[k]["gini_ci"][0] for k in labels],
                            [lm[k]["gini_ci"][1] for k in labels],
                        )
                    },
                ),
                "Cross-fitted; 95% bootstrap intervals.",
            )
        )
    return "".join(parts)
