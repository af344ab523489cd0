"""Segment profiles and the report tables: what each learned segment is, and the classic views.

Functions over arrays and frames (no files): :func:`build_report` takes a panel, its raw
attributes, the learned segment of every subscriber and the model's churn probability and returns
every table of the report; :func:`write_report` writes them (CSV, Parquet, JSON, Markdown) into a
report directory. The per-subscriber work (classic segments, key moments, tags) runs in chunks of
``report.chunk_size`` subscribers against whole-population cut points, so memory stays bounded on
large panels.

Confidence intervals are analytic: the Wilson score interval for a segment's churn rate and the
normal approximation (mean +- z x standard error) for its ARPU, both at 95%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency, f_oneway
from sklearn.tree import DecisionTreeClassifier

from gpuseg.config import ReportConfig, SegmentsConfig, TagsConfig
from gpuseg.data.panel import Panel, panel_rows
from gpuseg.errors import ConfigError, DataError
from gpuseg.features.aggregates import subscriber_means
from gpuseg.io.store import (
    write_csv_atomic,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)
from gpuseg.segment import classic as seg
from gpuseg.segment.tags import apply_tags, build_tag_frame, key_moments, load_tag_rules

MIGRATION_NAMES = ("down", "stay", "up")
Z95 = 1.959963984540054
CONCENTRATION_TOPS = (0.01, 0.05, 0.1, 0.2)
LORENZ_POINTS = 201
# classic columns kept as numbers in the effect sizes and the decision-tree features
CLASSIC_NUMBERS = ("arpu", "recency", "frequency", "stability", "usage_change", "n_products")
# classic columns one-hot encoded for the decision tree
CLASSIC_CATEGORIES = (
    "value_level",
    "stability_band",
    "rfm_group",
    "lifecycle_stage",
    "contract_group",
    "bundling_profile",
    "usage_profile",
)
PRETTY = {
    "data_mb": "data",
    "voice_min": "voice",
    "roaming_mb": "roaming",
    "sms": "SMS",
    "topups": "top-ups",
    "support_contacts": "support contacts",
    "dropped_calls": "dropped calls",
    "distinct_contacts": "social circle",
    "arpu": "value",
    "revenue": "value",
    "usage_change": "usage trend",
    "tenure_months": "tenure",
    "n_products": "products",
}


# ---------------------------------------------------------------------------------------------
# Per-subscriber inputs


def per_subscriber_tables(
    panel: Panel,
    attributes: pd.DataFrame | None,
    churn_prob: np.ndarray | None,
    segments_cfg: SegmentsConfig,
    tags_cfg: TagsConfig,
    chunk: int = 100_000,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str], list[str]]:
    """Classic segments and tags of every subscriber, computed chunk by chunk.

    Returns (classic, tags, kinds, notes): ``classic`` is
    :func:`gpuseg.segment.classic.classic_segments`
    (with ``churn_prob`` when given) against the cut points of the whole panel; ``tags`` one bool
    column per rule tag, then one per key-moment flag that no rule tag already names; ``kinds``
    tag -> static / dynamic / moment.
    """
    if chunk < 1:
        raise ConfigError(f"report.chunk_size: must be >= 1, got {chunk}")
    attributes = seg.check_attributes(panel, attributes)
    edges = seg.segment_edges(panel, segments_cfg)
    rules = load_tag_rules(tags_cfg.rules)
    n = len(panel)
    probe = key_moments(
        panel_rows(panel, 0, min(n, 1)),
        None if attributes is None else attributes.iloc[: min(n, 1)],
        tags_cfg.moments,
        segments_cfg,
    )
    moments = [c for c in probe.columns if c not in rules.names]
    classic_parts, tag_parts = [], []
    notes: list[str] = []
    for s in range(0, n, chunk):
        sub = panel_rows(panel, s, min(n, s + chunk))
        attr = None if attributes is None else attributes.iloc[s : s + chunk].reset_index(drop=True)
        p = None if churn_prob is None else np.asarray(churn_prob[s : s + chunk])
        classic = seg.classic_segments(sub, attr, segments_cfg, churn_prob=p, edges=edges)
        frame = build_tag_frame(sub, attr, classic, p, segments_cfg, tags_cfg)
        tags = apply_tags(frame, rules)
        for m in moments:
            tags[m] = frame[m].to_numpy(dtype=bool)
        if s == 0:
            notes = list(dict.fromkeys(frame.attrs["notes"] + tags.attrs["notes"]))
        classic["action"] = classic["action"].astype("category")
        classic_parts.append(classic)
        tag_parts.append(tags)
        del frame
    classic = pd.concat(classic_parts) if len(classic_parts) > 1 else classic_parts[0]
    classic["action"] = classic["action"].astype("category")
    tags = pd.concat(tag_parts) if len(tag_parts) > 1 else tag_parts[0]
    kinds = {r.name: r.kind for r in rules.rules} | {m: "moment" for m in moments}
    return classic, tags, kinds, notes


# ---------------------------------------------------------------------------------------------
# Effect sizes and names


def effect_sizes(values: np.ndarray, labels: np.ndarray, k: int, log: bool = True) -> np.ndarray:
    """Standardised mean difference of each column, segment against everyone else, (k, F).

    ``log`` takes log1p(max(v, 0)) first (for skewed usage). The pooled standard deviation is
    sqrt((var_in + var_out) / 2). Computed from per-segment sums, one column at a time.
    """
    values = np.asarray(values)
    labels = np.asarray(labels)
    out = np.zeros((k, values.shape[1]))
    for j in range(values.shape[1]):
        x = np.asarray(values[:, j], dtype=np.float64)
        if log:
            x = np.log1p(np.maximum(x, 0))
        ok = np.isfinite(x)
        x = np.where(ok, x, 0.0)
        cnt = np.bincount(labels, weights=ok.astype(np.float64), minlength=k)[:k]
        s1 = np.bincount(labels, weights=x, minlength=k)[:k]
        s2 = np.bincount(labels, weights=x * x, minlength=k)[:k]
        c_out, s1_out, s2_out = cnt.sum() - cnt, s1.sum() - s1, s2.sum() - s2
        with np.errstate(invalid="ignore", divide="ignore"):
            m_in, m_out = s1 / cnt, s1_out / c_out
            v_in = np.maximum(s2 / cnt - m_in**2, 0.0)
            v_out = np.maximum(s2_out / c_out - m_out**2, 0.0)
            d = (m_in - m_out) / (np.sqrt((v_in + v_out) / 2) + 1e-9)
        out[:, j] = np.where((cnt > 0) & (c_out > 0), d, 0.0)
    return out


def pretty(name: str) -> str:
    base = name.removeprefix("mean_")
    return PRETTY.get(base, base.replace("_", " "))


def segment_name(
    effects: np.ndarray, features: list[str], churn_ratio: float, extra: list[str] | None = None
) -> str:
    """e.g. 'High roaming, high voice, month-to-month, rising risk'.

    The two features with the largest |effect| (at least 0.5 sd), then ``extra`` words (e.g. a
    dominant contract group), then the risk word from the segment's churn over the population's.
    """
    words: list[str] = []
    seen: set[str] = set()
    for j in np.argsort(-np.abs(effects)):
        label = pretty(features[j])
        if abs(effects[j]) < 0.5 or len(words) == 2:
            break
        if label not in seen:  # revenue and ARPU both read "value"
            words.append(f"{'high' if effects[j] > 0 else 'low'} {label}")
            seen.add(label)
    words += list(extra or [])
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


# ---------------------------------------------------------------------------------------------
# Profiles


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (nan, nan) when n is 0."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_ci(x: np.ndarray, z: float = Z95) -> tuple[float, float, float]:
    """(mean, low, high): normal approximation, mean +- z x sd / sqrt(n)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    half = z * float(x.std(ddof=1)) / math.sqrt(len(x))
    return m, m - half, m + half


def effect_features(
    means: np.ndarray, metrics: list[str], classic: pd.DataFrame | None, attributes
) -> tuple[list[np.ndarray], list[str], list[bool]]:
    """Columns the effect sizes are computed over: (arrays, names, log-transform flags)."""
    cols = [means[:, j] for j in range(means.shape[1])]
    names = list(metrics)
    logs = [True] * len(names)
    if classic is not None:
        for c in CLASSIC_NUMBERS:
            if c in classic.columns and c not in names:
                cols.append(classic[c].to_numpy(dtype=np.float64, na_value=np.nan))
                names.append(c)
                logs.append(c == "arpu")
    tenure = seg.attribute_number(attributes, "tenure_months")
    if tenure is not None:
        cols.append(tenure)
        names.append("tenure_months")
        logs.append(False)
    return cols, names, logs


def _mix(values: pd.Series | np.ndarray, labels: np.ndarray, k: int, prefix: str) -> pd.DataFrame:
    """Share of each category per segment, one column ``prefix_<category>`` per category present."""
    s = pd.Series(np.asarray(values, dtype=object)).astype(str)
    tab = pd.crosstab(labels, s, normalize="index").reindex(range(k), fill_value=0.0)
    tab.columns = [f"{prefix}_{c}" for c in tab.columns]
    return tab.reset_index(drop=True)


