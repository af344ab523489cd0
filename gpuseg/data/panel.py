"""The panel artifact: arrays, ids and meta of prepared subscribers; saving, loading, reading rows.

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
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gpuseg.errors import RunDirError
from gpuseg.io.store import (
    ListOf,
    load_npy,
    read_json,
    read_parquet_checked,
    save_npy_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_parquet_atomic,
)

# what meta.json must hold for a panel to be read (checked by load_panel)
META_SCHEMA = dict(
    metrics=ListOf(str),
    periods=ListOf(str),
    static_features=ListOf(str),
    static_encoding=ListOf(dict),
    id_column=str,
    counts=dict(input=int, output=int, rejected=int),
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


COPY_BYTES = 64 << 20  # bytes per block when copying or reading panel rows


def rows_per_block(array_shape: tuple[int, ...], itemsize: int) -> int:
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


def save_panel_rest(
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
    write_parquet_atomic(out / "index.parquet", id_table(meta["id_column"], ids))
    write_parquet_atomic(out / "attributes.parquet", attributes)
    write_csv_atomic(out / "rejects.csv", rejects)
    write_json_atomic(out / "meta.json", meta)


def id_table(column: str, ids: np.ndarray) -> pa.Table:
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
    save_panel_rest(
        out, panel.mask, panel.static, panel.churn, panel.migration, panel.ids, panel.meta,
        attributes, rejects,
    )  # fmt: skip
    return out


ID_BLOCK = 1 << 20  # ids converted to numpy at a time
ID_FIXED_WIDTH = 64  # longest id held fixed-width; one longer id makes every row that wide


def read_ids(path: Path, block: int = ID_BLOCK) -> np.ndarray:
    """The first column of ``path`` (the panel's ``index.parquet``) as one fixed-width str
    array when no id is longer than ``ID_FIXED_WIDTH`` characters (an array of Python strings
    otherwise). A string column without nulls is converted ``block`` ids at a time, so there is
    never a Python string for every id (10M ids: 0.4 GB fixed-width; as Python strings 0.7 GB
    more, which the allocator may keep after they are freed); any other column as text, as
    pandas writes it."""
    name = pq.read_schema(path).names[0]
    col = pq.read_table(path, columns=[name]).column(name)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) or col.null_count:
        return np.asarray(col.to_pandas().astype(str).to_numpy()).astype(str)
    width = pc.max(pc.utf8_length(col)).as_py() if len(col) else 1
    if (width or 1) > ID_FIXED_WIDTH:  # Python strings: N x width x 4 bytes could not fit
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
    ids = np.empty(len(col), dtype=f"<U{max(int(width or 1), 1)}")
    for s in range(0, len(col), block):
        ids[s : s + block] = col.slice(s, block).to_numpy(zero_copy_only=False)
    return ids


def load_panel(panel_dir: str | Path, mmap: bool = True) -> Panel:
    """The panel in ``panel_dir``, every file checked for type and shape (RunDirError naming the
    first one that is damaged)."""
    d = Path(panel_dir)
    meta = read_json(d / "meta.json", META_SCHEMA)
    try:
        ids = read_ids(d / "index.parquet")
    except (OSError, ValueError, IndexError, pa.ArrowException) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunDirError(f"{d / 'index.parquet'}: missing or unreadable ({why})") from None
    panel = Panel(
        usage=load_npy(d / "usage.npy", mmap),
        mask=load_npy(d / "mask.npy", mmap),
        static=load_npy(d / "static.npy", mmap),
        churn=load_npy(d / "churn.npy", mmap),
        migration=load_npy(d / "migration.npy", mmap),
        ids=ids,
        meta=meta,
    )
    check_panel(panel, d)
    return panel


def check_panel(panel: Panel, d: Path) -> None:
    """RunDirError naming the first panel file whose dtype or shape does not fit the others."""
    n, t, m = len(panel.ids), len(panel.meta["periods"]), len(panel.meta["metrics"])
    s = len(panel.meta["static_features"])
    want = dict(
        usage=((n, t, m), "f"), mask=((n, t), "b"), static=((n, s), "f"), churn=((n,), "i"),
        migration=((n,), "i"),
    )  # fmt: skip
    for name, (shape, kind) in want.items():
        arr = getattr(panel, name)
        if arr.shape != shape or arr.dtype.kind != kind:
            raise RunDirError(
                f"{d / (name + '.npy')}: shape {arr.shape} {arr.dtype}, expected {shape} "
                f"({ {'f': 'float', 'b': 'bool', 'i': 'integer'}[kind] }) from index.parquet and "
                "meta.json; the panel is damaged: prepare it again"
            )


def load_attributes(panel_dir: str | Path) -> pd.DataFrame:
    return read_parquet_checked(Path(panel_dir) / "attributes.parquet")


def panel_rows(panel: Panel, start: int, stop: int) -> Panel:
    """Rows [start, stop) of a panel (memory-mapped arrays stay mapped)."""
    sl = slice(start, stop)
    return Panel(
        usage=panel.usage[sl],
        mask=panel.mask[sl],
        static=panel.static[sl],
        churn=panel.churn[sl],
        migration=panel.migration[sl],
        ids=panel.ids[sl],
        meta=panel.meta,
    )
