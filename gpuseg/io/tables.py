"""Reading Parquet and CSV tables: one file-type dispatch, whole or in chunks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gpuseg.backend import Backend
from gpuseg.errors import DataError
from gpuseg.io.sniff import check_input_file, file_kind


def read_table(path: str | Path, backend: Backend, what: str):
    """Read a Parquet or CSV file with the backend's frame module; errors name the file."""
    p = Path(path)
    kind = check_input_file(p, what)  # bounded: exists, is a file, holds what its name says
    if kind == "parquet":
        _check_binary_is_text(p, what)
    xdf = backend.frame_module()
    try:
        frame = xdf.read_parquet(p) if kind == "parquet" else xdf.read_csv(p)
    except DataError:
        raise
    except Exception as exc:  # parser errors differ between pandas, pyarrow and cuDF
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{p}: cannot read {what} table: {msg}") from None
    if len(frame) == 0:
        raise DataError(f"{p}: {what} table has no rows")
    return frame


_file_kind = file_kind


def _check_binary_is_text(path: Path, what: str) -> None:
    """DataError naming the column and row of the first byte string that is not UTF-8 text in a
    Parquet file's binary columns (ids written as bytes); text columns are not read."""
    try:
        schema = pq.read_schema(path)
    except Exception:  # unreadable: the reader itself says why
        return
    binary = [
        f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)
    ]
    for name in binary:
        col = pq.read_table(path, columns=[name]).column(0)
        for row, value in enumerate(col.to_pylist(), 1):
            if value is not None:
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    raise DataError(
                        f"{path}: column '{name}' row {row}: not UTF-8 text in the {what} table"
                    ) from None


def _read_error(path: Path, what: str, exc: Exception) -> DataError:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DataError(f"{path}: cannot read {what} table: {msg}")


def table_columns(path: Path, what: str = "usage") -> list[str]:
    """Column names of a Parquet or CSV table, checked like :func:`read_table`; rows unread."""
    kind = check_input_file(path, what)  # bounded: the header line ends within a limit
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
