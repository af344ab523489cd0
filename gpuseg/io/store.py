"""Artifacts on disk: atomic writes (temporary file, then rename) and run-directory checks.

A stage writes its outputs through these functions, so a run killed mid-write never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gpuseg.errors import RunDirError


def file_mode() -> int:
    """The mode of a new file under the process umask (0644 under umask 022, 0600 under 077).

    The one permission rule: every file gpuseg writes, per-subscriber data and aggregate reports
    alike, gets the mode the user's umask gives a new file; ``umask 077`` keeps them private.
    """
    try:  # Linux: read it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting, then restore at once
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, file_mode())  # mkstemp makes 0600: the umask's mode, as streamed files get
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_json_atomic(path: Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_npy_atomic(path: Path, array: np.ndarray) -> Path:
    def write(p: Path) -> None:
        with open(p, "wb") as fh:
            np.save(fh, array, allow_pickle=False)

    return atomic_write(path, write)


def concat_npy_atomic(path: Path, sources: list[Path], chunk_rows: int = 65_536) -> Path:
    """Concatenate ``.npy`` files along axis 0 into ``path``, streaming (memory: one chunk)."""
    arrays = [np.load(s, mmap_mode="r", allow_pickle=False) for s in sources]
    shape = (sum(len(a) for a in arrays),) + arrays[0].shape[1:]

    def write(p: Path) -> None:
        out = np.lib.format.open_memmap(p, mode="w+", dtype=arrays[0].dtype, shape=shape)
        row = 0
        for a in arrays:
            for s in range(0, len(a), chunk_rows):
                block = a[s : s + chunk_rows]
                out[row : row + len(block)] = block
                row += len(block)
        out.flush()
        del out

    return atomic_write(path, write)


def concat_parquet_atomic(path: Path, sources: list[Path]) -> Path:
    """Concatenate Parquet files with compatible schemas into ``path``, one file at a time."""

    schemas = [pq.read_schema(s) for s in sources]
    schema = pa.unify_schemas(schemas, promote_options="permissive").remove_metadata()

    def write(p: Path) -> None:
        with pq.ParquetWriter(p, schema) as writer:
            for s in sources:
                for i in range(pq.ParquetFile(s).num_row_groups):  # one row group in memory
                    table = pq.ParquetFile(s).read_row_group(i).replace_schema_metadata(None)
                    writer.write_table(table.select(schema.names).cast(schema))

    return atomic_write(path, write)


def write_parquet_atomic(path: Path, frame) -> Path:
    """A pandas frame (without its index) or a pyarrow Table to Parquet."""
    if hasattr(frame, "to_parquet"):
        return atomic_write(path, lambda p: frame.to_parquet(p, index=False))

    return atomic_write(path, lambda p: pq.write_table(frame, p, compression="snappy"))


def write_csv_atomic(path: Path, frame) -> Path:
    return atomic_write(path, lambda p: frame.to_csv(p, index=False))


# which command writes each run-directory file: the hint of a "missing" error
WRITERS = {
    "panel": "prepare",
    "model": "train",
    "metrics.json": "train",
    "split.npz": "train",
    "embeddings.parquet": "embed",
    "predictions.parquet": "embed",
    "segments.parquet": "cluster",
    "cluster.json": "cluster",
    "report": "report",
    "summary.json": "run",
    "best.yaml": "tune",
    "evaluation.json": "evaluate",
}


def missing_hint(path: Path) -> str:
    """``run `gpuseg <stage>` first`` for a run-directory file, by its name or its folder."""
    path = Path(path)
    for key in (path.name, path.stem.split(".")[0], path.parent.name):
        if key in WRITERS:
            return f"run `gpuseg {WRITERS[key]}` (or `gpuseg run`) first"
    return "run the stage that writes it first (`gpuseg run` runs them all)"


def embeddings_rows(path: Path) -> int:
    """Row count of an embeddings Parquet file, from its footer."""
    return pq.ParquetFile(path).metadata.num_rows


def read_embeddings(
    path: Path, start: int = 0, stop: int | None = None, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Ids (N,) and the float32 matrix (N, E) of an embeddings Parquet file (the id column, then
    e0..e{E-1}): rows ``start:stop`` (only the row groups they touch are read), or the row
    indices ``rows``."""
    pf = pq.ParquetFile(path)
    if rows is not None:
        table = pf.read().take(pa.array(np.asarray(rows, dtype=np.int64)))
    else:
        stop = pf.metadata.num_rows if stop is None else stop
        pieces, row = [], 0
        for i in range(pf.num_row_groups):
            n = pf.metadata.row_group(i).num_rows
            if row < stop and row + n > start:
                t = pf.read_row_group(i)
                pieces.append(t.slice(max(start - row, 0), min(stop, row + n) - max(start, row)))
            row += n
        table = pa.concat_tables(pieces) if pieces else pf.schema_arrow.empty_table()
    ids = table.column(0).to_numpy(zero_copy_only=False)
    x = np.stack([table.column(i).to_numpy() for i in range(1, table.num_columns)], axis=1)
    return ids, x.astype(np.float32)


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: missing ({missing_hint(path)})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def load_npy(path: Path, mmap: bool = True) -> np.ndarray:
    """Load an array saved by :func:`save_npy_atomic`, memory-mapped; pickled arrays are refused."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: missing ({missing_hint(path)})")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        raise RunDirError(f"{path}: not a plain numeric array ({exc})") from None


def require(path: Path, what: str) -> Path:
    """``path`` if it exists, else a RunDirError saying which stage makes it."""
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{path}: missing; {what}")
    return path
