"""Segment profiles and the per-segment report (Markdown and CSV).

``segment_profiles`` is a function over arrays and frames: one row per learned segment with size,
share, revenue share, ARPU, churn (actual and predicted), migration mix, usage medians and a
generated readable name from the metrics that most set the segment apart (effect sizes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gpuseg.config import SegmentsConfig
from gpuseg.data import Panel
from gpuseg.segments import arpu, periods_per_month, revenue_matrix

MIGRATION_NAMES = ("down", "stay", "up")


def subscriber_means(panel: Panel, chunk: int = 65_536) -> np.ndarray:
    """Mean of each metric over present periods, (N, M), read in chunks (bounded memory)."""
    n, _, m = panel.usage.shape
    out = np.zeros((n, m), dtype=np.float64)
    for s in range(0, n, chunk):
        u = np.asarray(panel.usage[s : s + chunk], dtype=np.float64)
        w = np.asarray(panel.mask[s : s + chunk], dtype=np.float64)[..., None]
        out[s : s + chunk] = (u * w).sum(1) / np.maximum(w.sum(1), 1)
    return out


def effect_sizes(values: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Standardised mean difference of log1p(values) per segment against everyone else, (k, M)."""
    x = np.log1p(np.maximum(values, 0))
    out = np.zeros((k, x.shape[1]))
    for c in range(k):
        inside, outside = x[labels == c], x[labels != c]
        if len(inside) == 0 or len(outside) == 0:
            continue
        pooled = np.sqrt((inside.var(0) + outside.var(0)) / 2) + 1e-9
        out[c] = (inside.mean(0) - outside.mean(0)) / pooled
    return out


def segment_name(effects: np.ndarray, metrics: list[str], churn_ratio: float) -> str:
    """e.g. 'High roaming_mb, high voice_min, low risk' from the two largest effects."""
    order = np.argsort(-np.abs(effects))[:2]
    words = [
        f"{'high' if effects[j] > 0 else 'low'} {metrics[j]}"
        for j in order
        if abs(effects[j]) >= 0.5
    ]
    if not words:
        words = ["average usage"]
    risk = (
        "rising risk"
        if churn_ratio >= 1.5
        else "low risk"
        if churn_ratio <= 0.67
        else "average risk"
    )
    text = ", ".join(words + [risk])
    return text[0].upper() + text[1:]


def segment_profiles(
    panel: Panel,
    labels: np.ndarray,
    churn_prob: np.ndarray | None = None,
    segments_cfg: SegmentsConfig | None = None,
    usage_metrics: list[str] | None = None,
) -> pd.DataFrame:
    """One row per segment: size, share, revenue share, ARPU, churn, migration mix, usage medians."""
    cfg = segments_cfg or SegmentsConfig()
    k = int(labels.max()) + 1 if len(labels) else 0
    means = subscriber_means(panel)
    metrics = panel.metrics
    per_month, _ = periods_per_month(panel, cfg)
    subscriber_arpu = arpu(revenue_matrix(panel), np.asarray(panel.mask), per_month)
    revenue_total = subscriber_arpu.sum()
    churn = np.asarray(panel.churn)
    migration = np.asarray(panel.migration)
    effects = effect_sizes(means, labels, k)
    base_churn = churn[churn >= 0].mean() if (churn >= 0).any() else np.nan
    base_pred = churn_prob.mean() if churn_prob is not None else np.nan
    rows = []
    shown = usage_metrics or metrics
    for c in range(k):
        sel = labels == c
        known = sel & (churn >= 0)
        row = dict(
            segment=c,
            subscribers=int(sel.sum()),
            share=float(sel.mean()),
            revenue_share=float(subscriber_arpu[sel].sum() / revenue_total)
            if revenue_total > 0
            else np.nan,
            arpu=float(subscriber_arpu[sel].mean()) if sel.any() else np.nan,
            churn_rate=float(churn[known].mean()) if known.any() else np.nan,
            churn_predicted=float(churn_prob[sel].mean())
            if churn_prob is not None and sel.any()
            else np.nan,
        )
        has_mig = sel & (migration >= 0)
        for j, name in enumerate(MIGRATION_NAMES):
            row[f"migration_{name}"] = (
                float((migration[has_mig] == j).mean()) if has_mig.any() else np.nan
            )
        for name in shown:
            if name in metrics:
                row[f"median_{name}"] = (
                    float(np.median(means[sel, metrics.index(name)])) if sel.any() else np.nan
                )
        ref = base_pred if churn_prob is not None else base_churn
        risk = row["churn_predicted"] if churn_prob is not None else row["churn_rate"]
        row["name"] = segment_name(effects[c], metrics, risk / ref if ref and ref > 0 else 1.0)
        top = np.argsort(-np.abs(effects[c]))[:3]
        row["distinguishing"] = "; ".join(f"{metrics[j]} {effects[c, j]:+.2f}sd" for j in top)
        rows.append(row)
    frame = pd.DataFrame(rows)
    cols = ["segment", "name"] + [c for c in frame.columns if c not in ("segment", "name")]
    return frame[cols] if len(frame) else frame


def profiles_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A Markdown table of the profiles (the main columns only)."""
    cols = [c for c in frame.columns if not c.startswith("median_") and c != "distinguishing"]
    cols += [c for c in frame.columns if c.startswith("median_")][:4]
    head = "| " + " | ".join(cols) + " |"
    sep = "| " + " | ".join("---" for _ in cols) + " |"
    lines = [head, sep]
    for _, r in frame[cols].iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                cells.append(
                    "" if np.isnan(v) else f"{v:.{digits}f}" if abs(v) < 100 else f"{v:,.0f}"
                )
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
