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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpuseg.backend import Backend
from gpuseg.config import DataConfig
from gpuseg.errors import DataError
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


def _numeric(frame, column: str, path: Path, xdf) -> Any:
    """The column as float64; non-numeric, NaN, inf and negative values raise DataError."""
    col = frame[column]
    if col.dtype == bool or str(col.dtype) == "boolean":
        col = col.astype("float64")
    if not xdf.api.types.is_numeric_dtype(col.dtype):
        coerced = xdf.to_numeric(col, errors="coerce")
        bad = coerced.isna() & col.notna()
        if bool(bad.any()):
            row = _first_row(bad)
            raise DataError(f"{path}: column '{column}' row {row}: non-numeric value")
        col = coerced
    col = col.astype("float64")
    values = _host(col)
    if np.isnan(values).any():
        row = int(np.flatnonzero(np.isnan(values))[0]) + 1
        raise DataError(
            f"{path}: column '{column}' row {row}: missing value (NaN); drop or fill the row"
        )
    if np.isinf(values).any():
        row = int(np.flatnonzero(np.isinf(values))[0]) + 1
        raise DataError(f"{path}: column '{column}' row {row}: infinite value")
    if (values < 0).any():
        row = int(np.flatnonzero(values < 0)[0]) + 1
        raise DataError(f"{path}: column '{column}' row {row}: negative usage value")
    return values


_PERIOD_FORMATS = (("%Y-%m-%d", None), ("%Y-%m", None), ("%G-W%V-%u", "-1"), ("%Y%m%d", None))


def parse_periods(values: np.ndarray, path: Path, column: str) -> np.ndarray:
    """Period labels -> sortable int64 keys (days since epoch for dates, the integer otherwise).

    Accepts dates, integers, or strings in one of: YYYY-MM-DD, YYYY-MM, YYYY-Www, YYYYMMDD. A column
    mixing formats, or holding values that no format reads, raises DataError naming the first row.
    """
    return parse_periods_typed(values, path, column)[0]


def parse_periods_typed(values: np.ndarray, path: Path, column: str) -> tuple[np.ndarray, bool]:
    """:func:`parse_periods` plus whether the keys are dates (days since epoch) or integers."""
    values = np.asarray(values)
    if values.dtype.kind == "M":
        return values.astype("datetime64[D]").astype(np.int64), True
    if values.dtype.kind in "iu":
        return values.astype(np.int64), False
    if values.dtype.kind == "f":
        if np.isnan(values).any():
            raise DataError(
                f"{path}: column '{column}' row {int(np.flatnonzero(np.isnan(values))[0]) + 1}: missing period"
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
            f"{path}: column '{column}' row {int(np.flatnonzero(text.isna())[0]) + 1}: missing period"
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
            row = int(np.flatnonzero(ok != ok[0])[0]) + 1  # first row read differently from row 1
            raise DataError(
                f"{path}: column '{column}' row {row}: period format differs from earlier rows"
            )
    if text.str.fullmatch(r"-?\d+").all():
        return text.astype(np.int64).to_numpy(), False
    raise DataError(
        f"{path}: column '{column}' row 1: unreadable period (use YYYY-MM-DD, YYYY-MM, YYYY-Www or integers)"
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
                    f"{path}: column '{col}' (metric '{name}' in data.metrics) not found; columns: {', '.join(columns[:20])}"
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
            f"{path}: column '{cfg.id_column}' row {_first_row(ids_col.isna())}: missing subscriber id"
        )
    raw_periods = _host(frame[cfg.period_column])
    period_keys, is_date = parse_periods_typed(raw_periods, path, cfg.period_column)

    # factorize ids (sorted, so the panel order does not depend on the row order) and periods
    sub_codes, sub_uniques = xdf.factorize(ids_col.astype("str"), sort=True)
    sub_codes = np.asarray(backend.to_numpy(sub_codes), dtype=np.int64)
    ids = np.asarray(backend.to_numpy(sub_uniques)).astype(str)
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
                f"{path}: no columns match metric '{prefix}' (metric '{name}') with data.wide_pattern"
            )
    periods = sorted({p for _, p in cells})
    ids_col = frame[cfg.id_column]
    if bool(ids_col.isna().any()):
        raise DataError(
            f"{path}: column '{cfg.id_column}' row {_first_row(ids_col.isna())}: missing subscriber id"
        )
    ids = _host(ids_col.astype("str")).astype(str)
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
    blocks, names = [], []
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
                        f"{path}: column '{c}' row {int(np.flatnonzero(mapped.isna())[0]) + 1}: not a boolean"
                    )
                s = mapped
            blocks.append(s.astype(float).fillna(0).to_numpy()[:, None])
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
                        f"{path}: column '{c}' row {int(np.flatnonzero(bad)[0]) + 1}: non-numeric value"
                    )
            if np.isinf(v).any():
                raise DataError(
                    f"{path}: column '{c}' row {int(np.flatnonzero(np.isinf(v))[0]) + 1}: infinite value"
                )
            miss = np.isnan(v)
            blocks.append(np.nan_to_num(v, nan=0.0)[:, None])
            names.append(c)
            if enc.get("missing"):
                blocks.append(miss.astype(float)[:, None])
                names.append(f"{c}_missing")
        else:
            cats = enc["categories"]
            s = s.astype(str)
            blocks.append(
                np.stack([(s == k).to_numpy(dtype=float) for k in cats], axis=1)
                if cats
                else np.zeros((len(s), 0))
            )
            names.extend(f"{c}={k}" for k in cats)
    matrix = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(frame), 0))
    return matrix.astype(np.float32), names, encoding


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
    lab_ids = frame[cfg.id_column].astype(str).to_numpy()
    pos = np.searchsorted(ids, lab_ids)
    pos_c = np.minimum(pos, n - 1)
    found = ids[pos_c] == lab_ids
    rejected = np.asarray(rejected if rejected is not None else [], dtype=str)
    skip = ~found & np.isin(lab_ids, rejected)
    unknown = ~found & ~skip  # labels of subscribers only in the static table: already rejected
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0]) + 1
        raise DataError(
            f"{path}: row {row}: label for a subscriber not in the usage table ({int(unknown.sum())} such rows)"
        )
    if pd.Series(lab_ids).duplicated().any():
        raise DataError(
            f"{path}: row {int(np.flatnonzero(pd.Series(lab_ids).duplicated())[0]) + 1}: duplicate subscriber"
        )
    if cfg.churn_column in frame.columns:
        c = pd.to_numeric(frame[cfg.churn_column], errors="coerce")
        bad = ~c.isin([0, 1]) & frame[cfg.churn_column].notna()  # 'yes' is bad, not unknown
        if bad.any():
            raise DataError(
                f"{path}: column '{cfg.churn_column}' row {int(np.flatnonzero(bad)[0]) + 1}: churn must be 0 or 1"
            )
        churn[pos[found]] = c.fillna(-1).astype(np.int8).to_numpy()[found]
    if cfg.migration_column in frame.columns:
        raw = frame[cfg.migration_column]
        mapped = raw.map(
            lambda v: (
                MIGRATION_CODES.get(v.strip().lower() if isinstance(v, str) else v)
                if pd.notna(v)
                else -1
            )
        )
        if mapped.isna().any():
            row = int(np.flatnonzero(mapped.isna())[0]) + 1
            raise DataError(
                f"{path}: column '{cfg.migration_column}' row {row}: migration must be down/stay/up or -1/0/1"
            )
        migration[pos[found]] = mapped.astype(np.int8).to_numpy()[found]
    return churn, migration


