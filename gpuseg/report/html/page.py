"""The self-contained HTML report: one file, inline CSS and inline SVG charts, no network needed.

``render_report(run_dir, cfg, backend)`` reads the report directory written by
:func:`gpuseg.report.tables.write_report` (segments.csv, effects.csv, rules.csv, tags.csv,
concentration.json, value_stability.csv, crosstab_*.csv, quality.json) and the run's own artifacts
(panel churn labels, predictions.parquet, embeddings.parquet, segments.parquet, split.npz,
metrics.json, cluster.json), and writes ``RUN/report/report.html``. The numbers behind two figures
come from :mod:`gpuseg.report.figures`: the churn lift/gain and calibration curves on the test
split, and a 2-D map of a sample of the embeddings (cuML UMAP on GPU, umap-learn when installed,
else PCA; see :meth:`Backend.umap`). The charts are drawn by :mod:`gpuseg.report.html.charts`.

Every chart is SVG drawn here from numbers; every text goes through :func:`html.escape`. The page
holds aggregates only: no subscriber ID is written. A section whose input file is missing shows a
short "not available" note instead of failing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpuseg.backend import Backend, resolve_backend
from gpuseg.config import RunConfig
from gpuseg.evaluate.metrics import reliability_curve, roc_auc
from gpuseg.io.store import read_json, write_text_atomic
from gpuseg.report.figures import churn_on_test_split, decile_lift, embedding_map, gain_curve
from gpuseg.report.html.charts import (
    PALETTE,
    bar_chart,
    color_at,
    curve_chart,
    diagonal,
    div_color,
    esc,
    figure,
    heatmap,
    is_finite,
    line_chart,
    not_available,
    num,
    outside_frame,
    pct,
    pval,
    scatter,
    stacked_bars,
    table,
)
from gpuseg.report.html.plan import plan_section
from gpuseg.segment.cluster import CLUSTER_SCHEMA
from gpuseg.training.checkpoint import METRICS_SCHEMA

MAX_HEATMAP_FEATURES = 48  # rows of the effect-size heatmap
WEAK_RECALL = 0.5  # a segment rule that finds less of its segment is flagged

# (id, heading) of every section, in page order
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("segments", "Segment sizes and revenue"),
    ("concentration", "Value concentration"),
    ("value-stability", "Value x stability"),
    ("churn", "Churn model: lift, gain and calibration"),
    ("map", "Map of the embeddings"),
    ("profiles", "Segment profiles"),
    ("tags", "Tags"),
    ("rules", "Decision rules"),
    ("quality", "Segment quality"),
    ("crosstabs", "Cross-tabs"),
    ("notes", "Notes"),
)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;color:#222;
background:#fff;line-height:1.4}
main{max-width:1180px;margin:0 auto;padding:16px 24px}
header h1{margin:8px 0 2px;font-size:26px}
nav{font-size:13px;margin:8px 0 16px}nav a{margin-right:12px;color:#4e79a7}
section{border-top:1px solid #ddd;padding:8px 0 16px}
h2{font-size:20px;margin:10px 0}h3{font-size:15px;margin:12px 0 6px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:130px}
.card b{display:block;font-size:20px}.card span{font-size:12px;color:#555}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
figure{margin:4px 0}figcaption{font-size:12px;color:#555;max-width:640px}
table{border-collapse:collapse;font-size:12px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f4f4f4}td.t,th.t{text-align:left}
.na{color:#888;font-style:italic}.small{font-size:12px;color:#555}
svg text{font-family:inherit}
@media print{nav{display:none}section{break-inside:avoid-page}main{max-width:none}}
"""


def _read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def _read_json(path: Path, schema: dict | None = None) -> Any:
    """A JSON input of the report (None when missing); a damaged one raises RunDirError."""
    return read_json(path, schema) if path.is_file() else None


