"""Artifacts on disk: atomic writes (temporary file, then rename) and run-directory checks.

A stage writes its outputs through these functions, so a run killed mid-write never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gpuseg.errors import RunDirError, WriteError

# errors of the place written to (not of gpuseg): reported as WriteError naming the file
WRITE_ERRNOS = {
    errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG,
    errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.ENOENT, errno.EEXIST,
}  # fmt: skip


def write_error(path: Path, exc: OSError) -> WriteError:
    """One line naming ``path`` and why it cannot be written."""
    why = exc.strerror or str(exc).strip().splitlines()[0] or type(exc).__name__
    return WriteError(f"{path}: cannot write ({why})")


def temp_path(path: Path) -> Path:
    """A new, empty, uniquely named temporary file next to ``path`` (``.name.XXXX.tmp``), for a
    write that is renamed onto ``path`` when complete; two writers never share one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    os.close(fd)
    return Path(tmp)


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
    """``write(tmp)`` into a unique temporary file, then an atomic rename onto ``path``.

    A failed write (read-only place, disk full, ...) raises WriteError naming ``path``; the
    temporary file is removed whatever happened."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())  # mkstemp makes 0600: the umask's mode, as streamed files get
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in WRITE_ERRNOS:
            raise write_error(path, exc) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def reserve(path: Path) -> None:
    """Allocate every block of ``path`` (a sparse file made for a memory map) before it is mapped:
    a full disk is then a WriteError here, not a SIGBUS at the first write through the map."""
    path = Path(path)
    size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise write_error(path, exc) from None
        free = shutil.disk_usage(path.parent).free  # no fallocate here: check the space instead
        if free < size:
            raise WriteError(
                f"{path}: cannot write ({size:,} bytes needed, {free:,} free on the disk)"
            ) from None
    finally:
        os.close(fd)


def open_memmap_reserved(path: Path, dtype, shape: tuple[int, ...]) -> np.memmap:
    """A new ``.npy`` opened for writing through a memory map, its blocks allocated first
    (:func:`reserve`), so a full disk is an error, never SIGBUS."""
    try:
        array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        reserve(path)
    except BaseException:
        del array
        raise
    return array


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
        out = open_memmap_reserved(p, arrays[0].dtype, shape)
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
    """Row count of an embeddings Parquet file, from its footer (RunDirError when unreadable)."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, ValueError, pa.ArrowException) as exc:
        why = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise RunDirError(f"{path}: unreadable embeddings ({why})") from None


def read_embeddings(
    path: Path, start: int = 0, stop: int | None = None, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Ids (N,) and the float32 matrix (N, E) of an embeddings Parquet file (the id column, then
    e0..e{E-1}): rows ``start:stop`` (only the row groups they touch are read), or the row
    indices ``rows``. RunDirError naming the file when it is missing, unreadable, has no
    embedding column or holds a value that is not a finite number."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: missing; run `gpuseg embed` first")
    try:
        ids, x = _read_embeddings(path, start, stop, rows)
    except RunDirError:
        raise
    except (OSError, ValueError, TypeError, pa.ArrowException) as exc:
        why = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise RunDirError(f"{path}: unreadable embeddings ({why})") from None
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1 + (start if rows is None else 0)
        raise RunDirError(f"{path}: row {row}: an embedding value is NaN or infinite")
    return ids, x


def _read_embeddings(path: Path, start: int, stop: int | None, rows: np.ndarray | None):
    pf = pq.ParquetFile(path)
    if pf.schema_arrow.names[1:] == [] or not all(
        pa.types.is_floating(t) or pa.types.is_integer(t) for t in pf.schema_arrow.types[1:]
    ):
        raise RunDirError(f"{path}: embedding columns e0, e1, ... must be numbers")
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


class ListOf:
    """Schema entry: a JSON list whose items all have type ``item`` (a type or a schema dict)."""

    def __init__(self, item: Any) -> None:
        self.item = item


_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer",
               float: "a number", bool: "true or false"}  # fmt: skip


