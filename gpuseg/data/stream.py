"""Streaming prepare of a long usage table: bounded memory at any number of subscribers."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from gpuseg.backend import Backend
from gpuseg.config import DataConfig
from gpuseg.data.layouts import (
    apply_fill,
    fill_policy,
    first_true_row,
    metric_columns,
    negative_ok,
    numeric_column,
)
from gpuseg.data.panel import read_rows, rows_per_block, save_panel_rest
from gpuseg.data.periods import check_spacing, parse_periods_typed, period_labels
from gpuseg.data.privacy import pseudonymize_ids
from gpuseg.data.select import build_meta, reference_metrics, reference_window, select_subscribers
from gpuseg.errors import DataError
from gpuseg.io.sniff import show_columns
from gpuseg.io.store import open_memmap_reserved, temp_path
from gpuseg.io.tables import arrow_ids_as_text, clean_missing, iter_chunks, table_columns

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


MERGE_IDS = 1 << 22  # collected per-chunk unique ids are merged once they exceed this


def _strings(values) -> np.ndarray:
    """A pyarrow or pandas array of strings as a numpy unicode array."""
    if isinstance(values, pa.Array):
        values = values.to_numpy(zero_copy_only=False)
    return np.asarray(values).astype(str)


def _utf8(value) -> bool:
    try:
        value.decode("utf-8") if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        return False
    return True


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
        try:
            arr = arrow_ids_as_text(arr)  # integer ids: '123', as read_table gives
        except (pa.ArrowInvalid, UnicodeDecodeError):  # bytes not UTF-8: the row, not the id
            row = next(i for i, v in enumerate(arr.to_pylist()) if not _utf8(v)) + 1
            raise DataError(
                f"{path}: column '{column}' row {row + offset}: subscriber id is not UTF-8 text"
            ) from None
        if not per_row:
            return None, _strings(pc.unique(arr))
        enc = pc.dictionary_encode(arr)
        return enc.indices.to_numpy(zero_copy_only=False), _strings(enc.dictionary)
    col = chunk[column]
    if bool(col.isna().any()):
        row = first_true_row(col.isna()) + offset
        raise DataError(f"{path}: column '{column}' row {row}: missing subscriber id")
    codes, uniques = pd.factorize(col.astype(str))  # CSV ids are read as text already
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
            raise DataError(f"{path}: column '{col}' ({key}) not found; {show_columns(columns)}")
    metrics = metric_columns(cfg, columns, {cfg.id_column, cfg.period_column}, path, pd, None)
    id_parts: list[np.ndarray] = []  # distinct ids of recent chunks, merged into ``merged``
    merged = np.array([], dtype=str)
    key_parts: list[np.ndarray] = []
    is_date = None
    for offset, chunk in iter_chunks(
        path, [cfg.id_column, cfg.period_column], chunk_rows, "usage", cfg.id_column,
        cfg.missing_markers,
    ):  # fmt: skip
        uniques = _chunk_ids(chunk, cfg.id_column, path, offset, per_row=False)[1]
        id_parts.append(pseudonymize_ids(uniques, cfg, path))
        if sum(len(p) for p in id_parts) > max(MERGE_IDS, len(merged)):  # geometric: n log n
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
    keys = np.unique(np.concatenate(key_parts))
    check_spacing(keys, bool(is_date), path, cfg.period_column)
    return ids, keys, bool(is_date), metrics


class _MappedRows:
    """A new ``.npy`` file filled by scattered writes through a shared mapping.

    After every block of rows the mapping's pages are dropped from this process
    (``MADV_DONTNEED``): dirty pages stay in the page cache and reach the file, but they no longer
    count in the resident set, which stays bounded whatever the array's size.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype) -> None:
        header = open_memmap_reserved(path, dtype, shape)  # a full disk: an error, not SIGBUS
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
    names: list[str] | None = None,
) -> tuple[np.ndarray, bool]:
    """Pass 2: values scattered into ``out`` (rows = ids); returns the (N, t_out) presence mask,
    whether any cell is missing (NaN, left for :func:`apply_fill`) and the negative cells kept
    per metric.

    A (subscriber, period) row seen before raises DataError naming the later row.
    ``names``: the gpuseg metric name of each column (for the fill and sign policies).
    """
    names = names or list(columns)
    any_nan = False
    negative = np.zeros(len(columns), dtype=np.int64)  # negative cells kept, per metric
    n, t_all = len(ids), len(keys)
    seen = np.zeros(n * t_all, dtype=bool)
    read = list(dict.fromkeys([cfg.id_column, cfg.period_column, *columns]))
    metric_cols = list(dict.fromkeys(columns))
    for offset, chunk in iter_chunks(
        path, read, chunk_rows, "usage", cfg.id_column, cfg.missing_markers
    ):
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
        frame = clean_missing(frame[metric_cols], cfg.missing_markers)
        values = np.empty((len(key), len(columns)), dtype=np.float32)
        for j, (name, col) in enumerate(zip(names, columns, strict=True)):
            values[:, j] = numeric_column(
                frame, col, path, pd, offset, nan_ok=fill_policy(cfg, name) != "error",
                negative_ok=negative_ok(cfg, name),
            )  # fmt: skip
        any_nan = any_nan or bool(np.isnan(values).any())
        negative += (values < 0).sum(axis=0)
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
    negatives = {m: int(k) for m, k in zip(names, negative, strict=True) if k}
    return mask, any_nan, negatives


