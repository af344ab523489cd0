"""Raw tables -> panel artifact.

The panel is a directory of plain arrays that training memory-maps:

- ``usage.npy``      float32 (N, T, M): metric values per subscriber and period (0 where missing)
- ``mask.npy``       bool    (N, T):    True where the subscriber has a row for that period
- ``static.npy``     float32 (N, S):    encoded static attributes (numbers, 0/1, one-hot, days)
- ``churn.npy``      int8    (N,):      1 churned, 0 stayed, -1 unknown
- ``migration.npy``  int8    (N,):      0 down, 1 stay, 2 up, -1 unknown
- ``index.parquet``  subscriber ids in row order
- ``attributes.parquet`` the raw static columns in row order (for profiles and targeting)
- ``meta.json``      metric names, periods, static encoding, counts in / out / rejected
- ``rejects.csv``    every input subscriber left out, with the reason

The reading, validation and group/pivot work run on the frame module the backend names (cuDF on
GPU, pandas otherwise) and produce the same arrays.
"""

from __future__ import annotations

import datetime
import mmap
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gpuseg.backend import Backend
from gpuseg.config import DataConfig
from gpuseg.errors import ConfigError, DataError, RunDirError
from gpuseg.labels import derive_panel_labels
from gpuseg.privacy import pseudonymize_ids
from gpuseg.store import (
    load_npy,
    read_json,
    save_npy_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_parquet_atomic,
)

MIGRATION_CODES = {"down": 0, "stay": 1, "up": 2, -1: 0, 0: 1, 1: 2}
PANEL_FILES = (
    "usage.npy",
    "mask.npy",
    "static.npy",
    "churn.npy",
    "migration.npy",
    "index.parquet",
    "meta.json",
)


@dataclass
class Panel:
    """A prepared panel; arrays are memory-mapped when loaded from disk."""

    usage: np.ndarray  # (N, T, M) float32
    mask: np.ndarray  # (N, T) bool
    static: np.ndarray  # (N, S) float32
    churn: np.ndarray  # (N,) int8
    migration: np.ndarray  # (N,) int8
    ids: np.ndarray  # (N,) str
    meta: dict[str, Any]

    @property
    def metrics(self) -> list[str]:
        return self.meta["metrics"]

    def __len__(self) -> int:
        return len(self.ids)


# ---------------------------------------------------------------------------------------------
# Reading