def _json_type(value: Any) -> str:
    for tp, name in _JSON_NAMES.items():
        if type(value) is tp:
            return name
    return "null" if value is None else type(value).__name__


def _matches(value: Any, tp: Any) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def check_json(path: Path, data: Any, schema: dict, where: str = "") -> Any:
    """``data`` if it has every key of ``schema`` with the right JSON type, else RunDirError
    naming the file and the key. Schema values: a type, a nested schema dict, a
    :class:`ListOf`, or a tuple of types (any of them; ``type(None)`` allows null)."""
    if not isinstance(data, dict):
        what = f"'{where}'" if where else "the top level"
        raise RunDirError(f"{path}: {what} must be an object, got {_json_type(data)}")
    for key, tp in schema.items():
        name = f"{where}.{key}" if where else key
        if key not in data:
            raise RunDirError(f"{path}: no '{name}' entry (damaged, or from another gpuseg)")
        value = data[key]
        if isinstance(tp, dict):
            check_json(path, value, tp, name)
        elif isinstance(tp, ListOf):
            if not isinstance(value, list):
                raise RunDirError(f"{path}: '{name}' must be a list, got {_json_type(value)}")
            for i, item in enumerate(value):
                if isinstance(tp.item, dict):
                    check_json(path, item, tp.item, f"{name}[{i}]")
                elif not _matches(item, tp.item):
                    raise RunDirError(
                        f"{path}: '{name}[{i}]' must be {_JSON_NAMES.get(tp.item, tp.item)}, "
                        f"got {_json_type(item)}"
                    )
        elif not any(_matches(value, t) for t in (tp if isinstance(tp, tuple) else (tp,))):
            want = " or ".join(
                _JSON_NAMES.get(t, "null") for t in (tp if isinstance(tp, tuple) else (tp,))
            )
            raise RunDirError(f"{path}: '{name}' must be {want}, got {_json_type(value)}")
    return data


def read_json(path: Path, schema: dict | None = None) -> Any:
    """A JSON file of a run directory; with ``schema`` its shape is checked (:func:`check_json`)."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: missing ({missing_hint(path)})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except (UnicodeDecodeError, RecursionError):
        raise RunDirError(
            f"{path}: not valid JSON (not UTF-8 text, or nested too deeply)"
        ) from None
    return data if schema is None else check_json(path, data, schema)


def read_parquet_checked(
    path: Path, columns: list[str] | None = None, numeric: tuple[str, ...] = (), what: str = ""
):
    """A Parquet file of a run directory as a pandas frame: RunDirError naming the file when it
    is missing, unreadable (truncated, not Parquet), lacks one of ``columns``, or holds a
    non-numeric or non-finite value in a ``numeric`` column (the row is named, never the id)."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: missing; {what or 'run the stage that writes it first'}")
    try:
        schema = pq.read_schema(path)
        names = [n for n in schema.names if not n.startswith("__index_level_")]
        for col in [*(columns or []), *numeric]:
            if col not in names:
                raise RunDirError(f"{path}: no '{col}' column (damaged, or from another gpuseg)")
        table = pq.read_table(path, columns=columns)
    except RunDirError:
        raise
    except (OSError, ValueError, pa.ArrowException) as exc:
        why = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise RunDirError(f"{path}: unreadable Parquet file ({why})") from None
    for col in numeric:
        arr = table.column(col)
        if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
            if not pa.types.is_boolean(arr.type):
                raise RunDirError(f"{path}: column '{col}' is not numeric ({arr.type})")
            arr = arr.cast(pa.int8())
        values = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)  # null: NaN
        bad = ~np.isfinite(values)
        if bad.any():
            raise RunDirError(
                f"{path}: column '{col}' row {int(np.flatnonzero(bad)[0]) + 1}: NaN or infinite"
            )
    frame = table.to_pandas()
    return frame


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


def json_ready(obj: Any) -> Any:
    """JSON-ready copy: numpy scalars and arrays to Python, NaN and inf to None."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj
