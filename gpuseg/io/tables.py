"""Reading Parquet and CSV tables: one file-type dispatch, whole or in chunks.

Subscriber ids are text exactly as written: a CSV id column is read as strings (``007`` and ``7``
stay two subscribers, ``00001`` keeps its zeros) and a Parquet id column is cast to its text
(integers as digits). With ``missing_markers`` given, a cell holding one of them (after trimming
spaces) is missing in every column but the id, and a text column whose other cells are all numbers
becomes numeric (``" "`` in IBM Telco's TotalCharges, ``?`` in Cell2Cell).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gpuseg.backend import Backend
from gpuseg.errors import DataError
from gpuseg.io.sniff import check_input_file, file_kind


def csv_options(id_column: str | None, missing_markers: list[str] | None) -> dict:
    """read_csv keywords: the id column as text; only ``missing_markers`` read as missing."""
    kw: dict = {}
    if id_column:
        kw["dtype"] = {id_column: str}
    if missing_markers is not None:
        kw.update(keep_default_na=False, na_values=list(missing_markers))
    return kw


def ids_as_text(col):
    """An id column (pandas or cuDF series) as text: strings unchanged, integers as digits."""
    if str(col.dtype) in ("object", "string", "str") or col.dtype == object:
        return col
    return col.astype("str")


def arrow_ids_as_text(arr: pa.Array) -> pa.Array:
    """:func:`ids_as_text` for an Arrow array (dictionary decoded; numbers as pandas writes
    them)."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr
    if pa.types.is_integer(arr.type):
        return pc.cast(arr, pa.string())
    return pa.array(arr.to_pandas().astype(str), type=pa.string(), from_pandas=True)


def clean_missing(frame, markers: list[str] | None, skip=(), xdf=pd):
    """Text columns of ``frame`` (but ``skip``): cells equal to a marker after trimming -> missing;
    a column whose remaining cells are all numbers -> float64. Other columns are unchanged."""
    if markers is None:
        return frame
    marker_set = [str(m).strip() for m in markers]
    changed = {}
    for c in frame.columns:
        if c in skip:
            continue
        col = frame[c]
        if not (col.dtype == object or str(col.dtype) in ("string", "str")):
            continue
        text = col.astype("str").str.strip().where(col.notna())
        text = text.where(~text.isin(marker_set))
        nan_text = text.str.lower() == "nan"  # a float's own text for missing (numpy writes it)
        number = xdf.to_numeric(text.where(~nan_text), errors="coerce")
        all_numbers = not bool((number.isna() & text.notna() & ~nan_text).any())
        if all_numbers and bool(text.notna().any()):
            changed[c] = number.astype("float64")
        elif bool((text.isna() & col.notna()).any()):
            changed[c] = text
    return frame.assign(**changed) if changed else frame


def read_table(
    path: str | Path,
    backend: Backend | None,
    what: str,
    id_column: str | None = None,
    missing_markers: list[str] | None = None,
    skip: tuple[str, ...] = (),
):
    """Read a Parquet or CSV file with the backend's frame module; errors name the file.

    ``id_column`` is read as text (see the module docstring); ``missing_markers`` (None: the frame
    module's defaults) are missing in every column but the id and ``skip``.
    """
    p = Path(path)
    kind = check_input_file(p, what)  # bounded: exists, is a file, holds what its name says
    if kind == "parquet":
        _check_binary_is_text(p, what)
    xdf = backend.frame_module() if backend is not None else pd  # None: pandas
    try:
        if kind == "parquet":
            frame = xdf.read_parquet(p)
        else:
            frame = xdf.read_csv(p, **csv_options(id_column, missing_markers))
    except DataError:
        raise
    except Exception as exc:  # parser errors differ between pandas, pyarrow and cuDF
        raise _read_error(p, what, exc) from None
    if len(frame) == 0:
        raise DataError(f"{p}: {what} table has no rows")
    if id_column and id_column in frame.columns:
        frame[id_column] = ids_as_text(frame[id_column])
    return clean_missing(frame, missing_markers, (id_column, *skip), xdf)


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


def iter_chunks(
    path: Path,
    columns: list[str],
    chunk_rows: int,
    what: str = "usage",
    id_column: str | None = None,
    missing_markers: list[str] | None = None,
):
    """Yield (file row offset, chunk) in file order: a pyarrow Table (Parquet, by record batch) or
    a pandas frame (CSV, read as :func:`read_table` reads it), holding ``columns``; never the whole
    table."""
    try:
        if file_kind(path) == "parquet":
            # pre_buffer=False: pre-buffered column chunks stay cached until the reader is
            # closed (measured: +400 MB per 1M subscribers), which defeats streaming
            pf = pq.ParquetFile(path, pre_buffer=False)
            batches = pf.iter_batches(batch_size=chunk_rows, columns=columns)
            chunks = (pa.Table.from_batches([b]) for b in batches)
        else:
            # every column is parsed: with ``usecols`` pandas silently drops a ragged row's extra
            # fields, and a ragged row must be an error (tests/corpus/ragged_long_row.csv)
            opts = csv_options(id_column, missing_markers)
            reader = pd.read_csv(path, chunksize=chunk_rows, low_memory=False, **opts)
            chunks = (c[columns] for c in reader)
        offset = 0
        for chunk in chunks:
            yield offset, chunk
            offset += len(chunk)
    except DataError:
        raise
    except Exception as exc:  # parser errors differ between pandas and pyarrow
        raise _read_error(path, what, exc) from None