def read_table(path: str | Path, backend: Backend, what: str):
    """Read a Parquet or CSV file with the backend's frame module; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: {what} file not found")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: {what} file is empty")
    xdf = backend.frame_module()
    suffix = p.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = xdf.read_parquet(p)
        elif suffix in (".csv", ".txt") or p.name.endswith(".csv.gz"):
            frame = xdf.read_csv(p)
        else:
            raise DataError(f"{p}: unknown file type '{suffix}' (use .parquet or .csv)")
    except DataError:
        raise
    except Exception as exc:  # parser errors differ between pandas, pyarrow and cuDF
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{p}: cannot read {what} table: {msg}") from None
    if len(frame) == 0:
        raise DataError(f"{p}: {what} table has no rows")
    return frame


def _host(series) -> np.ndarray:
    return series.to_numpy() if hasattr(series, "to_numpy") else np.asarray(series)


def _first_row(flags) -> int:
    """1-based data row of the first True in a boolean series."""
    return int(np.flatnonzero(_host(flags))[0]) + 1


def _numeric(frame, column: str, path: Path, xdf, row_offset: int = 0) -> Any:
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
            row = _first_row(bad) + row_offset
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


def _period_labels(keys: np.ndarray, is_date: bool) -> list[str]:
    if is_date:
        return [str(d) for d in keys.astype("datetime64[D]")]
    return [str(int(k)) for k in keys]


# ---------------------------------------------------------------------------------------------
# Layouts -> dense arrays


def _metric_map(
    cfg: DataConfig, columns: list[str], exclude: set[str], path: Path, xdf, frame
) -> dict[str, str]:
    if cfg.metrics:
        for name, col in cfg.metrics.items():
            if col not in columns:
                raise DataError(
                    f"{path}: column '{col}' (metric '{name}' in data.metrics) not found; "
                    f"columns: {', '.join(columns[:20])}"
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
            raise DataError(
                f"{path}: column '{col}' ({key}) not found; columns: {', '.join(columns[:20])}"
            )
    metrics = _metric_map(cfg, columns, {cfg.id_column, cfg.period_column}, path, xdf, frame)
    values = np.stack([_numeric(frame, col, path, xdf) for col in metrics.values()], axis=1).astype(
        np.float32
    )

    ids_col = frame[cfg.id_column]
    if bool(ids_col.isna().any()):
        raise DataError(
            f"{path}: column '{cfg.id_column}' row {_first_row(ids_col.isna())}: missing "
            "subscriber id"
        )
    raw_periods = _host(frame[cfg.period_column])
    period_keys, is_date = parse_periods_typed(raw_periods, path, cfg.period_column)

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
    return ids, usage, mask, list(metrics), _period_labels(per_uniques, is_date)


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
            f"{path}: column '{cfg.id_column}' row {_first_row(ids_col.isna())}: missing "
            "subscriber id"
        )
    ids = pseudonymize_ids(_host(ids_col.astype("str")), cfg, path)
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        raise DataError(f"{path}: row {int(np.flatnonzero(dup)[0]) + 1}: duplicate subscriber row")
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
            usage[:, i, j] = _numeric(frame.assign(**{col: filled}), col, path, xdf)
            present[:, i, j] = ~isna
    mask = present.all(axis=2)
    partial = present.any(axis=2) & ~mask
    if partial.any():
        r, c = np.argwhere(partial)[0]
        raise DataError(f"{path}: row {r + 1}: period {periods[c]} has some metrics and not others")
    order = np.argsort(ids, kind="stable")
    return ids[order], usage[order], mask[order], list(metrics), [str(p) for p in periods]


# ---------------------------------------------------------------------------------------------
# Static attributes and labels


class _Columns:
    """The static matrix, allocated once (float32) and filled block by block from the left."""

    def __init__(self, n: int, encoding: list[dict]) -> None:
        width = 0
        for enc in encoding:
            if enc["kind"] == "category":
                width += len(enc["categories"])
            else:
                width += 1 + bool(enc["kind"] in ("number", "date") and enc.get("missing"))
        self.matrix = np.zeros((n, width), dtype=np.float32)
        self._col = 0

    def append(self, block: np.ndarray) -> None:
        w = block.shape[1]
        self.matrix[:, self._col : self._col + w] = block
        self._col += w


def encode_static(
    frame: pd.DataFrame,
    columns: list[str],
    path: Path,
    reference: list[dict] | None,
    end_day: int | None,
) -> tuple[np.ndarray, list[str], list[dict]]:
    """Static columns -> float matrix (N, S), feature names and the encoding (reused at scoring).

    numbers and booleans pass through (missing -> 0 plus a ``_missing`` indicator), dates become
    days from the end of the window, strings become one-hot over the categories seen in training.
    """
    encoding = reference
    if encoding is None:
        encoding = []
        for c in columns:
            s = frame[c]
            if s.dtype == bool or str(s.dtype) == "boolean":
                encoding.append(dict(column=c, kind="bool"))
            elif pd.api.types.is_numeric_dtype(s):
                encoding.append(dict(column=c, kind="number", missing=bool(s.isna().any())))
            elif pd.api.types.is_datetime64_any_dtype(s):
                encoding.append(dict(column=c, kind="date", missing=bool(s.isna().any())))
            else:
                cats = s.dropna().astype(str).value_counts().index[:50].tolist()
                encoding.append(dict(column=c, kind="category", categories=sorted(cats)))
    blocks, names = _Columns(len(frame), encoding), []
    for enc in encoding:
        c = enc["column"]
        if c not in frame.columns:
            raise DataError(f"{path}: static column '{c}' not found")
        s = frame[c]
        if enc["kind"] == "bool":
            if s.dtype != bool and not pd.api.types.is_numeric_dtype(s):
                mapped = (
                    s.astype(str)
                    .str.lower()
                    .map({"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "yes": 1.0, "no": 0.0})
                )
                if mapped.isna().any():
                    raise DataError(
                        f"{path}: column '{c}' row {int(np.flatnonzero(mapped.isna())[0]) + 1}: "
                        "not a boolean"
                    )
                s = mapped
            blocks.append(s.astype(float).fillna(0).to_numpy().astype(np.float32)[:, None])
            names.append(c)
        elif enc["kind"] in ("number", "date"):
            if enc["kind"] == "date":
                if end_day is None:
                    raise DataError(
                        f"{path}: column '{c}' holds dates but the usage periods are not dates"
                    )
                v = pd.to_datetime(s).to_numpy().astype("datetime64[D]").astype("float64")
                v[pd.isna(s).to_numpy()] = np.nan
                v = v - end_day
            else:
                v = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64")
                bad = np.isnan(v) & s.notna().to_numpy()
                if bad.any():
                    raise DataError(
                        f"{path}: column '{c}' row {int(np.flatnonzero(bad)[0]) + 1}: non-numeric "
                        "value"
                    )
            if np.isinf(v).any():
                raise DataError(
                    f"{path}: column '{c}' row {int(np.flatnonzero(np.isinf(v))[0]) + 1}: "
                    "infinite value"
                )
            miss = np.isnan(v)
            v32 = v.astype(np.float32)  # missing -> 0 in float32: no float64 copy of the column
            v32[miss] = 0.0
            blocks.append(v32[:, None])
            del v, v32
            names.append(c)
            if enc.get("missing"):
                blocks.append(miss.astype(np.float32)[:, None])
                names.append(f"{c}_missing")
        else:
            cats = enc["categories"]
            s = s.astype(str)
            for k in cats:
                blocks.append((s == k).to_numpy(dtype=np.float32)[:, None])
            names.extend(f"{c}={k}" for k in cats)
    # one float32 matrix filled in place (float64 values rounded once, as before): at 10M rows
    # no second copy of the matrix and no float64 version of it
    assert blocks.matrix.shape[1] == len(names)
    return blocks.matrix, names, encoding


def _labels(
    cfg: DataConfig, ids: np.ndarray, backend: Backend, rejected: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Churn and migration codes aligned with ``ids``; labels of ``rejected`` ids are ignored."""
    n = len(ids)
    churn = np.full(n, -1, dtype=np.int8)
    migration = np.full(n, -1, dtype=np.int8)
    if not cfg.labels:
        return churn, migration
    path = Path(cfg.labels)
    frame = read_table(path, backend, "labels")
    frame = frame.to_pandas() if hasattr(frame, "to_pandas") else frame
    if cfg.id_column not in frame.columns:
        raise DataError(f"{path}: column '{cfg.id_column}' (data.id_column) not found")
    # a pandas string column, not a Python string object per row (10M rows: GBs)
    lab_ids = pd.Series(pseudonymize_ids(frame[cfg.id_column].astype(str), cfg, path), copy=False)
    pos = _positions(ids, lab_ids)
    found = pos >= 0
    rejected = np.asarray(rejected if rejected is not None else [], dtype=str)
    skip = np.zeros(len(found), dtype=bool)
    if not found.all():
        skip[~found] = np.isin(lab_ids[~found].to_numpy().astype(str), rejected)
    unknown = ~found & ~skip  # labels of subscribers only in the static table: already rejected
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0]) + 1
        raise DataError(
            f"{path}: row {row}: label for a subscriber not in the usage table "
            f"({int(unknown.sum())} such rows)"
        )
    dup = lab_ids.duplicated().to_numpy()
    if dup.any():
        raise DataError(f"{path}: row {int(np.flatnonzero(dup)[0]) + 1}: duplicate subscriber")
    if cfg.churn_column in frame.columns:
        c = pd.to_numeric(frame[cfg.churn_column], errors="coerce")
        bad = ~c.isin([0, 1]) & frame[cfg.churn_column].notna()  # 'yes' is bad, not unknown
        if bad.any():
            raise DataError(
                f"{path}: column '{cfg.churn_column}' row {int(np.flatnonzero(bad)[0]) + 1}: "
                "churn must be 0 or 1"
            )
        churn[pos[found]] = c.fillna(-1).astype(np.int8).to_numpy()[found]
    if cfg.migration_column in frame.columns:
        # map the distinct labels (a handful), not every row: 10M rows stay fast and small
        codes, uniques = pd.factorize(frame[cfg.migration_column])  # missing: code -1
        lut = [MIGRATION_CODES.get(v.strip().lower() if isinstance(v, str) else v) for v in uniques]
        bad = np.isin(codes, [i for i, v in enumerate(lut) if v is None])
        if bad.any():
            row = int(np.flatnonzero(bad)[0]) + 1
            raise DataError(
                f"{path}: column '{cfg.migration_column}' row {row}: migration must be "
                "down/stay/up or -1/0/1"
            )
        mapped = np.array([-1 if v is None else v for v in lut] + [-1], dtype=np.int8)[codes]
        migration[pos[found]] = mapped[found]
    return churn, migration


