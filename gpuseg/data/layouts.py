"""Usage layouts in memory: a long table (subscriber, period, metrics) or a wide one (one column per
metric and period) pivoted to (N, T, M) arrays, with values checked on the backend's frames."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpuseg.backend import Backend
from gpuseg.config import DataConfig
from gpuseg.data.periods import check_spacing, parse_periods_typed, period_labels
from gpuseg.data.privacy import pseudonymize_ids
from gpuseg.errors import DataError
from gpuseg.io.sniff import show_columns
from gpuseg.io.tables import read_table


def _host(series) -> np.ndarray:
    return series.to_numpy() if hasattr(series, "to_numpy") else np.asarray(series)


def first_true_row(flags) -> int:
    """1-based data row of the first True in a boolean series."""
    return int(np.flatnonzero(_host(flags))[0]) + 1


def numeric_column(frame, column: str, path: Path, xdf, row_offset: int = 0) -> Any:
    """The column as float64; non-numeric, NaN, inf and negative values raise DataError.

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
    if np.isnan(values).any():
        row = int(np.flatnonzero(np.isnan(values))[0]) + 1 + row_offset
        raise DataError(
            f"{path}: column '{column}' row {row}: missing value (NaN); drop or fill the row"
        )
    if np.isinf(values).any():
        row = int(np.flatnonzero(np.isinf(values))[0]) + 1 + row_offset
        raise DataError(f"{path}: column '{column}' row {row}: infinite value")
    if (values < 0).any():
        row = int(np.flatnonzero(values < 0)[0]) + 1 + row_offset
        raise DataError(f"{path}: column '{column}' row {row}: negative usage value")
    return values


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


def load_long(
    cfg: DataConfig, backend: Backend
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """Long layout -> (ids (N,), usage (N, T, M), mask (N, T), metric names, period labels)."""
    path = Path(cfg.usage)
    xdf = backend.frame_module()
    frame = read_table(path, backend, "usage")
    columns = [str(c) for c in frame.columns]
    for key, col in (("data.id_column", cfg.id_column), ("data.period_column", cfg.period_column)):
        if col not in columns:
            raise DataError(f"{path}: column '{col}' ({key}) not found; {show_columns(columns)}")
    metrics = metric_columns(cfg, columns, {cfg.id_column, cfg.period_column}, path, xdf, frame)
    values = np.stack(
        [numeric_column(frame, col, path, xdf) for col in metrics.values()], axis=1
    ).astype(np.float32)

    ids_col = frame[cfg.id_column]
    if bool(ids_col.isna().any()):
        raise DataError(
            f"{path}: column '{cfg.id_column}' row {first_true_row(ids_col.isna())}: missing "
            "subscriber id"
        )
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
    return ids, usage, mask, list(metrics), period_labels(per_uniques, is_date)


def load_wide(
    cfg: DataConfig, backend: Backend
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """Wide layout (one column per metric and period, e.g. ``arpu_6``) -> same as load_long."""
    path = Path(cfg.usage)
    xdf = backend.frame_module()
    frame = read_table(path, backend, "usage")
    columns = [str(c) for c in frame.columns]
    if cfg.id_column not in columns:
        raise DataError(f"{path}: column '{cfg.id_column}' (data.id_column) not found")
    try:
        pattern = re.compile(cfg.wide_pattern)
    except re.error as exc:
        raise DataError(f"data.wide_pattern: invalid regex ({exc})") from None
    cells: dict[tuple[str, int], str] = {}
    for c in columns:
        match = pattern.match(c)
        if match and c != cfg.id_column:
            try:
                cells[(match.group("metric"), int(match.group("period")))] = c
            except (IndexError, ValueError):
                raise DataError(
                    "data.wide_pattern: needs named groups 'metric' and 'period' (digits)"
                ) from None
    found = sorted({mt for mt, _ in cells})
    metrics = cfg.metrics or {mt: mt for mt in found}
    for name, prefix in metrics.items():
        if prefix not in found:
            raise DataError(
                f"{path}: no columns match metric '{prefix}' (metric '{name}') with "
                "data.wide_pattern"
            )
    periods = sorted({p for _, p in cells})
    ids_col = frame[cfg.id_column]
    if bool(ids_col.isna().any()):
        raise DataError(
            f"{path}: column '{cfg.id_column}' row {first_true_row(ids_col.isna())}: missing "
            "subscriber id"
        )
    ids = pseudonymize_ids(_host(ids_col.astype("str")), cfg, path)
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
    for j, prefix in enumerate(metrics.values()):
        for i, p in enumerate(periods):
            col = cells.get((prefix, p))
            if col is None:
                continue
            raw = frame[col]
            isna = _host(raw.isna())
            filled = raw.fillna(0) if isna.any() else raw
            usage[:, i, j] = numeric_column(frame.assign(**{col: filled}), col, path, xdf)
            present[:, i, j] = ~isna
    mask = present.all(axis=2)
    partial = present.any(axis=2) & ~mask
    if partial.any():
        r, c = np.argwhere(partial)[0]
        raise DataError(f"{path}: row {r + 1}: period {periods[c]} has some metrics and not others")
    order = np.argsort(ids, kind="stable")
    return ids[order], usage[order], mask[order], list(metrics), [str(p) for p in periods]
