"""What an input file is, read from its first bytes only: bounded checks before any parser runs.

A parser handed the wrong thing fails late and vaguely ("no rows" for a JSON file named .csv, 15 GB
of memory for a 2 GB file without a line break). These checks read at most
:data:`MAX_HEADER_BYTES` and name the problem by kind: a directory, a symlink loop, JSON, Parquet,
gzip or zip (Excel) data under a CSV name, text under a Parquet name, a header line that does not
end.
"""

from __future__ import annotations

import csv
import errno
import os
import re
from pathlib import Path

from gpuseg.errors import DataError
from gpuseg.io.formats import table_format

MAX_HEADER_BYTES = 4 << 20  # a CSV header line longer than this is refused (wide tables: ~100 KB)
SNIFF_BYTES = 4096

_MAGIC = {
    b"PAR1": "a Parquet file",
    b"\x1f\x8b": "gzip-compressed data",
    b"PK\x03\x04": "a zip archive (an Excel .xlsx workbook?)",
    b"\xd0\xcf\x11\xe0": "an Excel .xls workbook",
    b"SQLite format 3": "an SQLite database",
    b"\x93NUMPY": "a NumPy array",
    b"ARROW1": "an Arrow/Feather file",
}


def file_kind(path: Path) -> str:
    """'parquet' or 'csv' from the file name; DataError for any other suffix."""
    kind = table_format(path)
    if kind is None:
        suffix = path.suffix.lower()
        raise DataError(f"{path}: unknown file type '{suffix[:20]}' (use .parquet or .csv)")
    return kind


def check_input_file(path: Path, what: str) -> str:
    """The kind ('parquet' or 'csv') of the input table at ``path``, after bounded checks that
    it exists, is a regular non-empty file and holds what its name says; DataError naming the
    file and what it holds otherwise."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataError(f"{path}: {what} file is a symlink loop") from None
        if path.is_symlink():
            raise DataError(f"{path}: {what} file is a broken symlink") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise DataError(f"{path}: {what} file cannot be read (permission denied)") from None
        raise DataError(f"{path}: {what} file not found") from None
    if path.is_dir():
        raise DataError(f"{path}: {what} file is a directory, not a file")
    if not path.is_file():
        raise DataError(f"{path}: {what} file is not a regular file (a pipe or device?)")
    if st.st_size == 0:
        raise DataError(f"{path}: {what} file is empty")
    kind = file_kind(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        raise DataError(f"{path}: {what} file cannot be read ({exc.strerror})") from None
    gz = path.name.lower().endswith(".gz")
    if kind == "parquet":
        if not head.startswith(b"PAR1"):
            raise DataError(f"{path}: {what} file is not Parquet: it holds {_describe(head)}")
        return kind
    for magic, name in _MAGIC.items():
        if head.startswith(magic) and not (gz and magic == b"\x1f\x8b"):
            raise DataError(f"{path}: {what} file is not CSV text: it holds {name}")
    if gz:
        return kind
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:1] in (b"{", b"["):
        raise DataError(f"{path}: {what} file is not CSV text: it looks like JSON")
    if b"\x00" in head:
        raise DataError(f"{path}: {what} file is not CSV text: it holds binary data (NUL bytes)")
    check_header_line(path, what, st.st_size)
    header = csv_header(path, what)
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if name in seen:
            raise DataError(
                f"{path}: column '{name[:40]}' appears twice in the header (columns "
                f"{seen[name] + 1} and {i + 1})"
            )
        seen[name] = i
    return kind


def csv_header(path: Path, what: str) -> list[str]:
    """The column names of a CSV's first line, read within :data:`MAX_HEADER_BYTES` (after
    :func:`check_header_line`), exactly as written: no renaming of duplicates."""
    with open(path, "rb") as fh:
        raw = fh.read(MAX_HEADER_BYTES)
    line = raw.splitlines()[0] if raw.splitlines() else b""
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: {what} file's header line is not UTF-8 text") from None
    try:
        return next(csv.reader([text]), [])
    except csv.Error:
        return []


_DATA_LIKE = re.compile(r"[-+]?\d[\d.,:eE+-]*|\d{4}-\d{2}(-\d{2})?([ T].*)?")


def show_columns(columns: list[str], limit: int = 20) -> str:
    """The column names for an error line: up to ``limit``, each cut to 40 characters; when the
    header looks like data (a number or a date among the names: a file without a header line),
    none are shown, since they would be values and maybe ids."""
    if any(_DATA_LIKE.fullmatch(str(c).strip()) for c in columns):
        return "(the first line looks like data, not column names: does the file have a header?)"
    names = [str(c)[:40] for c in columns[:limit]]
    more = f", ... ({len(columns)} in all)" if len(columns) > limit else ""
    return "columns: " + ", ".join(names) + more


def check_header_line(path: Path, what: str, size: int | None = None) -> None:
    """DataError unless the CSV's first line ends within :data:`MAX_HEADER_BYTES` (read in
    blocks; memory stays at one block)."""
    size = os.path.getsize(path) if size is None else size
    if size <= MAX_HEADER_BYTES:
        return  # the parser reads at most this much for the header
    with open(path, "rb") as fh:
        read = 0
        while read < MAX_HEADER_BYTES:
            block = fh.read(min(1 << 20, MAX_HEADER_BYTES - read))
            if not block:
                return
            if b"\n" in block or b"\r" in block:
                return
            read += len(block)
    raise DataError(
        f"{path}: {what} file has no line break in its first {MAX_HEADER_BYTES >> 20} MiB: not a "
        "CSV table (or a header line far too long)"
    )


def _describe(head: bytes) -> str:
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:1] in (b"{", b"["):
        return "JSON text"
    if b"\x00" not in head:
        return "text (CSV? name it .csv)"
    return "unknown binary data"
