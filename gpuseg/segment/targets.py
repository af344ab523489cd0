"""Retention campaign targets: who to contact, picked by learned segment, tag and churn risk.

:func:`select_targets` reads a finished run directory (``panel/``, ``predictions.parquet``,
``segments.parquet`` and, when present, ``config.yaml``) and returns one row per selected
subscriber, ranked by expected value saved = churn probability x value, where value is a classic
segment column (ARPU by default) times ``horizon_months`` when given.

The contact policy is applied to every candidate and is conservative: a subscriber without
marketing consent is excluded, and so is one in do-not-disturb; a missing consent value counts as
no consent and a missing do-not-disturb value counts as do-not-disturb (a data set without either
column excludes everyone). Steps, and the counts in ``frame.attrs["counts"]``:

1. ``candidates``: subscribers in the requested segments carrying the requested tags;
2. ``excluded_no_consent``: candidates without marketing consent;
   ``excluded_dnd``: the remaining candidates in do-not-disturb (so a subscriber with neither is
   counted once, as no consent); ``excluded`` is their sum;
3. ``below_min_risk``: contactable candidates with churn probability below ``min_risk``;
4. ``cut_by_top``: those ranked below ``top``;
5. ``selected``: the rows returned.

``candidates = excluded + below_min_risk + cut_by_top + selected`` always holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from gpuseg.config import RunConfig, load_config
from gpuseg.data.panel import load_attributes, load_panel
from gpuseg.errors import ConfigError, RunDirError
from gpuseg.io.formats import table_format
from gpuseg.io.store import read_parquet_checked, require, write_csv_atomic, write_parquet_atomic
from gpuseg.segment import classic as seg
from gpuseg.segment.tags import apply_tags, build_tag_frame, load_tag_rules

TAG_MODES = ("any", "all")


def _run_config(run_dir: Path) -> RunConfig:
    path = run_dir / "config.yaml"
    return load_config(path) if path.is_file() else load_config(None)


def read_aligned(path: Path, ids: np.ndarray, id_col: str, column: str) -> pd.Series:
    """``column`` of the parquet at ``path``, reindexed to the panel ids (RunDirError on gaps)."""
    frame = read_parquet_checked(
        path, [id_col, column], numeric=(column,), what="run `gpuseg run` (or its stages) first"
    )
    keys = frame[id_col].astype(str)
    if keys.duplicated().any():  # the row is named, never the id
        row = int(np.flatnonzero(keys.duplicated().to_numpy())[0]) + 1
        raise RunDirError(f"{path}: row {row}: duplicate {id_col}")
    s = pd.Series(frame[column].to_numpy(), index=keys.to_numpy()).reindex(ids)
    if s.isna().any():
        missing = np.flatnonzero(s.isna().to_numpy())
        raise RunDirError(
            f"{path}: no {column} for {len(missing):,} panel subscribers (first: panel row "
            f"{int(missing[0]) + 1}); the run directory is incomplete"
        )
    return s


def segment_names(run_dir: Path) -> dict[int, str]:
    """Segment id -> its name in the run's report (``report/segments.csv``); empty before the
    report stage has run."""
    path = Path(run_dir) / "report" / "segments.csv"
    if not path.is_file():
        return {}
    frame = pd.read_csv(path, usecols=lambda c: c in ("segment", "name"))
    if not {"segment", "name"} <= set(frame.columns):
        return {}
    return {int(k): str(v) for k, v in zip(frame["segment"], frame["name"], strict=True)}


def _names(values: Iterable | None) -> list:
    if values is None:
        return []
    if isinstance(values, (str, int)):
        values = [values]
    return list(dict.fromkeys(values))


def select_targets(
    run_dir: str | Path,
    segments: Iterable[int] | None = None,
    tags: Iterable[str] | None = None,
    tag_mode: str = "any",
    min_risk: float = 0.0,
    top: int | None = None,
    value_column: str = "arpu",
    horizon_months: float | None = None,
    tag_rules: str | Path | None = None,
) -> pd.DataFrame:
    """Retention targets of a run directory, best first (see the module docstring).

    ``segments``: learned segment ids to keep (None: all). ``tags``: tag names (of the run's rule
    file, or ``tag_rules``) a subscriber must carry, ``any`` or ``all`` of them per ``tag_mode``.
    ``min_risk``: lowest churn probability kept. ``top``: at most this many rows. ``value_column``:
    a numeric column of
    :func:`gpuseg.segment.classic.classic_segments` (arpu, revenue, ...); value is it
    times ``horizon_months`` when given.

    Returns columns rank, <id column>, segment, segment_name (from the report; empty before it),
    churn_prob, value, expected_value_saved, tags (the
    matched requested tags, or every tag the subscriber carries when no tags were requested,
    comma-separated) and reason; ``attrs["counts"]`` holds the step counts and ``attrs["filters"]``
    the arguments. Unknown segment ids, tag names or value column raise ConfigError; a run
    directory without panel, predictions or segments raises RunDirError.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: not a run directory")
    if tag_mode not in TAG_MODES:
        raise ConfigError(f"tag mode: {tag_mode!r} is not one of {', '.join(TAG_MODES)}")
    min_risk = float(min_risk)
    if not 0.0 <= min_risk <= 1.0:
        raise ConfigError(f"min_risk: must be between 0 and 1, got {min_risk}")
    if top is not None and (isinstance(top, bool) or int(top) != top or top < 0):
        raise ConfigError(f"top: must be a non-negative integer, got {top!r}")
    if horizon_months is not None and not (np.isfinite(horizon_months) and horizon_months > 0):
        raise ConfigError(f"horizon_months: must be > 0, got {horizon_months}")
    want_segments = _names(segments)
    want_tags = _names(tags)

    cfg = _run_config(run_dir)
    panel_dir = run_dir / "panel"
    require(panel_dir / "meta.json", "run `gpuseg prepare` first")
    require(run_dir / "predictions.parquet", "run `gpuseg embed` first")
    require(run_dir / "segments.parquet", "run `gpuseg cluster` first")
    panel = load_panel(panel_dir)
    id_col = panel.meta.get("id_column", "subscriber_id")
    ids = np.asarray(panel.ids).astype(str)
    attributes = (
        load_attributes(panel_dir) if (panel_dir / "attributes.parquet").is_file() else None
    )
    churn = read_aligned(run_dir / "predictions.parquet", ids, id_col, "churn_prob").to_numpy(float)
    segment = read_aligned(run_dir / "segments.parquet", ids, id_col, "segment").to_numpy()
    segment = segment.astype(np.int64)

    known_segments = sorted(set(segment.tolist()))
    try:
        want_segments = [int(s) for s in want_segments]
    except (TypeError, ValueError):
        raise ConfigError(f"segments: expected integer ids, got {want_segments!r}") from None
    unknown = [s for s in want_segments if s not in known_segments]
    if unknown:
        raise ConfigError(
            f"unknown segment id(s) {', '.join(map(str, unknown))} "
            f"(this run has {', '.join(map(str, known_segments))})"
        )

    rules = load_tag_rules(tag_rules if tag_rules is not None else cfg.tags.rules)
    unknown = [t for t in want_tags if t not in rules.names]
    if unknown:
        raise ConfigError(
            f"unknown tag(s) {', '.join(map(str, unknown))} (known: {', '.join(rules.names)})"
        )

    frame = build_tag_frame(panel, attributes, None, churn, cfg.segments, cfg.tags)
    if value_column not in frame.columns or value_column in rules.names:
        raise ConfigError(
            f"value column '{value_column}' not in the segment frame (e.g. arpu, revenue)"
        )
    if not pd.api.types.is_numeric_dtype(frame[value_column]) or frame[value_column].dtype == bool:
        raise ConfigError(f"value column '{value_column}' is not numeric")
    base = frame[value_column].to_numpy(dtype=float, na_value=np.nan)
    base = np.where(np.isfinite(base), base, 0.0)
    value = base * horizon_months if horizon_months is not None else base
    saved = churn * value
    tag_table = apply_tags(frame, rules)

    n = len(ids)
    keep = np.isin(segment, want_segments) if want_segments else np.ones(n, dtype=bool)
    if want_tags:
        hits = tag_table[want_tags].to_numpy(dtype=bool)
        keep &= hits.all(axis=1) if tag_mode == "all" else hits.any(axis=1)
        shown = want_tags
    else:
        shown = list(rules.names)

    attributes = seg.check_attributes(panel, attributes)
    consent = seg.attribute_number(attributes, "marketing_consent")
    dnd = seg.attribute_number(attributes, "do_not_disturb")
    consent = np.zeros(n) if consent is None else np.nan_to_num(consent, nan=0.0)
    dnd = np.ones(n) if dnd is None else np.nan_to_num(dnd, nan=1.0)
    no_consent = consent == 0
    in_dnd = (dnd != 0) & ~no_consent

    counts = {"candidates": int(keep.sum())}
    counts["excluded_no_consent"] = int((keep & no_consent).sum())
    counts["excluded_dnd"] = int((keep & in_dnd).sum())
    counts["excluded"] = counts["excluded_no_consent"] + counts["excluded_dnd"]
    keep &= ~no_consent & ~in_dnd
    risky = churn >= min_risk
    counts["below_min_risk"] = int((keep & ~risky).sum())
    keep &= risky

    rows = np.flatnonzero(keep)
    order = np.lexsort((ids[rows], -churn[rows], -saved[rows]))  # last key is primary
    rows = rows[order]
    counts["cut_by_top"] = max(len(rows) - int(top), 0) if top is not None else 0
    if top is not None:
        rows = rows[: int(top)]
    counts["selected"] = len(rows)

    flags = tag_table[shown].to_numpy(dtype=bool)[rows] if shown else np.zeros((len(rows), 0))
    matched = [",".join(t for t, f in zip(shown, row, strict=True) if f) for row in flags]
    names = segment_names(run_dir)
    out = pd.DataFrame(
        {
            "rank": np.arange(1, len(rows) + 1, dtype=np.int64),
            id_col: ids[rows],
            "segment": segment[rows],
            "segment_name": [names.get(int(s), "") for s in segment[rows]],
            "churn_prob": churn[rows],
            "value": value[rows],
            "expected_value_saved": saved[rows],
            "tags": matched,
        }
    )
    out["reason"] = [
        _reason(s, n, t, p, min_risk, b, v, e, value_column, horizon_months)
        for s, n, t, p, b, v, e in zip(
            out["segment"],
            out["segment_name"],
            out["tags"],
            out["churn_prob"],
            base[rows],
            out["value"],
            out["expected_value_saved"],
            strict=True,
        )
    ]
    out.attrs["counts"] = counts
    out.attrs["filters"] = {
        "segments": want_segments,
        "tags": want_tags,
        "tag_mode": tag_mode,
        "min_risk": min_risk,
        "top": top,
        "value_column": value_column,
        "horizon_months": horizon_months,
    }
    return out