# ---------------------------------------------------------------------------------------------
# The stage


def _reference_window(
    usage_periods: int, periods: list[str], reference: dict | None
) -> tuple[int, list[str]]:
    """(shift, labels): output period = input period + shift, for scoring against ``reference``.

    More periods than in training keeps the latest ones; fewer pads at the start (missing).
    """
    if reference is None:
        return 0, list(periods)
    t_ref = len(reference["periods"])
    if usage_periods >= t_ref:
        return t_ref - usage_periods, list(periods[-t_ref:])
    pad = t_ref - usage_periods
    return pad, [f"pad{i}" for i in range(pad)] + list(periods)


def _reference_metrics(cfg: DataConfig, metrics: dict[str, str], reference: dict | None):
    """The metric map restricted to (and ordered like) the reference's metrics."""
    if reference is None:
        return metrics
    want = reference["metrics"]
    missing = [m for m in want if m not in metrics]
    if missing:
        raise DataError(f"{cfg.usage}: metric '{missing[0]}' used in training is missing")
    return {m: metrics[m] for m in want}


def _positions(ids: np.ndarray, values) -> np.ndarray:
    """Index of each of ``values`` (strings) in ``ids``, -1 where absent.

    One Arrow hash lookup: no Python string object per row, which matters at 10M rows.
    """
    ids = np.asarray(ids)
    value_set = pa.array(ids if ids.dtype.kind == "U" else ids.astype(str))  # no copy of 'U' ids
    found = pc.index_in(pa.array(values, type=pa.string(), from_pandas=True), value_set=value_set)
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _select(
    cfg: DataConfig,
    backend: Backend,
    ids: np.ndarray,
    mask: np.ndarray,
    periods: list[str],
    reference: dict | None,
) -> dict[str, Any]:
    """Rejects, static attributes and labels of the usage subscribers ``ids`` (sorted).

    Returns ``keep`` (bool per id) and, for the kept rows only, the encoded static matrix, raw
    attributes, churn and migration codes; plus the rejects frame and the input count.
    """
    rejects: list[tuple[str, str]] = []
    keep = np.ones(len(ids), dtype=bool)
    present = mask.any(axis=1)
    missing_frac = 1.0 - mask.mean(axis=1)
    too_sparse = (missing_frac > cfg.max_missing_frac) | ~present
    for i in np.flatnonzero(too_sparse):
        rejects.append((ids[i], "too many missing periods" if present[i] else "no usage rows"))
    keep &= ~too_sparse
    del present, missing_frac, too_sparse  # per-id temporaries (10M ids: ~100 MB)

    end_day = None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(periods[-1])):  # date labels (integers are not days)
        end_day = int(np.datetime64(periods[-1], "D").astype(np.int64))

    static_names: list[str] = []
    encoding: list[dict] = []
    static_only = np.array([], dtype=str)
    if cfg.static:
        spath = Path(cfg.static)
        sframe = read_table(spath, backend, "static")
        sframe = sframe.to_pandas() if hasattr(sframe, "to_pandas") else sframe
        if cfg.id_column not in sframe.columns:
            raise DataError(f"{spath}: column '{cfg.id_column}' (data.id_column) not found")
        sframe[cfg.id_column] = pseudonymize_ids(sframe[cfg.id_column].astype(str), cfg, spath)
        sids = pa.array(sframe[cfg.id_column], type=pa.string(), from_pandas=True)
        if pc.count_distinct(sids).as_py() != len(sids):  # pandas only to name the row
            dup = sframe[cfg.id_column].duplicated()
            raise DataError(f"{spath}: row {int(np.flatnonzero(dup)[0]) + 1}: duplicate subscriber")
        del sids
        columns = (
            cfg.static_columns
            if cfg.static_columns is not None
            else [c for c in sframe.columns if c != cfg.id_column]
        )
        for c in columns:
            if c not in sframe.columns:
                raise DataError(f"{spath}: column '{c}' (data.static_columns) not found")
        # align static rows with the usage ids by one hash lookup (no merge copy)
        pos = _positions(ids, sframe[cfg.id_column])
        in_usage = pos >= 0
        static_only = np.asarray(sframe[cfg.id_column][~in_usage]).astype(str)
        rejects.extend((sid, "no usage rows") for sid in static_only)
        srow = np.full(len(ids), -1, dtype=np.int64)
        srow[pos[in_usage]] = np.flatnonzero(in_usage)
        no_static = srow < 0
        for i in np.flatnonzero(no_static & keep):
            rejects.append((ids[i], "no static attributes"))
        keep &= ~no_static
        order = [cfg.id_column] + [c for c in sframe.columns if c != cfg.id_column]
        rows = srow[keep]
        if len(rows) == len(sframe) and (rows[1:] > rows[:-1]).all():  # already aligned
            attributes = sframe[order].reset_index(drop=True)  # no copy (copy-on-write)
        else:
            attributes = sframe[order].iloc[rows].reset_index(drop=True)
        # index arrays (10M ids: ~300 MB) freed before the static matrix is filled (score's peak)
        del sframe, pos, in_usage, srow, no_static, rows
        ref_enc = reference["static_encoding"] if reference is not None else None
        enc_columns = columns if ref_enc is None else [e["column"] for e in ref_enc]
        kept = attributes[enc_columns].infer_objects()
        static, static_names, encoding = encode_static(kept, enc_columns, spath, ref_enc, end_day)
    else:
        attributes = pd.DataFrame({cfg.id_column: ids[keep]})
        static = np.zeros((int(keep.sum()), 0), dtype=np.float32)

    churn, migration = _labels(cfg, ids, backend, static_only)  # static-only ids are rejects
    return dict(
        keep=keep,
        static=static,
        attributes=attributes,
        churn=churn[keep],
        migration=migration[keep],
        static_names=static_names,
        encoding=encoding,
        rejects=pd.DataFrame(rejects, columns=[cfg.id_column, "reason"]),
        n_input=len(ids) + len(static_only),
    )


