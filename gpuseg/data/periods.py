"""Period columns: dates, YYYY-MM, ISO weeks or integers, parsed into sortable keys and labels."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from gpuseg.errors import DataError

_PERIOD_FORMATS = (("%Y-%m-%d", None), ("%Y-%m", None), ("%G-W%V-%u", "-1"), ("%Y%m%d", None))


def parse_periods(values: np.ndarray, path: Path, column: str) -> np.ndarray:
    """Period labels -> sortable int64 keys (days since epoch for dates, the integer otherwise).

    Accepts dates, integers, or strings in one of: YYYY-MM-DD, YYYY-MM, YYYY-Www, YYYYMMDD. A column
    mixing formats, or holding values that no format reads, raises DataError naming the first row.
    """
    return parse_periods_typed(values, path, column)[0]


def parse_periods_typed(
    values: np.ndarray, path: Path, column: str, row_offset: int = 0
) -> tuple[np.ndarray, bool]:
    """:func:`parse_periods` plus whether the keys are dates (days since epoch) or integers.

    ``row_offset`` is added to the row numbers in error messages (for chunked reading).
    """
    values = np.asarray(values)
    r0 = row_offset
    if values.dtype.kind == "M":
        return values.astype("datetime64[D]").astype(np.int64), True
    if values.dtype.kind in "iu":
        return values.astype(np.int64), False
    if values.dtype.kind == "f":
        if np.isnan(values).any():
            raise DataError(
                f"{path}: column '{column}' row "
                f"{int(np.flatnonzero(np.isnan(values))[0]) + 1 + r0}: missing period"
            )
        if (values != np.round(values)).any():
            raise DataError(f"{path}: column '{column}': periods must be whole numbers or dates")
        return values.astype(np.int64), False
    text = pd.Series(values, dtype="object")
    if len(text) and isinstance(text.iloc[0], (datetime.date, pd.Timestamp)):
        try:
            return pd.to_datetime(text).to_numpy().astype("datetime64[D]").astype(np.int64), True
        except (TypeError, ValueError):
            pass  # mixed objects: fall through to the string formats, which name the bad row
    if text.isna().any():
        raise DataError(
            f"{path}: column '{column}' row {int(np.flatnonzero(text.isna())[0]) + 1 + r0}: "
            "missing period"
        )
    text = text.astype(str).str.strip()
    for fmt, suffix in _PERIOD_FORMATS:
        parsed = pd.to_datetime(text + suffix if suffix else text, format=fmt, errors="coerce")
        if fmt == "%Y%m%d":  # pandas reads '202612' as 2026-01-02: YYYYMM text stays an integer
            parsed = parsed.where(text.str.fullmatch(r"\d{8}"))
        if parsed.notna().all():
            return parsed.to_numpy().astype("datetime64[D]").astype(np.int64), True
        if parsed.notna().any():
            ok = parsed.notna().to_numpy()
            row = int(np.flatnonzero(ok != ok[0])[0]) + 1 + r0  # first row read unlike row 1
            raise DataError(
                f"{path}: column '{column}' row {row}: period format differs from earlier rows"
            )
    if text.str.fullmatch(r"-?\d+").all():
        return text.astype(np.int64).to_numpy(), False
    raise DataError(
        f"{path}: column '{column}' row {1 + r0}: unreadable period (use YYYY-MM-DD, YYYY-MM, "
        "YYYY-Www or integers)"
    )


def period_labels(keys: np.ndarray, is_date: bool) -> list[str]:
    if is_date:
        return [str(d) for d in keys.astype("datetime64[D]")]
    return [str(int(k)) for k in keys]


MAX_GAP_FACTOR = 4  # a gap between periods this many times the typical one is refused


def check_spacing(keys: np.ndarray, is_date: bool, path: Path, column: str) -> None:
    """DataError when the sorted distinct periods are not roughly regular: one gap more than
    :data:`MAX_GAP_FACTOR` times the median gap (a stray ``1900-01-01`` row among 2026 weeks would
    otherwise add a period next to 2026). A single missing period (gap 2x) is accepted."""
    keys = np.unique(np.asarray(keys, dtype=np.int64))
    if len(keys) < 3:
        return
    steps = keys
    if (
        not is_date
        and ((keys >= 100001) & (keys <= 999912) & np.isin(keys % 100, range(1, 13))).all()
    ):
        steps = keys // 100 * 12 + keys % 100  # YYYYMM integers: months apart
    gaps = np.diff(steps)
    typical = float(np.median(gaps))
    i = int(np.argmax(gaps))
    if gaps[i] > MAX_GAP_FACTOR * typical:
        labels = period_labels(keys[[i, i + 1]], is_date)
        unit = " days" if is_date else ""
        raise DataError(
            f"{path}: column '{column}': a gap of {int(gaps[i])}{unit} between periods {labels[0]} "
            f"and {labels[1]}, while periods are {typical:g}{unit} apart: a stray row? (periods "
            "must be regular)"
        )