class _Inputs:
    """Every input file of the report, read once (None when missing)."""

    def __init__(self, run_dir: Path) -> None:
        rep = run_dir / "report"
        self.run_dir = run_dir
        self.report_dir = rep
        self.segments = _read_csv(rep / "segments.csv")
        self.effects = _read_csv(rep / "effects.csv")
        self.rules = _read_csv(rep / "rules.csv")
        self.tags = _read_csv(rep / "tags.csv")
        self.value_stability = _read_csv(rep / "value_stability.csv")
        self.crosstab_value = _read_csv(rep / "crosstab_value.csv")
        self.crosstab_lifecycle = _read_csv(rep / "crosstab_lifecycle.csv")
        self.concentration = _read_json(rep / "concentration.json")
        self.quality = _read_json(rep / "quality.json")
        self.metrics = _read_json(run_dir / "metrics.json", METRICS_SCHEMA)
        self.cluster = _read_json(run_dir / "cluster.json", CLUSTER_SCHEMA)

    def names(self) -> dict[int, str]:
        if self.segments is None or "name" not in self.segments:
            return {}
        return {
            int(s): str(n)
            for s, n in zip(self.segments["segment"], self.segments["name"], strict=False)
        }

    def seg_labels(self) -> list[str]:
        names = self.names()
        return [f"{s}: {names.get(int(s), '')}" for s in self.segments["segment"]]


def _col(frame: pd.DataFrame, *names: str) -> str | None:
    return next((n for n in names if n in frame.columns), None)


def section_summary(d: _Inputs, churn: tuple | None, cfg: RunConfig, backend: Backend) -> str:
    cards = []
    seg = d.segments
    if seg is not None:
        size = _col(seg, "size", "subscribers")
        cards.append(("subscribers", num(seg[size].sum()) if size else "n/a"))
        cards.append(("learned segments (k)", num(len(seg))))
    elif d.cluster:
        cards.append(("learned segments (k)", num(d.cluster.get("k"))))
    auc = (d.metrics or {}).get("churn", {}).get("roc_auc")
    if auc is None and churn is not None and len(np.unique(churn[0])) == 2:
        auc = roc_auc(*churn)
    cards.append(("churn ROC-AUC (test split)", num(auc)))
    if churn is not None and len(churn[0]):
        cards.append(("churn rate (test split)", pct(churn[0].mean())))
    if d.concentration:
        top = d.concentration.get("top_share", {})
        v = next((top[k] for k in ("0.2", "top_20pct") if k in top), None)
        cards.append(("revenue share of top 20%", pct(v)))
        cards.append(("Gini of revenue", num(d.concentration.get("gini"))))
    if d.quality and d.quality.get("stability_ari"):
        cards.append(("stability (mean ARI)", num(d.quality["stability_ari"].get("mean"))))
    body = "".join(
        f"<div class='card'><b>{esc(v)}</b><span>{esc(k)}</span></div>" for k, v in cards
    )
    algo = (d.cluster or {}).get("algorithm", "?")
    return (
        f"<div class='cards'>{body}</div><p class='small'>Run <b>{esc(cfg.name)}</b>; "
        f"clustering {esc(algo)} on {esc((d.cluster or {}).get('backend', backend.ml))}; "
        f"report rendered on {esc(backend.device)} ({esc(backend.ml)}).</p>"
    )


def section_segments(d: _Inputs) -> str:
    seg = d.segments
    if seg is None:
        return not_available("report/segments.csv")
    labels = d.seg_labels()
    chart = bar_chart(
        labels,
        [
            ("share of subscribers", seg["share"].tolist(), PALETTE[0]),
            ("share of revenue", seg["revenue_share"].tolist(), PALETTE[1]),
        ],
        title="Segment sizes and revenue share",
    )
    cols = [
        c
        for c in ("segment", "name", "size", "share", "revenue_share", "arpu", "churn_rate")
        if c in seg
    ]
    cols += [c for c in ("churn_pred", "tenure_median") if c in seg]
    fm = {c: pct for c in ("share", "revenue_share", "churn_rate", "churn_pred")}
    return figure(chart, "Share of subscribers and of revenue per learned segment.") + table(
        seg[cols], fm
    )