def _meta(cfg: DataConfig, metrics: list[str], periods: list[str], sel: dict) -> dict[str, Any]:
    return dict(
        metrics=metrics,
        periods=periods,
        static_features=sel["static_names"],
        static_encoding=sel["encoding"],
        id_column=cfg.id_column,
        revenue_metric=cfg.revenue_metric,
        counts=dict(
            input=int(sel["n_input"]), output=int(sel["keep"].sum()), rejected=len(sel["rejects"])
        ),
        sources=dict(usage=str(cfg.usage), static=cfg.static, labels=cfg.labels),
        labelled=dict(
            churn=int((sel["churn"] >= 0).sum()), migration=int((sel["migration"] >= 0).sum())
        ),
    )


def streams(cfg: DataConfig, backend: Backend) -> bool:
    """Whether ``prepare`` streams the usage table: long layout on the pandas (host) backend.

    cuDF reads the whole table into GPU memory; the wide layout holds one row per subscriber.
    """
    return cfg.layout != "wide" and backend.frames == "pandas"


def build_panel(
    cfg: DataConfig, backend: Backend, reference: dict | None = None, chunk_rows: int = 0
) -> tuple[Panel, pd.DataFrame, pd.DataFrame]:
    """Read and validate the tables; return (panel in memory, raw static attributes, rejects).

    ``reference`` is a trained run's panel meta: scoring data then gets the same metrics, static
    encoding and periods count as training. Where :func:`prepare` streams, this streams too (into a
    temporary directory, then loads the arrays), so both give the same panel.
    """
    if not cfg.usage:
        raise DataError("data.usage: no usage file given")
    if not streams(cfg, backend):
        return build_panel_whole(cfg, backend, reference)
    with tempfile.TemporaryDirectory(prefix="gpuseg-panel-") as tmp:
        meta, attributes, rejects = _prepare_stream(cfg, backend, tmp, reference, chunk_rows)
        panel = load_panel(tmp, mmap=False)
    panel.meta = meta
    return panel, attributes, rejects


