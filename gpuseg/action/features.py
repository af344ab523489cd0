"""The per-subscriber inputs of the action models, read from a finished run directory.

One float32 matrix in panel row order: the window aggregates of :func:`gpuseg.model.window_stats`
(signed log1p), the encoded static attributes, the model's churn probability and, when the run
has them, its embeddings. Built chunk by chunk into a temporary file beside the run (removed
with the :class:`RunInputs`) and read back with explicit file reads (:func:`take_rows`,
:func:`gpuseg.data.panel.read_rows`), so the matrix never has to fit in memory: at 10M
subscribers it is about 3.6 GB. Raw attributes are held as one Arrow table (text columns of few
values as int8 dictionaries, :func:`compact_attributes`) and converted to pandas, in their
original types, a chunk at a time (:meth:`RunInputs.attribute_rows`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from gpuseg.config import RunConfig, load_config
from gpuseg.data.panel import Panel, load_panel, read_rows
from gpuseg.errors import RunDirError
from gpuseg.features.window import window_stats
from gpuseg.io.store import require

CHUNK = 16_384
PLAN_CHUNK = 65_536  # subscribers per chunk of the plan's chunked passes (~4 KB each)


def release_memory() -> None:
    """Hand memory freed after a phase back to the system: Arrow's pool keeps freed blocks for
    reuse (hundreds of MB after a hash lookup over 10M ids), and glibc keeps freed heap pages
    (chunk-sized arrays below its mmap threshold). Only the resident set changes, no value."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where there is none (other C libraries, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


@dataclass
class RunInputs:
    """What the action stage reads from a run directory."""

    run_dir: Path
    cfg: RunConfig
    panel: Panel
    attribute_table: pa.Table | None  # panel row order
    ids: np.ndarray  # (N,) str, as in the run
    id_column: str
    churn_prob: np.ndarray  # (N,)
    segment: np.ndarray  # (N,) learned segment
    features: np.ndarray  # (N, F) float32, memory-mapped from a temporary file
    feature_names: list[str]
    # text columns held dictionary-encoded (compact_attributes): name -> the type they had
    attribute_types: dict[str, pa.DataType] = field(default_factory=dict)

    @property
    def attributes(self) -> pd.DataFrame | None:
        """Every subscriber's raw attributes as one pandas frame (whole-run code only)."""
        if self.attribute_table is None:
            return None
        return decoded(self.attribute_table, self.attribute_types).to_pandas()

    def attribute_rows(self, start: int, stop: int) -> pd.DataFrame | None:
        """Raw attributes of panel rows [start, stop), index 0..stop-start-1."""
        if self.attribute_table is None:
            return None
        part = self.attribute_table.slice(start, stop - start)
        return decoded(part, self.attribute_types).to_pandas()

    def panel_rows(self, start: int, stop: int) -> Panel:
        """Panel rows [start, stop) as in-memory copies (explicit file reads, so the mapped
        panel never enters the resident set)."""
        p = self.panel
        return Panel(
            usage=read_rows(p.usage, start, stop),
            mask=read_rows(p.mask, start, stop),
            static=read_rows(p.static, start, stop),
            churn=read_rows(p.churn, start, stop),
            migration=read_rows(p.migration, start, stop),
            ids=p.ids[start:stop],
            meta=p.meta,
        )


def compact_attributes(table: pa.Table) -> tuple[pa.Table, dict[str, pa.DataType]]:
    """``table`` with each text column of at most 127 distinct values per chunk held as a
    dictionary with int8 codes (one byte a row instead of an offset and the text: plan type,
    region, ... at 10M rows), and the original type of each such column, for :func:`decoded`."""
    types = {}
    for i, name in enumerate(table.column_names):
        col = table.column(i)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            continue
        enc = col.dictionary_encode()
        if any(len(c.dictionary) > 127 for c in enc.chunks):
            continue
        table = table.set_column(i, name, pc.cast(enc, pa.dictionary(pa.int8(), col.type)))
        types[name] = col.type
    return table, types


def decoded(table: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    """The columns :func:`compact_attributes` encoded, back in their original type."""
    for name, typ in types.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pc.cast(table.column(i), typ))
    return table


def take_rows(array: np.ndarray, rows: np.ndarray, block: int = PLAN_CHUNK) -> np.ndarray:
    """``array[rows]`` for any row indices, read block by block with
    :func:`gpuseg.data.panel.read_rows` (a memory-mapped array stays out of the resident set)."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    if len(rows) == 0:
        return out
    order = np.argsort(rows, kind="stable")
    srt = rows[order]
    for s in range(int(srt[0]) // block * block, int(srt[-1]) + 1, block):
        a, b = np.searchsorted(srt, [s, s + block])
        if a == b:
            continue
        part = read_rows(array, s, s + block)
        out[order[a:b]] = part[srt[a:b] - s]
    return out


def aligned(path: Path, ids: np.ndarray, id_col: str, columns: list[str]) -> pd.DataFrame:
    """``columns`` of the parquet at ``path`` in the order of ``ids`` (RunDirError on gaps).

    A file already in ``ids`` order (what the run's own stages write) is read one column at a
    time from Arrow, without a pandas index of the ids."""
    path = require(path, "run `gpuseg run` (or its stages) first")
    try:
        names = pq.read_schema(path).names
        for col in [id_col, *columns]:
            if col not in names:
                raise RunDirError(f"{path}: no '{col}' column")
        keys = pq.read_table(path, columns=[id_col]).column(id_col)
        in_order = (
            len(keys) == len(ids)
            and (pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type))
            and keys.cast(pa.string()).equals(pa.chunked_array([pa.array(ids, pa.string())]))
        )
        del keys
        if in_order:
            out = {}
            for c in columns:
                col = pq.read_table(path, columns=[c]).column(c)
                if col.null_count:
                    in_order = False
                    break
                out[c] = col.to_numpy()
            if in_order:
                return pd.DataFrame(out, copy=False)
        frame = pq.read_table(path, columns=[id_col, *columns]).to_pandas()
    except RunDirError:
        raise
    except (OSError, ValueError, pa.ArrowException) as exc:
        why = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise RunDirError(f"{path}: unreadable Parquet file ({why})") from None
    keys = frame[id_col].astype(str)
    if keys.duplicated().any():
        raise RunDirError(f"{path}: duplicate {id_col} values")
    out = frame.set_index(keys.to_numpy())[columns].reindex(ids)
    if out.isna().any().any():
        raise RunDirError(
            f"{path}: {int(out.isna().any(axis=1).sum()):,} panel subscribers missing"
        )
    return out


def read_run(run_dir: str | Path, embeddings: bool = True, chunk: int = CHUNK) -> RunInputs:
    """Load a finished run (panel, predictions, segments, optionally embeddings) and features."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: not a run directory")
    cfg_path = run_dir / "config.yaml"
    cfg = load_config(cfg_path) if cfg_path.is_file() else load_config(None)
    panel_dir = run_dir / "panel"
    require(panel_dir / "meta.json", "run `gpuseg prepare` first")
    panel = load_panel(panel_dir)
    id_col = panel.meta.get("id_column", "subscriber_id")
    ids = np.asarray(panel.ids)
    if ids.dtype.kind != "U":
        ids = ids.astype(str)
    panel.ids = ids  # one copy of the ids (fixed-width), not a Python string each
    n_ids = len(ids)
    attributes, attribute_types = None, {}
    if (panel_dir / "attributes.parquet").is_file():
        try:
            attributes = pq.read_table(panel_dir / "attributes.parquet")
        except (OSError, ValueError, pa.ArrowException) as exc:
            why = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
            raise RunDirError(f"{panel_dir / 'attributes.parquet'}: unreadable ({why})") from None
        if id_col in attributes.column_names:  # checked once here, then not held twice
            keys = pc.cast(attributes.column(id_col), pa.string())
            if len(keys) != n_ids or not keys.equals(
                pa.chunked_array([pa.array(ids, pa.string())])
            ):
                raise RunDirError(
                    f"{panel_dir / 'attributes.parquet'}: ids differ from the panel's "
                    "(prepare the panel again)"
                )
            attributes = attributes.drop_columns([id_col])
        attributes, attribute_types = compact_attributes(attributes)
    churn = aligned(run_dir / "predictions.parquet", ids, id_col, ["churn_prob"])
    segment = aligned(run_dir / "segments.parquet", ids, id_col, ["segment"])
    n = len(ids)
    metrics = list(panel.meta.get("metrics") or [])
    stats = ("mean", "last", "last_quarter", "slope", "drop", "std")
    names = [f"{m}__{s}" for s in stats for m in metrics] + ["share_present"]
    names += [f"static__{s}" for s in panel.meta.get("static_features") or []]
    n_window = len(names)
    p = churn["churn_prob"].to_numpy(np.float64)
    names.append("churn_prob")
    emb_path = run_dir / "embeddings.parquet"
    emb = None
    if embeddings and emb_path.is_file():
        cols = [c for c in pq.read_schema(emb_path).names if c != id_col]
        emb = aligned(emb_path, ids, id_col, cols)  # (N, E), copied a chunk at a time below
        names += [f"emb__{c}" for c in cols]
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".gpuseg-plan-"))
    path = tmp / "features.f32"
    with open(path, "wb") as fh:
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            block = np.empty((e - s, len(names)), dtype=np.float32)
            w = window_stats(
                torch.as_tensor(read_rows(panel.usage, s, e).astype(np.float64)),
                torch.as_tensor(read_rows(panel.mask, s, e).astype(bool)),
            ).numpy()
            w = np.sign(w) * np.log1p(np.abs(w))
            block[:, : w.shape[1]] = w
            block[:, w.shape[1] : n_window] = read_rows(panel.static, s, e).astype(np.float32)
            block[:, n_window] = p[s:e].astype(np.float32)
            if emb is not None:
                block[:, n_window + 1 :] = emb.iloc[s:e].to_numpy(np.float32)
            fh.write(block.tobytes())
    del emb
    features = (
        np.memmap(path, dtype=np.float32, mode="r", shape=(n, len(names)))
        if n
        else np.zeros((0, len(names)), np.float32)
    )
    inputs = RunInputs(
        run_dir=run_dir,
        cfg=cfg,
        panel=panel,
        attribute_table=attributes,
        attribute_types=attribute_types,
        ids=ids,
        id_column=id_col,
        churn_prob=p,
        segment=segment["segment"].to_numpy(np.int64),
        features=features,
        feature_names=names,
    )
    weakref.finalize(inputs, shutil.rmtree, tmp, True)
    release_memory()
    return inputs