def section_concentration(d: _Inputs) -> str:
    c = d.concentration
    if not c:
        return not_available("report/concentration.json")
    lz = c.get("lorenz", {})
    x = lz.get("x", lz.get("population", []))
    y = lz.get("y", lz.get("revenue", []))
    chart = curve_chart(
        "Lorenz curve",
        x,
        y,
        "equal revenue",
        title="Lorenz curve of revenue",
        x_label="share of subscribers (lowest revenue first)",
        y_label="share of revenue",
    )
    rows = []
    for key, v in c.get("top_share", {}).items():
        share = key if not key.startswith("top_") else str(float(key[4:-3]) / 100)
        rows.append(dict(top=f"top {float(share) * 100:g}% of subscribers", revenue_share=pct(v)))
    tab = table(pd.DataFrame(rows)) if rows else ""
    return (
        "<div class='row'>"
        + figure(chart, f"Gini coefficient {num(c.get('gini'))}: 0 all equal, 1 one holds all.")
        + f"<div><h3>Revenue held by the top subscribers</h3>{tab}</div></div>"
    )


def section_value_stability(d: _Inputs) -> str:
    vs = d.value_stability
    if vs is None:
        return not_available("report/value_stability.csv")
    levels = list(dict.fromkeys(vs["value_level"].astype(str)))[::-1]  # highest value on top
    bands = list(dict.fromkeys(vs["stability_band"].astype(str)))
    share_col = _col(vs, "revenue_share", "share_revenue")
    risk_col = _col(vs, "mean_churn_prob", "mean_churn_risk")
    cell = {(str(r.value_level), str(r.stability_band)): r for r in vs.itertuples(index=False)}
    prio = vs["priority"].to_numpy(dtype=float)
    p_lo, p_hi = np.nanmin(prio), np.nanmax(prio)
    shade = np.full((len(levels), len(bands)), np.nan)
    texts = []
    for i, lv in enumerate(levels):
        row = []
        for j, b in enumerate(bands):
            r = cell.get((lv, b))
            if r is None:
                row.append(["empty"])
                continue
            p = float(r.priority)
            shade[i, j] = 1 - (p - p_lo) / (p_hi - p_lo) if p_hi > p_lo else 0.5
            lines = [f"P{int(p)} {r.action}", f"{num(r.subscribers)} subs"]
            if share_col:
                lines.append(f"revenue {pct(getattr(r, share_col))}")
            if risk_col:
                lines.append(f"churn risk {pct(getattr(r, risk_col))}")
            row.append(lines)
        texts.append(row)
    chart = heatmap(
        [f"value {lv}" for lv in levels],
        [f"stability {b}" for b in bands],
        shade,
        texts,
        title="Value x stability matrix",
        cell_w=150,
        cell_h=66,
    )
    return figure(
        chart,
        "Each cell: operation priority (P1 first; darker = earlier) and action, subscribers, "
        "share of revenue and mean predicted churn risk.",
    )


def section_churn(churn: tuple | None) -> str:
    if churn is None:
        return not_available("predictions.parquet, split.npz or the panel's churn labels")
    y, p = churn
    if len(y) == 0 or len(np.unique(y)) < 2:
        return not_available("churn curves: the test split needs churners and stayers")
    gx, gy = gain_curve(y, p)
    lift = decile_lift(y, p)
    gain = curve_chart(
        "model",
        gx,
        gy,
        "random",
        title="Cumulative gain",
        x_label="share of subscribers contacted (highest risk first)",
        y_label="share of churners reached",
    )
    lift_chart = bar_chart(
        [f"decile {i + 1}" for i in range(len(lift))],
        [("lift", lift.tolist(), PALETTE[0])],
        title="Lift per risk decile",
        fmt=lambda v: f"{float(v):.2f}x" if is_finite(v) else "n/a",
        width=360,
        label_width=70,
    )
    bins = reliability_curve(y, p, 10)
    top = max([b["mean_p"] for b in bins] + [b["frac_pos"] for b in bins] + [0.05])
    lim = min(1.0, math.ceil(top * 10) / 10)
    calib = line_chart(
        [
            dict(
                name="observed",
                x=[b["mean_p"] for b in bins],
                y=[b["frac_pos"] for b in bins],
                color=PALETTE[1],
                markers=True,
            ),
            diagonal("perfect", lim),
        ],
        title="Calibration curve",
        x_label="mean predicted churn probability (bin)",
        y_label="observed churn rate",
        xlim=(0, lim),
        ylim=(0, lim),
    )
    n = len(y)
    return (
        "<div class='row'>"
        + figure(
            gain,
            f"Test split: {n:,} labelled subscribers, {int(y.sum()):,} churners; "
            f"ROC-AUC {num(roc_auc(y, p))}.",
        )
        + figure(lift_chart, "Churn rate per decile of predicted risk over the overall rate.")
        + figure(calib, "Reliability: 10 equal-width probability bins; empty bins left out.")
        + "</div>"
    )


def section_map(d: _Inputs, run_dir: Path, cfg: RunConfig, backend: Backend) -> str:
    if cfg.report.map_sample <= 0:
        return not_available("map turned off (report.map_sample = 0)")
    m = embedding_map(run_dir, cfg.report.map_sample, cfg.report.seed, backend)
    if m is None:
        return not_available("embeddings.parquet or segments.parquet")
    xy, lab, method, n = m
    chart = scatter(xy, lab, d.names(), title="2-D map of the subscriber embeddings")
    out = outside_frame(xy)
    clamped = (
        f" The frame spans the 0.5-99.5 percentiles of each axis: {out:,} outlying points "
        f"({out / max(len(xy), 1):.1%}) are drawn on its edge."
        if out
        else ""
    )
    return figure(
        chart,
        f"{len(xy):,} of {n:,} subscribers sampled at random (seed {cfg.report.seed}), "
        f"projected to 2-D with {method}; colour: learned segment.{clamped}",
    )


def section_profiles(d: _Inputs) -> str:
    seg = d.segments
    if seg is None:
        return not_available("report/segments.csv")
    labels = d.seg_labels()
    parts = []
    if d.effects is not None and len(d.effects):
        eff = d.effects
        if "rank" in eff:
            eff = eff[eff["rank"] <= 4]
        # every segment's top 4 features (a segment's defining trait is never cut), up to 48
        feats = list(dict.fromkeys(eff["feature"].astype(str)))
        shown = feats[:MAX_HEATMAP_FEATURES]
        full = d.effects.pivot_table(index="feature", columns="segment", values="effect")
        full = full.reindex(index=shown, columns=seg["segment"])
        vals = full.to_numpy(dtype=float)
        scale = np.nanmax(np.abs(vals)) if np.isfinite(vals).any() else 1.0
        texts = [[[f"{v:+.2f}" if is_finite(v) else ""] for v in row] for row in vals]
        left_out = (
            f" {len(feats) - len(shown)} more features are in effects.csv." if len(feats) > len(
                shown) else ""
        )  # fmt: skip
        parts.append(
            figure(
                heatmap(
                    shown,
                    labels,
                    vals / (scale or 1.0),
                    texts,
                    title="Effect sizes per segment",
                    color=div_color,
                    cell_w=120,
                    cell_h=24,
                    row_label_width=200,
                ),
                "Standardised effect size of each feature (segment vs everyone else): blue "
                "above, red below the population; rows: the 4 features that most set each "
                f"segment apart ({len(shown)} features).{left_out}",
            )
        )
    else:
        parts.append(not_available("report/effects.csv"))
    row = []
    if "churn_rate" in seg:
        series = [("actual", seg["churn_rate"].tolist(), PALETTE[3])]
        if "churn_pred" in seg:
            series.append(("predicted", seg["churn_pred"].tolist(), PALETTE[7]))
        err = (
            {"actual": (seg["churn_rate_lo"].tolist(), seg["churn_rate_hi"].tolist())}
            if {"churn_rate_lo", "churn_rate_hi"} <= set(seg.columns)
            else None
        )
        row.append(
            figure(
                bar_chart(labels, series, title="Churn per segment", errors=err, width=700),
                "Churn rate (actual, with 95% interval) and mean predicted churn probability.",
            )
        )
    if "arpu" in seg:
        err = (
            {"ARPU": (seg["arpu_lo"].tolist(), seg["arpu_hi"].tolist())}
            if {"arpu_lo", "arpu_hi"} <= set(seg.columns)
            else None
        )
        row.append(
            figure(
                bar_chart(
                    labels,
                    [("ARPU", seg["arpu"].tolist(), PALETTE[2])],
                    title="ARPU per segment",
                    fmt=lambda v: num(v, 4),
                    errors=err,
                    width=700,
                ),
                "Mean revenue per user per month, with 95% interval.",
            )
        )
    parts.append("<div class='row'>" + "".join(row) + "</div>")
    for prefix, what in (
        ("migration_", "Value migration mix"),
        ("contract_", "Contract mix"),
        ("bundle_", "Bundle mix"),
    ):
        cols = [c for c in seg.columns if c.startswith(prefix) and not c.endswith(("_lo", "_hi"))]
        if cols and prefix == "migration_" and not seg[cols].notna().any().any():
            parts.append(f"<p>{what}: no migration labels in this run.</p>")
        elif cols:
            parts.append(
                figure(
                    stacked_bars(
                        labels,
                        [(c[len(prefix) :], seg[c].tolist()) for c in cols],
                        title=what,
                        width=760,
                    ),
                    f"{what} per segment.",
                )
            )
    med = [c for c in seg.columns if c.startswith("median_")]
    if med:
        frame = seg[["segment"] + med].rename(columns={c: c[7:] for c in med})
        parts.append("<h3>Usage medians (per period)</h3>" + table(frame))
    return "".join(parts)


def section_tags(d: _Inputs) -> str:
    t = d.tags
    if t is None:
        return not_available("report/tags.csv")
    kinds = list(dict.fromkeys(t["kind"].astype(str)))
    blocks = []
    for k, kind in enumerate(kinds):
        sub = t[t["kind"].astype(str) == kind]
        blocks.append(
            figure(
                bar_chart(
                    sub["tag"].astype(str).tolist(),
                    [(kind, sub["share"].tolist(), color_at(k))],
                    title=f"{kind} tags",
                    width=520,
                    label_width=190,
                ),
                f"{kind.capitalize()} tags: share of subscribers carrying each.",
            )
        )
    return (
        "<div class='row'>"
        + "".join(blocks)
        + "</div>"
        + table(t[["tag", "kind", "subscribers", "share"]], {"share": pct})
    )


def section_rules(d: _Inputs) -> str:
    r = d.rules
    if r is None:
        return not_available("report/rules.csv")
    names = d.names()
    frame = r.copy()
    frame.insert(1, "name", [names.get(int(s), "") for s in frame["segment"]])
    fid = frame["fidelity"].iloc[0] if "fidelity" in frame and len(frame) else float("nan")
    cols = [c for c in ("segment", "name", "rule", "precision", "recall") if c in frame]
    weak = ""
    if "recall" in frame and len(frame):
        rec = frame["recall"].astype(float)
        low = frame[rec < WEAK_RECALL]
        weak = (
            f" Fidelity is over all subscribers, so large segments dominate it: per segment, the "
            f"rules find {pct(rec.min())} to {pct(rec.max())} of their segment (recall)."
        )
        if len(low):
            named = "; ".join(
                f"segment {int(r.segment)} ({r.name}) {pct(r.recall)}" for r in low.itertuples()
            )
            weak += (
                f" Below {pct(WEAK_RECALL, 0)}, the rule misses most of its segment and may not "
                f"name its defining trait: {named}."
            )
    info = (d.quality or {}).get("rules", {})
    extra = (
        f" Tree of depth {info['max_depth']}, fitted on {num(info.get('fitted_on'))} and "
        f"scored on {num(info.get('scored_on'))} subscribers."
        if info.get("max_depth")
        else ""
    )
    return (
        f"<p>A decision tree over plain columns recognises the segments with fidelity "
        f"<b>{esc(pct(fid))}</b> (accuracy on all subscribers).{esc(weak)}{esc(extra)} A CRM "
        f"can apply these rules without the model.</p>"
        + table(frame[cols], {"precision": pct, "recall": pct})
    )