def build_panel_whole(
    cfg: DataConfig, backend: Backend, reference: dict | None = None
) -> tuple[Panel, pd.DataFrame, pd.DataFrame]:
    """:func:`build_panel` with the whole usage table in one frame (pandas or cuDF)."""
    if not cfg.usage:
        raise DataError("data.usage: no usage file given")
    loader = load_wide if cfg.layout == "wide" else load_long
    ids, usage, mask, metrics, periods = loader(cfg, backend)
    if reference is not None:
        metrics_map = _reference_metrics(cfg, {m: m for m in metrics}, reference)
        usage = usage[:, :, [metrics.index(m) for m in metrics_map]]
        metrics = list(metrics_map)
        shift, periods = _reference_window(usage.shape[1], periods, reference)
        if shift <= 0:
            usage, mask = usage[:, -shift:], mask[:, -shift:]
        else:
            usage = np.concatenate(
                [np.zeros((len(ids), shift, usage.shape[2]), np.float32), usage], axis=1
            )
            mask = np.concatenate([np.zeros((len(ids), shift), bool), mask], axis=1)
    sel = _select(cfg, backend, ids, mask, periods, reference)
    keep = sel["keep"]
    panel = Panel(
        usage=usage[keep],
        mask=mask[keep],
        static=sel["static"],
        churn=sel["churn"],
        migration=sel["migration"],
        ids=ids[keep],
        meta=_meta(cfg, metrics, periods, sel),
    )
    return panel, sel["attributes"], sel["rejects"]


# ---------------------------------------------------------------------------------------------
# Streaming the long layout: bounded memory at any number of rows
#
# Pass 1 reads only the id and period columns, chunk by chunk, and collects the sorted unique ids
# and periods. Pass 2 reads every needed column chunk by chunk, checks values and duplicates, and
# scatters the values into the on-disk usage array through a shared file mapping whose pages are
# dropped from this process after every block (they stay in the page cache and reach the file),
# so the resident set holds only the id list, the (N, T) presence mask and one chunk. Rejected
# subscribers are then dropped by one sequential copy of the array.

CHUNK_ROWS = 1 << 20  # usage rows per read chunk
SCATTER_ROWS = 1 << 17  # rows scattered into the mapping between page drops
COPY_BYTES = 64 << 20  # bytes per block when copying or reading panel rows
_MERGE_IDS = 1 << 22  # collected per-chunk unique ids are merged once they exceed this


def _file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".txt") or path.name.endswith(".csv.gz"):
        return "csv"
    raise DataError(f"{path}: unknown file type '{suffix}' (use .parquet or .csv)")


def _read_error(path: Path, what: str, exc: Exception) -> DataError:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DataError(f"{path}: cannot read {what} table: {msg}")


def table_columns(path: Path, what: str = "usage") -> list[str]:
    """Column names of a Parquet or CSV table, checked like :func:`read_table`; rows unread."""
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: {what} file is empty")
    kind = _file_kind(path)
    try:
        if kind == "parquet":
            pf = pq.ParquetFile(path)
            names, n_rows = pf.schema_arrow.names, pf.metadata.num_rows
            # a pandas index stored as a column is the frame's index, not data (as pd.read_parquet)
            index = (pf.schema_arrow.pandas_metadata or {}).get("index_columns", [])
            names = [c for c in names if c not in {i for i in index if isinstance(i, str)}]
        else:
            head = pd.read_csv(path, nrows=1)
            names, n_rows = list(head.columns), len(head)
    except Exception as exc:  # parser errors differ between pandas and pyarrow
        raise _read_error(path, what, exc) from None
    if n_rows == 0:
        raise DataError(f"{path}: {what} table has no rows")
    return [str(c) for c in names]


def iter_chunks(path: Path, columns: list[str], chunk_rows: int, what: str = "usage"):
    """Yield (file row offset, chunk) in file order: a pyarrow Table (Parquet, by record batch) or
    a pandas frame (CSV), holding ``columns``; never the whole table."""
    try:
        if _file_kind(path) == "parquet":
            # pre_buffer=False: pre-buffered column chunks stay cached until the reader is
            # closed (measured: +400 MB per 1M subscribers), which defeats streaming
            pf = pq.ParquetFile(path, pre_buffer=False)
            batches = pf.iter_batches(batch_size=chunk_rows, columns=columns)
            chunks = (pa.Table.from_batches([b]) for b in batches)
        else:
            # every column is parsed: with ``usecols`` pandas silently drops a ragged row's extra
            # fields, and a ragged row must be an error (tests/corpus/ragged_long_row.csv)
            reader = pd.read_csv(path, chunksize=chunk_rows, low_memory=False)
            chunks = (c[columns] for c in reader)
        offset = 0
        for chunk in chunks:
            yield offset, chunk
            offset += len(chunk)
    except DataError:
        raise
    except Exception as exc:  # parser errors differ between pandas and pyarrow
        raise _read_error(path, what, exc) from None


