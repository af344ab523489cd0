"""Usage layouts in memory: a long table (subscriber, period, metrics), a wide one (one column per
metric and period) or a table (one row per subscriber, no period) as (N, T, M) arrays, with values
checked on the backend's frames.

What a raw export may hold, and what happens to it (each reported in the panel's
``meta["data_report"]`` and the prepare summary):

- ids: text exactly as written (see :mod:`gpuseg.io.tables`); table layout with
  ``data.id_column: null``: the row numbers "1", "2", ...
- missing cells (``data.missing_markers``, NaN): ``data.fill`` per metric, ``error`` (stop naming
  the cell; the default), ``zero`` or ``ffill`` (the previous present period's value, 0 before
  the first); cells filled are counted per metric. In the wide layout a period is present when
  any of its cells is; a period with every cell missing is absent (as a missing row is in long).
- negative values: allowed for the metrics in ``data.allow_negative``, or when that is unset for
  revenue-like names (``data.negative_pattern``); in the table layout for every metric. Negative
  cells kept are counted per metric. Any other negative value stops prepare.
- wide columns matching ``data.wide_pattern`` whose values are dates: left out, listed.
- table layout: numeric columns without missing cells (and the revenue metric, and columns with
  a fill policy) are the metrics of one period ``"1"``; text, booleans and numeric columns with
  missing cells are static attributes (numbers with a ``_missing`` flag, categories one-hot); the
  churn and migration columns are labels, never features.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpuseg.backend import Backend
from gpuseg.config import DataConfig
from gpuseg.data.periods import check_spacing, parse_periods_typed, period_labels
from gpuseg.data.privacy import pseudonymize_ids
from gpuseg.data.static import check_magnitude
from gpuseg.errors import DataError
from gpuseg.io.sniff import show_columns
from gpuseg.io.tables import read_table


def _host(series) -> np.ndarray:
    return series.to_numpy() if hasattr(series, "to_numpy") else np.asarray(series)


def first_true_row(flags) -> int:
    """1-based data row of the first True in a boolean series."""
    return int(np.flatnonzero(_host(flags))[0]) + 1


def numeric_column(
    frame,
    column: str,
    path: Path,
    xdf,
    row_offset: int = 0,
    nan_ok: bool = False,
    negative_ok: bool = False,
) -> Any:
    """The column as float64; non-numeric and infinite values raise DataError, and so do missing
    values (unless ``nan_ok``: they stay NaN, for the fill policy) and negative ones (unless
    ``negative_ok``).

    ``row_offset`` is the file row of the frame's first row minus one (for chunked reading).
    """
    col = frame[column]
    if col.dtype == bool or str(col.dtype) == "boolean":
        col = col.astype("float64")
    if not xdf.api.types.is_numeric_dtype(col.dtype):
        coerced = xdf.to_numeric(col, errors="coerce")
        bad = coerced.isna() & col.notna()
        if bool(bad.any()):
            row = first_true_row(bad) + row_offset
            raise DataError(f"{path}: column '{column}' row {row}: non-numeric value")
        col = coerced
    col = col.astype("float64")
    values = _host(col)
    if not nan_ok and np.isnan(values).any():
        row = int(np.flatnonzero(np.isnan(values))[0]) + 1 + row_offset
        raise DataError(
            f"{path}: column '{column}' row {row}: missing value (NaN); drop the row or set "
            "data.fill (zero or ffill)"
        )
    check_magnitude(values, path, column, row_offset)
    if not negative_ok and (values < 0).any():
        row = int(np.flatnonzero(values < 0)[0]) + 1 + row_offset
        raise DataError(
            f"{path}: column '{column}' row {row}: negative usage value (allow it with "
            "data.allow_negative)"
        )
    return values


def fill_policy(cfg: DataConfig, metric: str) -> str:
    """``data.fill`` for one metric: its own entry, else ``default``."""
    return cfg.fill.get(metric, cfg.fill.get("default", "error"))


def negative_ok(cfg: DataConfig, metric: str) -> bool:
    """Whether ``metric`` may be negative: listed in ``data.allow_negative``, or, when that is
    unset, its name matches ``data.negative_pattern`` (revenue-like: ARPU, charges, adjustments);
    in the table layout (attributes, percent changes) every metric when it is unset."""
    if cfg.allow_negative is not None:
        return metric in cfg.allow_negative
    if cfg.layout == "table":
        return True
    return re.search(cfg.negative_pattern, metric, flags=re.IGNORECASE) is not None


def metric_matrix(frame, metrics: dict, cfg: DataConfig, path, xdf) -> np.ndarray:
    """(rows, metrics) float32 of the ``metrics`` columns (name -> column), each checked by
    :func:`numeric_column` under its fill and negative-value policies."""
    return np.stack(
        [
            numeric_column(
                frame, col, path, xdf, nan_ok=fill_policy(cfg, name) != "error",
                negative_ok=negative_ok(cfg, name),
            )
            for name, col in metrics.items()
        ],
        axis=1,
    ).astype(np.float32)  # fmt: skip


def negative_cells(usage: np.ndarray, mask: np.ndarray, metrics: list[str]) -> dict[str, int]:
    """Cells below zero per metric (present periods only; metrics without any left out)."""
    neg = (np.asarray(usage) < 0) & np.asarray(mask, dtype=bool)[:, :, None]  # (B, T, M)
    counts = neg.sum(axis=(0, 1))
    return {m: int(n) for m, n in zip(metrics, counts, strict=True) if n}


def apply_fill(
    usage: np.ndarray, mask: np.ndarray, metrics: list[str], cfg: DataConfig
) -> dict[str, int]:
    """Fill the NaN cells of ``usage`` (B, T, M) in place by each metric's ``data.fill`` policy
    (``zero``; ``ffill``: the previous present period's value, 0 before the first); cells of
    absent periods become 0. Returns the cells filled per metric (present periods only)."""
    counts: dict[str, int] = {}
    present = np.asarray(mask, dtype=bool)
    for j, metric in enumerate(metrics):
        v = usage[:, :, j]
        miss = np.isnan(v)
        if not miss.any():
            continue
        filled = int((miss & present).sum())
        if fill_policy(cfg, metric) == "ffill":
            prev = np.zeros(v.shape[0], dtype=v.dtype)
            for t in range(v.shape[1]):
                v[:, t] = np.where(miss[:, t], prev, v[:, t])
                prev = np.where(present[:, t], v[:, t], prev)
        v[np.isnan(v) | ~present] = 0.0
        if filled:
            counts[metric] = filled
    return counts


def metric_columns(
    cfg: DataConfig, columns: list[str], exclude: set[str], path: Path, xdf, frame
) -> dict[str, str]:
    if cfg.metrics:
        for name, col in cfg.metrics.items():
            if col not in columns:
                raise DataError(
                    f"{path}: column '{col}' (metric '{name}' in data.metrics) not found; "
                    f"{show_columns(columns)}"
                )
        return dict(cfg.metrics)
    numeric = [c for c in columns if c not in exclude]
    if not numeric:
        raise DataError(
            f"{path}: no metric columns besides '{cfg.id_column}' and '{cfg.period_column}'"
        )
    return {c: c for c in numeric}


def _required_ids(frame, cfg: DataConfig, path: Path) -> Any:
    ids_col = frame[cfg.id_column]
    if bool(ids_col.isna().any()):
        raise DataError(
            f"{path}: column '{cfg.id_column}' row {first_true_row(ids_col.isna())}: missing "
            "subscriber id"
        )
    return ids_col


Loaded = tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str], dict]


def load_long(cfg: DataConfig, backend: Backend) -> Loaded:
    """Long layout -> (ids (N,), usage (N, T, M), mask (N, T), metric names, period labels, info).

    ``info["report"]`` is what the prepare summary states (cells filled per metric, ...);
    ``info["inline"]`` (table layout) the static attributes and labels read from the table."""
    path = Path(cfg.usage)
    xdf = backend.frame_module()
    frame = read_table(
        path, backend, "usage", cfg.id_column, cfg.missing_markers, (cfg.period_column,)
    )
    columns = [str(c) for c in frame.columns]
    for key, col in (("data.id_column", cfg.id_column), ("data.period_column", cfg.period_column)):
        if col not in columns:
            raise DataError(f"{path}: column '{col}' ({key}) not found; {show_columns(columns)}")
    metrics = metric_columns(cfg, columns, {cfg.id_column, cfg.period_column}, path, xdf, frame)
    values = metric_matrix(frame, metrics, cfg, path, xdf)

    ids_col = _required_ids(frame, cfg, path)
    raw_periods = _host(frame[cfg.period_column])
    period_keys, is_date = parse_periods_typed(raw_periods, path, cfg.period_column)
    check_spacing(period_keys, is_date, path, cfg.period_column)

    # factorize ids (sorted, so the panel order does not depend on the row order) and periods
    sub_codes, sub_uniques = xdf.factorize(ids_col.astype("str"), sort=True)
    sub_codes = np.asarray(backend.to_numpy(sub_codes), dtype=np.int64)
    ids = np.asarray(backend.to_numpy(sub_uniques)).astype(str)
    if cfg.pseudonymize:  # keyed-hash IDs, re-sorted so the panel order is by pseudonym
        ids = pseudonymize_ids(ids, cfg, path)
        order = np.argsort(ids)
        ids, sub_codes = ids[order], np.argsort(order)[sub_codes]
    per_uniques, per_codes = np.unique(period_keys, return_inverse=True)

    key = sub_codes * len(per_uniques) + per_codes
    order = np.argsort(key, kind="stable")
    dup = np.flatnonzero(key[order][1:] == key[order][:-1])
    if len(dup):
        row = int(order[dup[0] + 1]) + 1
        raise DataError(f"{path}: row {row}: duplicate (subscriber, period) row")

    n, t, m = len(ids), len(per_uniques), len(metrics)
    usage = np.zeros((n, t, m), dtype=np.float32)
    mask = np.zeros((n, t), dtype=bool)
    usage[sub_codes, per_codes] = values
    mask[sub_codes, per_codes] = True
    filled = apply_fill(usage, mask, list(metrics), cfg) if np.isnan(values).any() else {}
    info = dict(report=dict(filled=filled))
    return ids, usage, mask, list(metrics), period_labels(per_uniques, is_date), info


def is_date_column(col) -> bool:
    """Whether a column holds dates: a datetime dtype, or text whose present values all parse as
    dates (``2014-06-27``, ``6/27/2014``); numbers never count as dates."""
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        return True
    if col.dtype != object and str(col.dtype) not in ("str", "string"):
        return False
    text = col.dropna().astype(str).str.strip()
    text = text[text != ""].head(200)
    if text.empty or text.str.fullmatch(r"[-+]?\d*\.?\d+([eE][-+]?\d+)?").any():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format": expected for odd strings
        parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    return bool(parsed.notna().all())


def load_wide(cfg: DataConfig, backend: Backend) -> Loaded:
    """Wide layout (one column per metric and period, e.g. ``arpu_6``) -> same as load_long.

    A period is present for a subscriber when any of its metric cells is; missing cells of a
    present period follow ``data.fill`` (``error``: stop naming the cell). Columns matching the
    pattern whose values are dates (``date_of_last_rech_6``) are left out and reported.
    """
    path = Path(cfg.usage)
    xdf = backend.frame_module()
    frame = read_table(path, backend, "usage", cfg.id_column, cfg.missing_markers)
    columns = [str(c) for c in frame.columns]
    if cfg.id_column not in columns:
        raise DataError(f"{path}: column '{cfg.id_column}' (data.id_column) not found")
    try:
        pattern = re.compile(cfg.wide_pattern)
    except re.error as exc:
        raise DataError(f"data.wide_pattern: invalid regex ({exc})") from None
    cells: dict[tuple[str, int], str] = {}
    date_columns: list[str] = []
    for c in columns:
        match = pattern.match(c)
        if match and c != cfg.id_column:
            try:
                key = (match.group("metric"), int(match.group("period")))
            except (IndexError, ValueError):
                raise DataError(
                    "data.wide_pattern: needs named groups 'metric' and 'period' (digits)"
                ) from None
            col = frame[c]
            if is_date_column(col.to_pandas() if hasattr(col, "to_pandas") else col):
                date_columns.append(c)
                continue
            cells[key] = c
    found = sorted({mt for mt, _ in cells})
    metrics = cfg.metrics or {mt: mt for mt in found}
    for name, prefix in metrics.items():
        if prefix not in found:
            raise DataError(
                f"{path}: no columns match metric '{prefix}' (metric '{name}') with "
                "data.wide_pattern"
            )
    periods = sorted({p for _, p in cells})
    ids_col = _required_ids(frame, cfg, path)
    ids = pseudonymize_ids(_host(ids_col.astype("str")), cfg, path)
    ids = np.asarray(ids).astype(str)
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        raise DataError(
            f"{path}: row {int(np.flatnonzero(dup)[0]) + 1}: duplicate subscriber row"
            + (
                f" (column '{cfg.period_column}' is there: a long table? set data.layout=long)"
                if cfg.period_column in columns
                else ""
            )
        )
    n, t, m = len(ids), len(periods), len(metrics)
    usage = np.zeros((n, t, m), dtype=np.float32)
    present = np.zeros((n, t, m), dtype=bool)
    for j, (name, prefix) in enumerate(metrics.items()):
        for i, p in enumerate(periods):
            col = cells.get((prefix, p))
            if col is None:
                continue
            values = numeric_column(
                frame, col, path, xdf, nan_ok=True, negative_ok=negative_ok(cfg, name)
            )
            usage[:, i, j] = values
            present[:, i, j] = ~np.isnan(values)
    mask = present.any(axis=2)
    for j, name in enumerate(metrics):  # a missing cell in a present period
        partial = mask & ~present[:, :, j]
        if fill_policy(cfg, name) == "error" and partial.any():
            r, c = np.argwhere(partial)[0]
            raise DataError(
                f"{path}: row {r + 1}: period {periods[c]} has some metrics and not others "
                f"('{name}' missing); set data.fill (zero or ffill)"
            )
    usage[~present] = np.nan
    filled = apply_fill(usage, mask, list(metrics), cfg)
    order = np.argsort(ids, kind="stable")
    info = dict(report=dict(filled=filled, date_columns_left_out=date_columns))
    return ids[order], usage[order], mask[order], list(metrics), [str(p) for p in periods], info


TABLE_PERIOD = "1"  # the one period label of a table-layout panel


def load_table(cfg: DataConfig, backend: Backend) -> Loaded:
    """Table layout: one row per subscriber, no period.

    The ids are ``data.id_column`` as text, or the row numbers ("1", "2", ...) when it is null.
    Metrics (one period, labelled ``1``): ``data.metrics`` when given, else every numeric column
    without missing cells, plus the revenue metric; they may be negative unless
    ``data.allow_negative`` lists the metrics that may. The other columns (text, booleans, numeric
    columns with missing cells, or ``data.static_columns``) are static attributes, encoded as the
    static table's are (numbers with a missing flag, categories one-hot). The churn and migration
    columns, when present, are labels, never features.
    """
    path = Path(cfg.usage)
    if cfg.static:
        raise DataError(
            f"data.static: the table layout reads static attributes from {path} itself; "
            "remove data.static"
        )
    frame = read_table(path, backend, "usage", cfg.id_column, cfg.missing_markers)
    frame = frame.to_pandas() if hasattr(frame, "to_pandas") else frame
    columns = [str(c) for c in frame.columns]
    id_col = cfg.id_name
    report: dict[str, Any] = {}
    if cfg.id_column is None:
        if id_col in columns:
            raise DataError(
                f"{path}: data.id_column is null, so ids are row numbers in column '{id_col}', "
                "but the table has a column of that name; name it in data.id_column"
            )
        ids = np.arange(1, len(frame) + 1).astype(str)
        report["ids"] = "row numbers (data.id_column: null)"
    else:
        if cfg.id_column not in columns:
            raise DataError(
                f"{path}: column '{cfg.id_column}' (data.id_column) not found; columns: "
                f"{', '.join(columns[:20])}"
            )
        ids = np.asarray(_required_ids(frame, cfg, path)).astype(str)
    ids = np.asarray(pseudonymize_ids(ids, cfg, path)).astype(str)
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        raise DataError(f"{path}: row {int(np.flatnonzero(dup)[0]) + 1}: duplicate subscriber row")
    labels_here = not cfg.labels or Path(cfg.labels) == path
    label_cols = [c for c in (cfg.churn_column, cfg.migration_column) if c in columns]
    features = [c for c in columns if c != cfg.id_column and c not in label_cols]
    if cfg.metrics:
        metrics = dict(cfg.metrics)
        for name, col in metrics.items():
            if col not in columns:
                raise DataError(
                    f"{path}: column '{col}' (metric '{name}' in data.metrics) not found"
                )
    else:
        metrics = {}
        for c in features:
            col = frame[c]
            numeric = pd.api.types.is_numeric_dtype(col) and col.dtype != bool
            if cfg.static_columns is not None and c in cfg.static_columns:
                continue
            complete = not bool(col.isna().any())
            # a column with missing cells stays a metric only when it is the revenue metric or
            # has a fill policy; otherwise it is a static number with a missing flag
            keep = complete or c == cfg.revenue_metric or fill_policy(cfg, c) != "error"
            if numeric and keep:
                metrics[c] = c
    if not metrics:
        raise DataError(f"{path}: no numeric column to use as a metric (data.metrics)")
    static_cols = (
        list(cfg.static_columns)
        if cfg.static_columns is not None
        else [c for c in features if c not in metrics.values()]
    )
    for c in static_cols:
        if c not in columns:
            raise DataError(f"{path}: column '{c}' (data.static_columns) not found")
    xdf = pd
    values = metric_matrix(frame, metrics, cfg, path, xdf)
    order = np.argsort(ids, kind="stable")
    usage = values[order][:, None, :]  # (N, 1, M)
    mask = np.ones((len(ids), 1), dtype=bool)
    report["filled"] = apply_fill(usage, mask, list(metrics), cfg)
    report["static_with_missing"] = [
        c for c in static_cols if pd.api.types.is_numeric_dtype(frame[c]) and frame[c].isna().any()
    ]
    inline: dict[str, pd.DataFrame] = {}
    ids_in_file = pd.Series(ids, name=id_col)
    if static_cols:
        inline["static"] = pd.concat(
            [ids_in_file, frame[static_cols].reset_index(drop=True)], axis=1
        )
    if labels_here and label_cols:
        inline["labels"] = pd.concat(
            [ids_in_file, frame[label_cols].reset_index(drop=True)], axis=1
        )
    elif labels_here and cfg.churn_definition == "label" and cfg.labels:
        raise DataError(
            f"{path}: column '{cfg.churn_column}' (data.churn_column) not found; columns: "
            f"{', '.join(columns[:20])}"
        )
    info = dict(report=report, inline=inline)
    return ids[order], usage, mask, list(metrics), [TABLE_PERIOD], info