def section_quality(d: _Inputs) -> str:
    q = d.quality or {}
    scores = q.get("k_scores") or (d.cluster or {}).get("scores") or []
    if not scores:
        return not_available("report/quality.json and cluster.json scores")
    ks = [s["k"] for s in scores]
    chosen = q.get("chosen_k", (d.cluster or {}).get("k"))
    charts = []
    for key, name, color in (
        ("silhouette", "silhouette (higher is better)", PALETTE[0]),
        ("davies_bouldin", "Davies-Bouldin (lower is better)", PALETTE[1]),
    ):
        vals = [s.get(key) for s in scores]
        good = [float(v) for v in vals if is_finite(v)]
        if not good:
            continue
        lo, hi = min(good), max(good)
        pad = (hi - lo) * 0.2 or 0.05
        series = [dict(name=name, x=ks, y=vals, color=color, markers=True)]
        if chosen in ks:
            series.append(
                dict(
                    name=f"chosen k={chosen}",
                    x=[chosen, chosen],
                    y=[lo - pad, hi + pad],
                    color="#999",
                    dash=True,
                )
            )
        charts.append(
            line_chart(
                series,
                title=name,
                x_label="k",
                y_label=key.replace("_", "-"),
                xlim=(min(ks), max(ks)),
                ylim=(lo - pad, hi + pad),
                fmt_x=lambda v: f"{v:g}",
                fmt_y=lambda v: f"{v:.3f}",
                ticks=max(1, min(5, max(ks) - min(ks))),
                width=380,
                height=260,
            )
        )
    parts = ["<div class='row'>" + "".join(figure(c, "") for c in charts) + "</div>"]
    reason = q.get("reason", (d.cluster or {}).get("reason"))
    if reason:
        parts.append(f"<p><b>Chosen k:</b> {esc(reason)}</p>")
    ari = q.get("stability_ari") or {}
    if ari.get("values"):
        parts.append(
            f"<p><b>Stability:</b> adjusted Rand index of re-fits on bootstrap samples against the "
            f"chosen segmentation: mean {esc(num(ari.get('mean')))}, min "
            f"{esc(num(ari.get('min')))} over {len(ari['values'])} re-fits.</p>"
        )
    differ = q.get("segments_differ") or {}
    tests = []
    for key, what in (("churn_chi2", "churn rate (chi-squared)"), ("arpu_anova", "ARPU (ANOVA)")):
        t = differ.get(key)
        if t:
            tests.append(
                f"{what}: statistic {num(t.get('statistic'))}, {pval(t.get('p_value'))}"
                if is_finite(t.get("p_value"))
                else f"{what}: n/a"
            )
    if tests:
        parts.append("<p><b>Do segments behave differently?</b> " + esc("; ".join(tests)) + ".</p>")
    return "".join(parts)


def _crosstab(frame: pd.DataFrame | None, what: str, names: dict[int, str]) -> str:
    if frame is None:
        return not_available(f"report/crosstab_{what}.csv")
    cols = [c for c in frame.columns if c != "segment"]
    vals = frame[cols].to_numpy(dtype=float)
    rows_total = vals.sum(1, keepdims=True)
    share = np.divide(vals, rows_total, out=np.zeros_like(vals), where=rows_total > 0)
    texts = [
        [[num(v), pct(s, 0)] for v, s in zip(vr, sr, strict=False)]
        for vr, sr in zip(vals, share, strict=False)
    ]
    rows = [f"{s}: {names.get(int(s), '')}" for s in frame["segment"]]
    return figure(
        heatmap(
            rows,
            cols,
            share,
            texts,
            title=f"Segments x {what}",
            cell_w=106,
            cell_h=34,
            row_label_width=230,
        ),
        f"Subscribers per learned segment and {what} (share of the segment's row; darker: more).",
    )