def _strings(values) -> np.ndarray:
    """A pyarrow or pandas array of strings as a numpy unicode array."""
    if isinstance(values, pa.Array):
        values = values.to_numpy(zero_copy_only=False)
    return np.asarray(values).astype(str)


def _chunk_ids(
    chunk, column: str, path: Path, offset: int, per_row: bool = True
) -> tuple[np.ndarray | None, np.ndarray]:
    """(codes, uniques) of the chunk's subscriber ids as strings; a missing id raises DataError.

    With ``per_row=False`` only the distinct ids are computed (codes are None).
    """
    if isinstance(chunk, pa.Table):
        arr = chunk.column(column).combine_chunks()
        if arr.null_count:
            row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0]) + 1
            raise DataError(f"{path}: column '{column}' row {row + offset}: missing subscriber id")
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            arr = pc.cast(arr, pa.string())  # integer ids: '123', as astype(str) gives
        if not per_row:
            return None, _strings(pc.unique(arr))
        enc = pc.dictionary_encode(arr)
        return enc.indices.to_numpy(zero_copy_only=False), _strings(enc.dictionary)
    col = chunk[column]
    if bool(col.isna().any()):
        row = _first_row(col.isna()) + offset
        raise DataError(f"{path}: column '{column}' row {row}: missing subscriber id")
    codes, uniques = pd.factorize(col.astype(str))
    return codes, _strings(uniques)


def _chunk_periods(
    chunk, column: str, path: Path, offset: int, per_row: bool = True
) -> tuple[np.ndarray, bool]:
    """Period keys (int64) of the chunk's rows (or of its distinct labels, ``per_row=False``).

    Only the distinct labels are parsed.
    """
    if isinstance(chunk, pa.Table):
        arr = chunk.column(column).combine_chunks()
        if arr.null_count:
            row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0]) + 1
            raise DataError(f"{path}: column '{column}' row {row + offset}: missing period")
        if per_row:
            enc = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)
            codes = enc.indices.to_numpy(zero_copy_only=False)
            uniques = enc.dictionary.to_numpy(zero_copy_only=False)
        else:
            codes, uniques = None, pc.unique(arr).to_numpy(zero_copy_only=False)
        raw = arr
    else:
        raw = chunk[column]
        codes, uniques = pd.factorize(raw)
        if (codes < 0).any():
            row = int(np.flatnonzero(codes < 0)[0]) + 1
            raise DataError(f"{path}: column '{column}' row {row + offset}: missing period")
        uniques = np.asarray(uniques)
    try:
        keys, is_date = parse_periods_typed(uniques, path, column)
    except DataError:  # parse the rows themselves, for the error's row number
        values = raw.to_numpy(zero_copy_only=False) if isinstance(raw, pa.Array) else raw.to_numpy()
        parse_periods_typed(values, path, column, offset)
        raise
    return (keys if codes is None or not per_row else keys[codes]), is_date


def _scan_long(cfg: DataConfig, path: Path, chunk_rows: int):
    """Pass 1: (sorted unique ids, sorted period keys, dates?, metric map) from id and period."""
    columns = table_columns(path)
    for key, col in (("data.id_column", cfg.id_column), ("data.period_column", cfg.period_column)):
        if col not in columns:
            raise DataError(
                f"{path}: column '{col}' ({key}) not found; columns: {', '.join(columns[:20])}"
            )
    metrics = _metric_map(cfg, columns, {cfg.id_column, cfg.period_column}, path, pd, None)
    id_parts: list[np.ndarray] = []  # distinct ids of recent chunks, merged into ``merged``
    merged = np.array([], dtype=str)
    key_parts: list[np.ndarray] = []
    is_date = None
    for offset, chunk in iter_chunks(path, [cfg.id_column, cfg.period_column], chunk_rows):
        uniques = _chunk_ids(chunk, cfg.id_column, path, offset, per_row=False)[1]
        id_parts.append(pseudonymize_ids(uniques, cfg, path))
        if sum(len(p) for p in id_parts) > max(_MERGE_IDS, len(merged)):  # geometric: n log n
            merged = np.unique(np.concatenate([merged, *id_parts]))
            id_parts = []
        keys, dates = _chunk_periods(chunk, cfg.period_column, path, offset, per_row=False)
        if is_date is not None and dates != is_date:
            raise DataError(
                f"{path}: column '{cfg.period_column}' row {offset + 1}: "
                "period format differs from earlier rows"
            )
        is_date = dates
        key_parts.append(np.unique(keys))
    ids = np.unique(np.concatenate([merged, *id_parts]))
    return ids, np.unique(np.concatenate(key_parts)), bool(is_date), metrics