def _fill_mapped(path: Path, mask: np.ndarray, metrics: list[str], cfg: DataConfig) -> dict:
    """:func:`apply_fill` over a ``.npy`` usage file, block by block; cells filled per metric."""
    usage = np.load(path, mmap_mode="r+", allow_pickle=False)
    counts: dict[str, int] = {}
    block = rows_per_block(usage.shape, usage.itemsize)
    for s in range(0, usage.shape[0], block):
        rows = np.array(usage[s : s + block])
        for metric, n in apply_fill(rows, mask[s : s + block], metrics, cfg).items():
            counts[metric] = counts.get(metric, 0) + n
        usage[s : s + block] = rows
    usage.flush()
    del usage
    return counts


def _copy_kept_rows(src: Path, dst: Path, keep: np.ndarray) -> None:
    """Write the rows of ``src`` (a .npy) where ``keep`` is True to ``dst``, block by block."""
    full = np.load(src, mmap_mode="r", allow_pickle=False)
    shape, dtype = full.shape, full.dtype
    header = dict(
        descr=np.lib.format.dtype_to_descr(dtype),
        fortran_order=False,
        shape=(int(keep.sum()), *shape[1:]),
    )
    block = rows_per_block(shape, dtype.itemsize)
    with open(dst, "wb") as fh:
        np.lib.format.write_array_header_2_0(fh, header)
        for s in range(0, shape[0], block):
            rows = read_rows(full, s, s + block)
            rows[keep[s : s + block]].tofile(fh)
    del full


def prepare_stream(
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
    metric_map = reference_metrics(cfg, metric_map, reference)
    shift, periods = reference_window(len(keys), period_labels(keys, is_date), reference)
    t_out, m = len(periods), len(metric_map)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    full, final = temp_path(out / "usage.npy"), temp_path(out / "usage.npy")  # unique names
    try:
        writer = _MappedRows(full, (len(ids), t_out, m), np.float32)
        try:
            mask, any_nan, negatives = _fill_long(
                cfg, path, chunk_rows, ids, keys, list(metric_map.values()), shift, t_out, writer,
                list(metric_map),
            )  # fmt: skip
        finally:
            writer.close()
        filled = _fill_mapped(full, mask, list(metric_map), cfg) if any_nan else {}
        sel = select_subscribers(cfg, backend, ids, mask, periods, reference)
        keep = sel["keep"]
        if keep.all():
            full.replace(final)
        else:
            _copy_kept_rows(full, final, keep)
            full.unlink()
            mask, ids = mask[keep], ids[keep]  # copies only where rows are dropped
        report = dict(filled=filled, negative=negatives)
        meta = build_meta(cfg, list(metric_map), periods, sel, report)
        final.replace(out / "usage.npy")
        save_panel_rest(
            out, mask, sel["static"], sel["churn"], sel["migration"], ids, meta,
            sel["attributes"], sel["rejects"],
        )  # fmt: skip
    finally:
        full.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
    return meta, sel["attributes"], sel["rejects"]