def section_crosstabs(d: _Inputs) -> str:
    names = d.names()
    return (
        "<h3>Learned segments x value level</h3>"
        + _crosstab(d.crosstab_value, "value", names)
        + "<h3>Learned segments x lifecycle stage</h3>"
        + _crosstab(d.crosstab_lifecycle, "lifecycle", names)
    )


def section_notes(d: _Inputs, backend: Backend) -> str:
    notes = list((d.quality or {}).get("notes") or []) + list(backend.notes)
    items = "".join(f"<li>{esc(n)}</li>" for n in notes) or "<li>No notes.</li>"
    files = sorted(
        p.name
        for p in d.report_dir.glob("*")
        if p.is_file() and p.suffix in (".csv", ".md", ".json", ".parquet")
    )
    links = ", ".join(f'<a href="{esc(f)}">{esc(f)}</a>' for f in files)
    return (
        f"<ul>{items}</ul><p class='small'>Tables beside this file (Markdown, CSV, Parquet): "
        f"{links or 'none'}. These links open while the page sits in its report folder "
        "(RUN/report/); a page shared on its own keeps every chart and table above, not these "
        "files: send the folder with it. The page holds aggregates only, no subscriber IDs.</p>"
    )


def render_html(run_dir: str | Path, cfg: RunConfig, backend: Backend) -> str:
    """The report page as a string (see :func:`render_report`)."""
    run_dir = Path(run_dir)
    d = _Inputs(run_dir)
    churn = churn_on_test_split(run_dir)
    makers: dict[str, Callable[[], str]] = {
        "summary": lambda: section_summary(d, churn, cfg, backend),
        "segments": lambda: section_segments(d),
        "concentration": lambda: section_concentration(d),
        "value-stability": lambda: section_value_stability(d),
        "churn": lambda: section_churn(churn),
        "map": lambda: section_map(d, run_dir, cfg, backend),
        "profiles": lambda: section_profiles(d),
        "tags": lambda: section_tags(d),
        "rules": lambda: section_rules(d),
        "quality": lambda: section_quality(d),
        "crosstabs": lambda: section_crosstabs(d),
        "notes": lambda: section_notes(d, backend),
    }
    bodies = {}
    for sid, make in makers.items():
        try:
            bodies[sid] = make()
        except KeyError as exc:  # a report file of an older layout: say which column is missing
            bodies[sid] = not_available(f"column {exc} missing from this run's report files")
    nav = "".join(f'<a href="#{sid}">{esc(h)}</a>' for sid, h in SECTIONS)
    sections = "".join(
        f'<section id="{sid}"><h2>{esc(h)}</h2>{bodies[sid]}</section>' for sid, h in SECTIONS
    )
    plan_nav, plan_html = plan_section(run_dir)  # the plan, once `gpuseg plan` ran
    nav, sections = nav + plan_nav, sections + plan_html
    title = f"gpuseg report: {cfg.name}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body><main><header><h1>{esc(title)}</h1>"
        "<p class='small'>Subscriber segments, value, churn risk and tags. Self-contained: "
        "no network needed to view or print.</p></header>"
        f"<nav>{nav}</nav>{sections}</main></body></html>\n"
    )


def render_report(run_dir: str | Path, cfg: RunConfig, backend: Backend | None = None) -> Path:
    """Write ``run_dir/report/report.html`` (one self-contained file) and return its path."""
    backend = backend or resolve_backend(cfg.device)
    run_dir = Path(run_dir)
    return write_text_atomic(run_dir / "report" / "report.html", render_html(run_dir, cfg, backend))