# ---------------------------------------------------------------------------------------------
# The stage


def build_panel(
    cfg: DataConfig, backend: Backend, reference: dict | None = None
) -> tuple[Panel, pd.DataFrame, pd.DataFrame]:
    """Read and validate the tables; return (panel, raw static attributes, rejects).

    ``reference`` is a trained run's panel meta: scoring data then gets the same metrics, static
    encoding and periods count as training.
    """
    if not cfg.usage:
        raise DataError("data.usage: no usage file given")
    loader = load_wide if cfg.layout == "wide" else load_long
    ids, usage, mask, metrics, periods = loader(cfg, backend)
    if reference is not None:
        want = reference["metrics"]
        missing = [m for m in want if m not in metrics]
        if missing:
            raise DataError(f"{cfg.usage}: metric '{missing[0]}' used in training is missing")
        idx = [metrics.index(m) for m in want]
        usage, metrics = usage[:, :, idx], list(want)
        t_ref = len(reference["periods"])
        if usage.shape[1] >= t_ref:  # keep the latest periods, as many as in training
            usage, mask, periods = usage[:, -t_ref:], mask[:, -t_ref:], periods[-t_ref:]
        else:  # pad at the start: those periods count as missing
            pad = t_ref - usage.shape[1]
            usage = np.concatenate(
                [np.zeros((len(ids), pad, usage.shape[2]), np.float32), usage], axis=1
            )
            mask = np.concatenate([np.zeros((len(ids), pad), bool), mask], axis=1)
            periods = [f"pad{i}" for i in range(pad)] + periods
    n_usage = len(ids)

    rejects: list[tuple[str, str]] = []
    keep = np.ones(len(ids), dtype=bool)
    missing_frac = 1.0 - mask.mean(axis=1)
    too_sparse = (missing_frac > cfg.max_missing_frac) | (~mask.any(axis=1))
    for i in np.flatnonzero(too_sparse):
        rejects.append((ids[i], "too many missing periods" if mask[i].any() else "no usage rows"))
    keep &= ~too_sparse

    end_day = None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(periods[-1])):  # date labels (integers are not days)
        end_day = int(np.datetime64(periods[-1], "D").astype(np.int64))

    attributes = pd.DataFrame({cfg.id_column: ids})
    static = np.zeros((len(ids), 0), dtype=np.float32)
    static_names: list[str] = []
    encoding: list[dict] = []
    static_only = np.array([], dtype=str)
    if cfg.static:
        spath = Path(cfg.static)
        sframe = read_table(spath, backend, "static")
        sframe = sframe.to_pandas() if hasattr(sframe, "to_pandas") else sframe
        if cfg.id_column not in sframe.columns:
            raise DataError(f"{spath}: column '{cfg.id_column}' (data.id_column) not found")
        sframe[cfg.id_column] = sframe[cfg.id_column].astype(str)
        dup = sframe[cfg.id_column].duplicated()
        if dup.any():
            raise DataError(f"{spath}: row {int(np.flatnonzero(dup)[0]) + 1}: duplicate subscriber")
        columns = (
            cfg.static_columns
            if cfg.static_columns is not None
            else [c for c in sframe.columns if c != cfg.id_column]
        )
        for c in columns:
            if c not in sframe.columns:
                raise DataError(f"{spath}: column '{c}' (data.static_columns) not found")
        in_usage = sframe[cfg.id_column].isin(pd.Index(ids)).to_numpy()
        static_only = sframe[cfg.id_column].to_numpy()[~in_usage]
        rejects.extend((sid, "no usage rows") for sid in static_only)
        aligned = pd.DataFrame({cfg.id_column: ids}).merge(
            sframe, on=cfg.id_column, how="left", indicator=True
        )
        no_static = (aligned["_merge"] != "both").to_numpy()
        for i in np.flatnonzero(no_static & keep):
            rejects.append((ids[i], "no static attributes"))
        keep &= ~no_static
        attributes = aligned.drop(columns="_merge")
        ref_enc = reference["static_encoding"] if reference is not None else None
        enc_columns = columns if ref_enc is None else [e["column"] for e in ref_enc]
        kept = attributes.loc[keep, enc_columns].reset_index(drop=True)  # rejected rows stay out
        # the left merge made columns of rejected rows NaN, so booleans became objects: restore them
        kept = kept.infer_objects()
        matrix, static_names, encoding = encode_static(kept, enc_columns, spath, ref_enc, end_day)
        static = np.zeros((len(ids), matrix.shape[1]), dtype=np.float32)
        static[keep] = matrix

    churn, migration = _labels(cfg, ids, backend, static_only)  # static-only ids are rejects
    n_input = n_usage + len(static_only)
    panel = Panel(
        usage=usage[keep],
        mask=mask[keep],
        static=static[keep],
        churn=churn[keep],
        migration=migration[keep],
        ids=ids[keep],
        meta=dict(
            metrics=metrics,
            periods=periods,
            static_features=static_names,
            static_encoding=encoding,
            id_column=cfg.id_column,
            revenue_metric=cfg.revenue_metric,
            counts=dict(input=int(n_input), output=int(keep.sum()), rejected=len(rejects)),
            sources=dict(usage=str(cfg.usage), static=cfg.static, labels=cfg.labels),
            labelled=dict(
                churn=int((churn[keep] >= 0).sum()), migration=int((migration[keep] >= 0).sum())
            ),
        ),
    )
    rej = pd.DataFrame(rejects, columns=[cfg.id_column, "reason"])
    return panel, attributes.loc[keep].reset_index(drop=True), rej