def profile_tables(
    panel: Panel,
    labels: np.ndarray,
    churn_prob: np.ndarray | None = None,
    segments_cfg: SegmentsConfig | None = None,
    usage_metrics: list[str] | None = None,
    *,
    classic: pd.DataFrame | None = None,
    attributes: pd.DataFrame | None = None,
    means: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(profiles, effects): one row per segment, and (segment, feature, effect, rank) rows.

    Profiles: segment, name, size, share, revenue_share, arpu (+ arpu_lo/arpu_hi), churn_rate
    (actual, labelled subscribers, + churn_rate_lo/hi), churn_pred (mean churn_prob),
    migration_down/stay/up, tenure_median, contract_* and bundle_* mixes (with ``classic``),
    median_<metric> and ``distinguishing`` (top three effects). Without ``classic`` ARPU and revenue
    come from the panel's revenue metric.
    """
    cfg = segments_cfg or SegmentsConfig()
    labels = np.asarray(labels).astype(np.int64)
    k = int(labels.max()) + 1 if len(labels) else 0
    means = subscriber_means(panel) if means is None else means
    metrics = panel.metrics
    if classic is not None:
        sub_arpu = classic["arpu"].to_numpy(dtype=np.float64)
        revenue = classic["revenue"].to_numpy(dtype=np.float64)
    else:
        per_month, _ = seg.periods_per_month(panel, cfg)
        mask = np.asarray(panel.mask)
        rev = seg.revenue_matrix(panel)
        sub_arpu = seg.arpu(rev, mask, per_month)
        revenue = np.where(mask, rev, 0.0).sum(1)
        del rev
    revenue_total = revenue.sum()
    churn = np.asarray(panel.churn)
    migration = np.asarray(panel.migration)
    cols, features, logs = effect_features(means, metrics, classic, attributes)
    effects = np.zeros((k, len(features)))
    for j, (col, lg) in enumerate(zip(cols, logs, strict=True)):
        effects[:, j] = effect_sizes(col[:, None], labels, k, log=lg)[:, 0]
    size = np.bincount(labels, minlength=k)
    known = churn >= 0
    churn_n = np.bincount(labels[known], minlength=k)
    churn_pos = np.bincount(labels[known], weights=churn[known].astype(np.float64), minlength=k)
    base_churn = churn[known].mean() if known.any() else np.nan
    pred_sum = (
        np.bincount(labels, weights=np.asarray(churn_prob, np.float64), minlength=k)
        if churn_prob is not None
        else None
    )
    base_pred = float(np.mean(churn_prob)) if churn_prob is not None and len(labels) else np.nan
    has_mig = migration >= 0
    mig_n = np.bincount(labels[has_mig], minlength=k)
    tenure = seg.attribute_number(attributes, "tenure_months")
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(k + 1))
    shown = [m for m in (usage_metrics or metrics) if m in metrics]

    contract = bundle = None
    dominant: list[list[str]] = [[] for _ in range(k)]
    if classic is not None:
        contract = _mix(classic["contract_group"].to_numpy(), labels, k, "contract")
        bundle = _mix(classic["bundling_profile"].to_numpy(), labels, k, "bundle")
        overall = classic["contract_group"].astype(str).value_counts(normalize=True)
        for c in range(k):
            for col in contract.columns:
                g = col.removeprefix("contract_")
                share = contract.loc[c, col]
                if g != "unknown" and share >= 0.5 and share >= 1.25 * overall.get(g, 0.0):
                    dominant[c].append("prepaid" if g == "prepaid" else f"{g} contract")

    rows = []
    for c in range(k):
        idx = order[bounds[c] : bounds[c + 1]]
        a, lo, hi = mean_ci(sub_arpu[idx])
        rate = churn_pos[c] / churn_n[c] if churn_n[c] else np.nan
        rlo, rhi = wilson(churn_pos[c], churn_n[c])
        row: dict[str, Any] = dict(
            segment=c,
            size=int(size[c]),
            share=float(size[c] / max(len(labels), 1)),
            revenue_share=float(revenue[idx].sum() / revenue_total)
            if revenue_total > 0
            else np.nan,
            arpu=a,
            arpu_lo=lo,
            arpu_hi=hi,
            churn_rate=float(rate),
            churn_rate_lo=rlo,
            churn_rate_hi=rhi,
            churn_pred=float(pred_sum[c] / size[c]) if pred_sum is not None and size[c] else np.nan,
        )
        sel_mig = migration[idx][has_mig[idx]]
        for j, name in enumerate(MIGRATION_NAMES):
            row[f"migration_{name}"] = float((sel_mig == j).mean()) if mig_n[c] else np.nan
        if tenure is not None:
            t = tenure[idx]
            t = t[np.isfinite(t)]
            row["tenure_median"] = float(np.median(t)) if len(t) else np.nan
        for name in shown:
            j = metrics.index(name)
            row[f"median_{name}"] = float(np.median(means[idx, j])) if len(idx) else np.nan
        use_pred = churn_prob is not None
        ref = base_pred if use_pred else base_churn
        risk = row["churn_pred"] if use_pred else row["churn_rate"]
        ratio = risk / ref if ref and ref > 0 and np.isfinite(risk) else 1.0
        row["name"] = segment_name(effects[c], features, ratio, dominant[c])
        top = np.argsort(-np.abs(effects[c]))[:3]
        row["distinguishing"] = "; ".join(f"{features[j]} {effects[c, j]:+.2f}sd" for j in top)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame) and contract is not None:
        frame = pd.concat([frame, contract, bundle], axis=1)
    if len(frame):
        frame = frame[
            ["segment", "name"] + [c for c in frame.columns if c not in ("segment", "name")]
        ]
    eff_rows = []
    for c in range(k):
        for r, j in enumerate(np.argsort(-np.abs(effects[c]))):
            eff_rows.append(
                dict(segment=c, feature=features[j], effect=float(effects[c, j]), rank=r + 1)
            )
    return frame, pd.DataFrame(eff_rows, columns=["segment", "feature", "effect", "rank"])


def segment_profiles(
    panel: Panel,
    labels: np.ndarray,
    churn_prob: np.ndarray | None = None,
    segments_cfg: SegmentsConfig | None = None,
    usage_metrics: list[str] | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """The profiles of :func:`profile_tables` alone."""
    return profile_tables(panel, labels, churn_prob, segments_cfg, usage_metrics, **kwargs)[0]


# ---------------------------------------------------------------------------------------------
# Decision-tree rules


def plain_columns(
    metrics: list[str],
    classic: pd.DataFrame,
    attributes: pd.DataFrame | None,
    id_column: str = "subscriber_id",
) -> list[tuple[str, str, str | None]]:
    """The plain columns a CRM has without the model, as (source, column, one-hot value) specs.

    Per-subscriber metric means (``mean_<metric>``), numeric and yes/no static attributes (text
    attributes with at most 12 values one-hot), the numeric classic columns and one-hot classic
    categories (``<column>=<value>``, for the values present).
    """
    spec: list[tuple[str, str, str | None]] = [("mean", m, None) for m in metrics]
    if attributes is not None:
        for c in attributes.columns:
            if c == id_column:
                continue
            s = attributes[c]
            if pd.api.types.is_numeric_dtype(s) or s.dtype == bool:
                spec.append(("attr", c, None))
            elif s.nunique(dropna=True) <= 12:
                spec += [("attr", c, str(v)) for v in sorted(s.dropna().astype(str).unique())]
    names = {m for m in metrics} | set(attributes.columns if attributes is not None else [])
    spec += [
        ("classic", c, None) for c in CLASSIC_NUMBERS if c in classic.columns and c not in names
    ]
    for c in CLASSIC_CATEGORIES:
        if c in classic.columns:
            spec += [("classic", c, str(v)) for v in sorted(set(classic[c].astype(str).tolist()))]
    return spec


def column_name(spec: tuple[str, str, str | None]) -> str:
    source, col, value = spec
    name = f"mean_{col}" if source == "mean" else col
    return name if value is None else f"{name}={value}"


def plain_matrix(
    spec: list[tuple[str, str, str | None]],
    means: np.ndarray,
    metrics: list[str],
    classic: pd.DataFrame,
    attributes: pd.DataFrame | None,
    start: int,
    stop: int,
) -> np.ndarray:
    """Rows [start, stop) of the plain columns ``spec``, float32; missing values are -1."""
    n = min(stop, len(classic)) - start
    x = np.empty((max(n, 0), len(spec)), dtype=np.float32)
    for j, (source, col, value) in enumerate(spec):
        if source == "mean":
            v = means[start:stop, metrics.index(col)]
        else:
            frame = classic if source == "classic" else attributes
            part = frame[col].iloc[start:stop]
            if value is not None:
                v = (part.astype(str) == value).to_numpy(dtype=np.float32)
            elif source == "attr":
                v = seg.attribute_number(part.to_frame(), col)
            else:
                v = part.to_numpy(dtype=np.float64, na_value=np.nan)
        x[:, j] = v
    x[~np.isfinite(x)] = -1.0
    return x


def _condition_text(name: str, lo: float | None, hi: float | None) -> str:
    if "=" in name:  # one-hot: thresholds at 0.5
        col, value = name.split("=", 1)
        return f"{col} = {value}" if lo is not None else f"{col} != {value}"
    if lo is not None and hi is not None:
        return f"{lo:.4g} < {name} <= {hi:.4g}"
    return f"{name} > {lo:.4g}" if lo is not None else f"{name} <= {hi:.4g}"


def tree_leaf_rules(tree, names: list[str]) -> list[tuple[int, str, int]]:
    """(node, readable path, predicted class) for every leaf of a fitted tree.

    A subtree whose leaves all predict one class is one rule (the split inside it changes no
    prediction), so each path is as short as the tree allows.
    """
    t = tree.tree_
    out = []
    classes: dict[int, set[int]] = {}

    def predicted(node: int) -> set[int]:
        if node not in classes:
            if t.children_left[node] == -1:
                classes[node] = {int(tree.classes_[int(np.argmax(t.value[node][0]))])}
            else:
                classes[node] = predicted(int(t.children_left[node])) | predicted(
                    int(t.children_right[node])
                )
        return classes[node]

    def walk(node: int, bounds: dict[int, list]) -> None:
        only = predicted(node)
        if len(only) == 1:
            parts = [_condition_text(names[f], lo, hi) for f, (lo, hi) in bounds.items()]
            out.append((node, " AND ".join(parts) if parts else "everyone", next(iter(only))))
            return
        f, thr = int(t.feature[node]), float(t.threshold[node])
        lo, hi = bounds.get(f, [None, None])
        left = dict(bounds)
        left[f] = [lo, thr if hi is None else min(hi, thr)]
        right = dict(bounds)
        right[f] = [thr if lo is None else max(lo, thr), hi]
        walk(int(t.children_left[node]), left)
        walk(int(t.children_right[node]), right)

    walk(0, {})
    return out


def segment_rules(
    x_all, labels: np.ndarray, names: list[str], k: int, max_depth: int, sample: int, seed: int
) -> tuple[pd.DataFrame, dict]:
    """Decision-tree rules that recognise each segment from plain columns.

    ``x_all(start, stop)`` returns the feature rows [start, stop) (so the full matrix need not be
    held twice). The tree is fitted on ``sample`` random subscribers and scored on all of them.
    Returns one row per segment (segment, rule: its leaves' paths joined by OR, precision, recall,
    fidelity: the tree's accuracy on all subscribers, leaves) and a summary dict.
    """

    n = len(labels)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, sample), replace=False))
    x = (
        x_all(0, n)[rows]
        if n <= sample
        else np.concatenate(
            [
                x_all(s, min(n, s + 200_000))[rows[(rows >= s) & (rows < s + 200_000)] - s]
                for s in range(0, n, 200_000)
            ]
        )
    )
    tree = DecisionTreeClassifier(
        max_depth=max_depth, min_samples_leaf=max(5, len(rows) // 500), random_state=seed
    ).fit(x, labels[rows])
    del x
    pred = np.empty(n, dtype=np.int64)
    for s in range(0, n, 200_000):
        pred[s : s + 200_000] = tree.predict(x_all(s, min(n, s + 200_000)))
    fidelity = float((pred == labels).mean()) if n else math.nan
    leaves = tree_leaf_rules(tree, names)
    out = []
    for c in range(k):
        paths = [p for _, p, cls in leaves if cls == c]
        tp = int(((pred == c) & (labels == c)).sum())
        predicted, actual = int((pred == c).sum()), int((labels == c).sum())
        out.append(
            dict(
                segment=c,
                rule=" OR ".join(f"({p})" for p in paths) if paths else "(no leaf: not recognised)",
                precision=tp / predicted if predicted else math.nan,
                recall=tp / actual if actual else math.nan,
                fidelity=fidelity,
                leaves=len(paths),
            )
        )
    info = dict(
        fidelity=fidelity,
        max_depth=max_depth,
        fitted_on=len(rows),
        scored_on=n,
        features=len(names),
    )
    return pd.DataFrame(out), info


# ---------------------------------------------------------------------------------------------
# Everything together


@dataclass
class ReportTables:
    """Every table of the report (see :func:`write_report` for the files)."""

    profiles: pd.DataFrame
    effects: pd.DataFrame
    rules: pd.DataFrame
    rules_info: dict
    classic: pd.DataFrame  # per subscriber, indexed by id
    tags: pd.DataFrame  # per subscriber bool flags, indexed by id
    tag_counts: pd.DataFrame
    concentration: dict
    value_stability: pd.DataFrame
    crosstab_value: pd.DataFrame
    crosstab_lifecycle: pd.DataFrame
    quality: dict
    notes: list[str] = field(default_factory=list)


def concentration_table(revenue: np.ndarray) -> dict:
    """Top 1/5/10/20% revenue shares, Gini and the Lorenz curve (at most 201 points).

    Net revenue below zero (refunds, adjustments: data.allow_negative) counts as zero here, and
    ``negative_clipped`` says for how many subscribers (absent when none)."""
    revenue = np.asarray(revenue, dtype=np.float64)
    negative = int((revenue < 0).sum())
    if negative:
        revenue = np.maximum(revenue, 0.0)
    c = seg.value_concentration(revenue, CONCENTRATION_TOPS, n_points=LORENZ_POINTS)
    keys = [f"top_{f * 100:g}pct" for f in CONCENTRATION_TOPS]
    return dict(
        top_share={
            str(f): c["top_share"][key] for f, key in zip(CONCENTRATION_TOPS, keys, strict=True)
        },
        gini=c["gini"],
        lorenz=dict(x=c["lorenz"]["population"], y=c["lorenz"]["revenue"]),
        subscribers=c["n"],
        total_revenue=c["total"],
    ) | (dict(negative_clipped=negative) if negative else {})


def crosstab(labels: np.ndarray, values: pd.Series, k: int) -> pd.DataFrame:
    """Subscriber counts: rows = learned segment, columns = the categories of ``values``."""
    cats = (
        list(values.cat.categories)
        if isinstance(values.dtype, pd.CategoricalDtype)
        else sorted(values.astype(str).unique())
    )
    tab = pd.crosstab(np.asarray(labels), values.astype(str).to_numpy()).reindex(
        index=range(k), columns=cats, fill_value=0
    )
    tab.index.name = "segment"
    tab.columns.name = None
    return tab.reset_index()


def segment_differences(
    profiles: pd.DataFrame, labels: np.ndarray, churn: np.ndarray, arpu
) -> dict:
    """Do segments behave differently? Chi-square test of churn rate x segment, and one-way ANOVA
    of ARPU across segments (p-values; tiny p: the segments differ)."""

    out: dict[str, Any] = {}
    known = churn >= 0
    table = pd.crosstab(labels[known], churn[known]).to_numpy()
    if table.shape[0] >= 2 and table.shape[1] == 2 and (table.sum(0) > 0).all():
        chi2, p, dof, _ = chi2_contingency(table)
        out["churn_chi2"] = dict(statistic=float(chi2), dof=int(dof), p_value=float(p))
    groups = [arpu[labels == c] for c in np.unique(labels)]
    if len(groups) >= 2 and all(len(g) >= 2 for g in groups):
        f, p = f_oneway(*groups)
        out["arpu_anova"] = dict(statistic=float(f), p_value=float(p))
    out["per_segment"] = profiles[
        [
            "segment",
            "size",
            "churn_rate",
            "churn_rate_lo",
            "churn_rate_hi",
            "arpu",
            "arpu_lo",
            "arpu_hi",
        ]
    ].to_dict(orient="records")
    out["ci_method"] = "Wilson score (churn rate), normal approximation (ARPU), 95%"
    return out


def quality_table(cluster_state: dict | None) -> dict:
    """quality.json from the clusterer's state (``cluster.json``)."""
    state = cluster_state or {}
    scores = [
        dict(k=s["k"], silhouette=s.get("silhouette"), davies_bouldin=s.get("davies_bouldin"))
        for s in state.get("scores", [])
    ]
    ari = [float(v) for v in state.get("stability_ari", [])]
    return dict(
        algorithm=state.get("algorithm"),
        k_scores=scores,
        chosen_k=state.get("k"),
        reason=state.get("reason", ""),
        stability_ari=dict(
            mean=float(np.mean(ari)) if ari else None,
            min=float(np.min(ari)) if ari else None,
            values=ari,
        ),
    )


def build_report(
    panel: Panel,
    attributes: pd.DataFrame | None,
    labels: np.ndarray,
    churn_prob: np.ndarray | None,
    report_cfg: ReportConfig | None = None,
    segments_cfg: SegmentsConfig | None = None,
    tags_cfg: TagsConfig | None = None,
    cluster_state: dict | None = None,
) -> ReportTables:
    """Every table of the report from a panel, its attributes, segments and churn probabilities."""
    rcfg = report_cfg or ReportConfig()
    scfg = segments_cfg or SegmentsConfig()
    tcfg = tags_cfg or TagsConfig()
    labels = np.asarray(labels).astype(np.int64)
    if len(labels) != len(panel):
        raise DataError(f"{len(labels)} segment labels for {len(panel)} subscribers")
    if rcfg.tree_max_depth < 1 or rcfg.tree_sample < 2:
        raise ConfigError(
            f"report.tree_max_depth must be >= 1 and report.tree_sample >= 2, got "
            f"{rcfg.tree_max_depth} and {rcfg.tree_sample}"
        )
    k = int(labels.max()) + 1 if len(labels) else 0
    attributes = seg.check_attributes(panel, attributes)
    classic, tags, kinds, notes = per_subscriber_tables(
        panel, attributes, churn_prob, scfg, tcfg, rcfg.chunk_size
    )
    means = subscriber_means(panel)
    profiles, effects = profile_tables(
        panel,
        labels,
        churn_prob,
        scfg,
        rcfg.usage_metrics,
        classic=classic,
        attributes=attributes,
        means=means,
    )
    id_col = panel.meta.get("id_column", "subscriber_id")
    spec = plain_columns(panel.metrics, classic, attributes, id_col)
    rules, rules_info = segment_rules(
        lambda s, e: plain_matrix(spec, means, panel.metrics, classic, attributes, s, e),
        labels,
        [column_name(c) for c in spec],
        k,
        rcfg.tree_max_depth,
        rcfg.tree_sample,
        rcfg.seed,
    )
    n = len(panel)
    tag_counts = pd.DataFrame(
        dict(
            tag=list(tags.columns),
            kind=[kinds[t] for t in tags.columns],
            subscribers=[int(tags[t].sum()) for t in tags.columns],
        )
    )
    tag_counts["share"] = tag_counts["subscribers"] / max(n, 1)
    vs = seg.value_stability_matrix(classic, churn_prob, scfg.value_levels).rename(
        columns={"share_revenue": "revenue_share", "mean_churn_risk": "mean_churn_prob"}
    )
    vs = vs[
        [
            "value_level",
            "stability_band",
            "subscribers",
            "share_subscribers",
            "revenue",
            "revenue_share",
            "arpu",
            "mean_churn_prob",
            "priority",
            "action",
        ]
    ]
    quality = quality_table(cluster_state)
    quality["segments_differ"] = segment_differences(
        profiles, labels, np.asarray(panel.churn), classic["arpu"].to_numpy()
    )
    return ReportTables(
        profiles=profiles,
        effects=effects,
        rules=rules,
        rules_info=rules_info,
        classic=classic,
        tags=tags,
        tag_counts=tag_counts,
        concentration=concentration_table(classic["revenue"].to_numpy()),
        value_stability=vs,
        crosstab_value=crosstab(labels, classic["value_level"], k),
        crosstab_lifecycle=crosstab(labels, classic["lifecycle_stage"], k),
        quality=quality,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# Files


def markdown_table(frame: pd.DataFrame, cols: list[str] | None = None, digits: int = 3) -> str:
    """A Markdown table; floats with ``digits`` decimals (thousands separators from 100 up)."""
    cols = list(frame.columns) if cols is None else cols
    lines = [
        "| " + " | ".join(map(str, cols)) + " |",
        "| " + " | ".join("---" for _ in cols) + " |",
    ]
    for row in frame[cols].itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, (float, np.floating)):
                cells.append(
                    "" if np.isnan(v) else f"{v:.{digits}f}" if abs(v) < 100 else f"{v:,.0f}"
                )
            else:
                cells.append(str(v).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def profiles_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A Markdown table of the profiles (the main columns only)."""
    skip = ("median_", "contract_", "bundle_", "migration_")
    cols = [c for c in frame.columns if not c.startswith(skip) and c != "distinguishing"]
    cols += [c for c in frame.columns if c.startswith("median_")][:4]
    return markdown_table(frame, cols, digits)


def _p(value: float) -> str:
    return "p < 1e-300" if value < 1e-300 else f"p = {value:.3g}"


def report_markdown(t: ReportTables) -> str:
    """report.md: every table of the report, with a line on how to read each."""
    c = t.concentration
    q = t.quality
    top = ", ".join(f"top {float(f) * 100:g}%: {v:.1%}" for f, v in c["top_share"].items())
    eff = t.effects[t.effects["rank"] <= 5]
    mig_cols = [c_ for c_ in t.profiles.columns if c_.startswith("migration_")]
    has_migration = bool(mig_cols) and bool(t.profiles[mig_cols].notna().any().any())
    parts = [
        "# Segment report\n",
        "## Learned segments\n",
        "Size, revenue share, ARPU and churn (actual, on labelled subscribers; predicted: mean"
        " churn probability), with 95% intervals: Wilson score for the churn rate, normal"
        " approximation for the ARPU.\n",
        markdown_table(
            t.profiles,
            [
                c_
                for c_ in (
                    "segment",
                    "name",
                    "size",
                    "share",
                    "revenue_share",
                    "arpu",
                    "arpu_lo",
                    "arpu_hi",
                    "churn_rate",
                    "churn_rate_lo",
                    "churn_rate_hi",
                    "churn_pred",
                    "tenure_median",
                )
                if c_ in t.profiles.columns
            ],
        ),
        "\nMigration, contract and bundle mix and usage medians"
        + ("" if has_migration else " (migration: no labels)")
        + ":\n",
        markdown_table(
            t.profiles,
            ["segment"]
            + [
                c_
                for c_ in t.profiles.columns
                if c_.startswith(("contract_", "bundle_", "median_"))
                or (has_migration and c_.startswith("migration_"))
            ],
        ),
        "\n## What sets each segment apart\n",
        "Standardised mean difference (segment vs everyone else; usage and ARPU on a log scale),"
        " top five per segment.\n",
        markdown_table(eff, ["segment", "rank", "feature", "effect"], 2),
        "\n## Rules a CRM can apply\n",
        f"Decision tree of depth {t.rules_info['max_depth']} on plain columns, fitted on"
        f" {t.rules_info['fitted_on']:,} subscribers, scored on all {t.rules_info['scored_on']:,}:"
        f" fidelity (share of subscribers the rules put in their learned segment)"
        f" {t.rules_info['fidelity']:.1%}. Missing values read as -1.\n",
        markdown_table(t.rules, ["segment", "precision", "recall", "rule"]),
        "\n## Segment quality\n",
        f"{q['reason']}\n",
    ]
    if q["k_scores"] and q["k_scores"][0].get("silhouette") is not None:
        parts.append(
            markdown_table(pd.DataFrame(q["k_scores"]), ["k", "silhouette", "davies_bouldin"])
        )
    ari = q["stability_ari"]
    if ari["values"]:
        parts.append(
            f"\nStability over {len(ari['values'])} re-fits on bootstrap samples: adjusted Rand"
            f" index mean {ari['mean']:.3f}, min {ari['min']:.3f}.\n"
        )
    diff = q.get("segments_differ", {})
    if "churn_chi2" in diff:
        parts.append(
            f"\nDo segments behave differently? Churn rate x segment, chi-square"
            f" {_p(diff['churn_chi2']['p_value'])}."
        )
    if "arpu_anova" in diff:
        parts.append(f"ARPU across segments, one-way ANOVA {_p(diff['arpu_anova']['p_value'])}.")
    parts += [
        "\n## Value concentration\n",
        f"Revenue share of the highest-revenue subscribers: {top}. Gini {c['gini']:.3f}.\n",
        "\n## Value x stability\n",
        "Operation priority per cell (1 = where retention money goes first).\n",
        markdown_table(t.value_stability),
        "\n## Learned segments x value level (subscribers)\n",
        markdown_table(t.crosstab_value),
        "\n## Learned segments x lifecycle stage (subscribers)\n",
        markdown_table(t.crosstab_lifecycle),
        "\n## Tags\n",
        markdown_table(t.tag_counts),
    ]
    if t.notes:
        parts += ["\n## Notes\n"] + [f"- {n}\n" for n in t.notes]
    return "\n".join(parts)


def write_report(t: ReportTables, out_dir: str | Path, id_column: str = "subscriber_id") -> Path:
    """Write the report directory (atomic files): segments.csv|md, effects.csv, rules.csv,
    classic.parquet, tags.parquet, tags.csv, concentration.json, value_stability.csv,
    crosstab_value.csv, crosstab_lifecycle.csv, quality.json and report.md."""
    out = Path(out_dir)
    write_csv_atomic(out / "segments.csv", t.profiles)
    write_text_atomic(out / "segments.md", "# Segments\n\n" + profiles_markdown(t.profiles))
    write_csv_atomic(out / "effects.csv", t.effects)
    write_csv_atomic(out / "rules.csv", t.rules)
    classic = t.classic.reset_index()
    classic = classic.rename(columns={classic.columns[0]: id_column})
    write_parquet_atomic(out / "classic.parquet", classic)
    tags = t.tags.reset_index()
    write_parquet_atomic(out / "tags.parquet", tags.rename(columns={tags.columns[0]: id_column}))
    write_csv_atomic(out / "tags.csv", t.tag_counts)
    write_json_atomic(out / "concentration.json", t.concentration)
    write_csv_atomic(out / "value_stability.csv", t.value_stability)
    write_csv_atomic(out / "crosstab_value.csv", t.crosstab_value)
    write_csv_atomic(out / "crosstab_lifecycle.csv", t.crosstab_lifecycle)
    write_json_atomic(out / "quality.json", t.quality | {"rules": t.rules_info, "notes": t.notes})
    write_text_atomic(out / "report.md", report_markdown(t))
    return out