def _reason(
    segment: int,
    name: str,
    tags: str,
    prob: float,
    min_risk: float,
    base: float,
    value: float,
    saved: float,
    value_column: str,
    horizon_months: float | None,
) -> str:
    parts = [f"segment {segment}" + (f" ({name})" if name else "")]
    if tags:
        parts.append(f"tags {tags}")
    parts.append(f"churn risk {prob:.2f} >= {min_risk:.2f}")
    if horizon_months is not None:
        parts.append(f"value {value:.1f} ({value_column} {base:.2f} x {horizon_months:g} months)")
    else:
        parts.append(f"value {value:.1f} ({value_column})")
    parts.append(f"expected value saved {saved:.1f}")
    return "; ".join(parts)


def write_targets(frame: pd.DataFrame, out_path: str | Path) -> Path:
    """Write ``frame`` atomically as CSV (``.csv``) or Parquet (``.parquet``/``.pq``).

    Written rounded, for people and spreadsheets: churn_prob to 4 decimals, value and
    expected_value_saved to 2 (the ranking was done on the full values)."""
    path = Path(out_path)
    frame = frame.round({"churn_prob": 4, "value": 2, "expected_value_saved": 2})
    kind = table_format(path)
    if kind == "csv" and path.suffix.lower() == ".csv":
        return write_csv_atomic(path, frame)
    if kind == "parquet":
        return write_parquet_atomic(path, frame)
    got = path.suffix.lower() or path.name
    raise ConfigError(f"{path}: output must end in .csv or .parquet, got '{got}'")


def counts_line(counts: dict) -> str:
    """One human line of the step counts, for the CLI."""
    return (
        f"candidates {counts['candidates']:,} = selected {counts['selected']:,}"
        f" + excluded {counts['excluded']:,} (no consent {counts['excluded_no_consent']:,},"
        f" do-not-disturb {counts['excluded_dnd']:,})"
        f" + below min risk {counts['below_min_risk']:,} + cut by top {counts['cut_by_top']:,}"
    )


__all__ = ["select_targets", "write_targets", "counts_line", "segment_names"]