def save_panel(
    panel: Panel, attributes: pd.DataFrame, rejects: pd.DataFrame, out_dir: str | Path
) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_npy_atomic(out / "usage.npy", np.ascontiguousarray(panel.usage, dtype=np.float32))
    save_npy_atomic(out / "mask.npy", np.ascontiguousarray(panel.mask, dtype=bool))
    save_npy_atomic(out / "static.npy", np.ascontiguousarray(panel.static, dtype=np.float32))
    save_npy_atomic(out / "churn.npy", panel.churn.astype(np.int8))
    save_npy_atomic(out / "migration.npy", panel.migration.astype(np.int8))
    write_parquet_atomic(out / "index.parquet", pd.DataFrame({panel.meta["id_column"]: panel.ids}))
    write_parquet_atomic(out / "attributes.parquet", attributes)
    write_csv_atomic(out / "rejects.csv", rejects)
    write_json_atomic(out / "meta.json", panel.meta)
    return out


def load_panel(panel_dir: str | Path, mmap: bool = True) -> Panel:
    d = Path(panel_dir)
    meta = read_json(d / "meta.json")
    ids = pd.read_parquet(d / "index.parquet").iloc[:, 0].astype(str).to_numpy()
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
    cfg: DataConfig, backend: Backend, out_dir: str | Path, reference: dict | None = None
) -> dict:
    """The ``prepare`` stage: tables -> panel directory. Returns the panel's meta (with counts)."""
    panel, attributes, rejects = build_panel(cfg, backend, reference)
    save_panel(panel, attributes, rejects, out_dir)
    return panel.meta