class _MappedRows:
    """A new ``.npy`` file filled by scattered writes through a shared mapping.

    After every block of rows the mapping's pages are dropped from this process
    (``MADV_DONTNEED``): dirty pages stay in the page cache and reach the file, but they no longer
    count in the resident set, which stays bounded whatever the array's size.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype) -> None:
        header = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        offset = header.offset
        del header
        self._fh = open(path, "r+b")  # noqa: SIM115 (closed by close(), after the mapping)
        self._mm = mmap.mmap(self._fh.fileno(), 0)
        self.array = np.ndarray(shape, dtype=dtype, buffer=self._mm, offset=offset)

    def scatter(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
        for s in range(0, len(rows), SCATTER_ROWS):
            e = s + SCATTER_ROWS
            self.array[rows[s:e], cols[s:e]] = values[s:e]
            self.drop()

    def drop(self) -> None:
        if hasattr(mmap, "MADV_DONTNEED"):
            self._mm.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        del self.array
        self._mm.flush()
        self._mm.close()
        self._fh.close()


def _fill_long(
    cfg: DataConfig,
    path: Path,
    chunk_rows: int,
    ids: np.ndarray,
    keys: np.ndarray,
    columns: list[str],
    shift: int,
    t_out: int,
    out: _MappedRows,
) -> np.ndarray:
    """Pass 2: values scattered into ``out`` (rows = ids); returns the (N, t_out) presence mask.

    A (subscriber, period) row seen before raises DataError naming the later row.
    """
    n, t_all = len(ids), len(keys)
    seen = np.zeros(n * t_all, dtype=bool)
    read = list(dict.fromkeys([cfg.id_column, cfg.period_column, *columns]))
    metric_cols = list(dict.fromkeys(columns))
    for offset, chunk in iter_chunks(path, read, chunk_rows):
        codes, uniques = _chunk_ids(chunk, cfg.id_column, path, offset)
        uniques = pseudonymize_ids(uniques, cfg, path)
        sub = np.searchsorted(ids, uniques)[codes]
        per = np.searchsorted(keys, _chunk_periods(chunk, cfg.period_column, path, offset)[0])
        key = sub.astype(np.int64) * t_all + per
        again = seen[key]
        if not (np.diff(key) > 0).all():  # unsorted chunk: look for repeats inside it
            order = np.argsort(key, kind="stable")
            sk = key[order]
            again[order[1:][sk[1:] == sk[:-1]]] = True
        if again.any():
            row = int(np.flatnonzero(again)[0]) + 1 + offset
            raise DataError(f"{path}: row {row}: duplicate (subscriber, period) row")
        seen[key] = True
        frame = chunk.select(metric_cols).to_pandas() if isinstance(chunk, pa.Table) else chunk
        values = np.empty((len(key), len(columns)), dtype=np.float32)
        for j, col in enumerate(columns):
            values[:, j] = _numeric(frame, col, path, pd, offset)
        del frame
        col_out = per + shift
        ok = (col_out >= 0) & (col_out < t_out)
        if not ok.all():
            sub, col_out, values = sub[ok], col_out[ok], values[ok]
        out.scatter(sub, col_out, values)
    seen2d = seen.reshape(n, t_all)
    mask = np.zeros((n, t_out), dtype=bool)
    lo = max(shift, 0)
    mask[:, lo : lo + min(t_all, t_out)] = seen2d[:, max(-shift, 0) :][:, :t_out]
    return mask


def _rows_per_block(array_shape: tuple[int, ...], itemsize: int) -> int:
    row_bytes = itemsize * int(np.prod(array_shape[1:], dtype=np.int64))
    return max(1, COPY_BYTES // max(row_bytes, 1))


def read_rows(array: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a panel array as an in-memory copy.

    A memory-mapped array (as :func:`load_panel` gives) is read with an explicit file read, so
    its pages never enter this process's resident set; other arrays are sliced.
    """
    stop = min(stop, len(array))
    start = min(start, stop)
    if isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.filename:
        inner = array.shape[1:]
        per_row = int(np.prod(inner, dtype=np.int64))
        with open(array.filename, "rb") as fh:
            fh.seek(array.offset + start * per_row * array.itemsize)
            out = np.fromfile(fh, dtype=array.dtype, count=(stop - start) * per_row)
        return out.reshape((stop - start, *inner))
    return np.array(array[start:stop])


def _copy_kept_rows(src: Path, dst: Path, keep: np.ndarray) -> None:
    """Write the rows of ``src`` (a .npy) where ``keep`` is True to ``dst``, block by block."""
    full = np.load(src, mmap_mode="r", allow_pickle=False)
    shape, dtype = full.shape, full.dtype
    header = dict(
        descr=np.lib.format.dtype_to_descr(dtype),
        fortran_order=False,
        shape=(int(keep.sum()), *shape[1:]),
    )
    block = _rows_per_block(shape, dtype.itemsize)
    with open(dst, "wb") as fh:
        np.lib.format.write_array_header_2_0(fh, header)
        for s in range(0, shape[0], block):
            rows = read_rows(full, s, s + block)
            rows[keep[s : s + block]].tofile(fh)
    del full


def _prepare_stream(
    cfg: DataConfig,
    backend: Backend,
    out_dir: str | Path,
    reference: dict | None = None,
    chunk_rows: int = 0,
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Streaming ``prepare`` of a long usage table; returns (meta, attributes, rejects)."""
    chunk_rows = int(chunk_rows) or CHUNK_ROWS
    if not cfg.usage:
        raise DataError("data.usage: no usage file given")
    path = Path(cfg.usage)
    ids, keys, is_date, metric_map = _scan_long(cfg, path, chunk_rows)
    metric_map = _reference_metrics(cfg, metric_map, reference)
    shift, periods = _reference_window(len(keys), _period_labels(keys, is_date), reference)
    t_out, m = len(periods), len(metric_map)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    full = out / ".usage.npy.stream.tmp"
    final = out / ".usage.npy.tmp"
    try:
        writer = _MappedRows(full, (len(ids), t_out, m), np.float32)
        try:
            mask = _fill_long(
                cfg, path, chunk_rows, ids, keys, list(metric_map.values()), shift, t_out, writer
            )
        finally:
            writer.close()
        sel = _select(cfg, backend, ids, mask, periods, reference)
        keep = sel["keep"]
        if keep.all():
            full.replace(final)
        else:
            _copy_kept_rows(full, final, keep)
            full.unlink()
            mask, ids = mask[keep], ids[keep]  # copies only where rows are dropped
        meta = _meta(cfg, list(metric_map), periods, sel)
        final.replace(out / "usage.npy")
        _save_rest(
            out, mask, sel["static"], sel["churn"], sel["migration"], ids, meta,
            sel["attributes"], sel["rejects"],
        )  # fmt: skip
    finally:
        full.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
    return meta, sel["attributes"], sel["rejects"]


def _save_rest(
    out: Path,
    mask: np.ndarray,
    static: np.ndarray,
    churn: np.ndarray,
    migration: np.ndarray,
    ids: np.ndarray,
    meta: dict,
    attributes: pd.DataFrame,
    rejects: pd.DataFrame,
) -> None:
    """Every panel file but usage.npy; meta.json last, so a complete meta means a complete panel."""
    save_npy_atomic(out / "mask.npy", np.ascontiguousarray(mask, dtype=bool))
    save_npy_atomic(out / "static.npy", np.ascontiguousarray(static, dtype=np.float32))
    save_npy_atomic(out / "churn.npy", np.asarray(churn).astype(np.int8))
    save_npy_atomic(out / "migration.npy", np.asarray(migration).astype(np.int8))
    write_parquet_atomic(out / "index.parquet", _id_table(meta["id_column"], ids))
    write_parquet_atomic(out / "attributes.parquet", attributes)
    write_csv_atomic(out / "rejects.csv", rejects)
    write_json_atomic(out / "meta.json", meta)


def _id_table(column: str, ids: np.ndarray) -> pa.Table:
    """The ids as the Arrow table ``pd.DataFrame({column: ids}).to_parquet`` writes (same schema
    and pandas metadata), built without the frame: from a numpy string array pandas makes one
    Python string per id first (measured: +300 MB transient per 3M ids)."""
    ids = np.asarray(ids)
    schema = pa.Schema.from_pandas(pd.DataFrame({column: ids[:1]}), preserve_index=False)
    return pa.table([pa.array(ids).cast(schema.field(0).type)], schema=schema)


def save_panel(
    panel: Panel, attributes: pd.DataFrame, rejects: pd.DataFrame, out_dir: str | Path
) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_npy_atomic(out / "usage.npy", np.ascontiguousarray(panel.usage, dtype=np.float32))
    _save_rest(
        out, panel.mask, panel.static, panel.churn, panel.migration, panel.ids, panel.meta,
        attributes, rejects,
    )  # fmt: skip
    return out


def load_panel(panel_dir: str | Path, mmap: bool = True) -> Panel:
    d = Path(panel_dir)
    meta = read_json(d / "meta.json")
    try:
        ids = pd.read_parquet(d / "index.parquet").iloc[:, 0].astype(str).to_numpy()
    except (OSError, ValueError, IndexError, pa.ArrowException) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunDirError(f"{d / 'index.parquet'}: missing or unreadable ({why})") from None
    return Panel(
        usage=load_npy(d / "usage.npy", mmap),
        mask=load_npy(d / "mask.npy", mmap),
        static=load_npy(d / "static.npy", mmap),
        churn=load_npy(d / "churn.npy", mmap),
        migration=load_npy(d / "migration.npy", mmap),
        ids=ids,
        meta=meta,
    )


def load_attributes(panel_dir: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(panel_dir) / "attributes.parquet")


def prepare(
    cfg: DataConfig,
    backend: Backend,
    out_dir: str | Path,
    reference: dict | None = None,
    chunk_rows: int = 0,
) -> dict:
    """The ``prepare`` stage: tables -> panel directory. Returns the panel's meta (with counts).

    A long usage table on the host backend is streamed in chunks of ``chunk_rows`` rows
    (default :data:`CHUNK_ROWS`), so memory stays bounded at any number of rows; otherwise the
    table is read whole (see :func:`streams`).
    """
    if cfg.window_offset and cfg.churn_definition == "label":
        raise ConfigError(
            "data.window_offset: needs labels derived from usage (data.churn_definition)"
        )
    if streams(cfg, backend):
        meta = _prepare_stream(cfg, backend, out_dir, reference, chunk_rows)[0]
    else:
        panel, attributes, rejects = build_panel_whole(cfg, backend, reference)
        save_panel(panel, attributes, rejects, out_dir)
        meta = panel.meta
    if cfg.churn_definition != "label" and reference is None:  # scoring data has no label window
        meta = derive_panel_labels(out_dir, cfg)
    return meta
