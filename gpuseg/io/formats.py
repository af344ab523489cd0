"""Which table format a path names: the one file-type dispatch for reading and writing tables."""

from __future__ import annotations

from pathlib import Path

from gpuseg.errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".txt")


def table_format(path: str | Path) -> str | None:
    """``"parquet"`` (.parquet, .pq), ``"csv"`` (.csv, .txt, .csv.gz) or None for anything else;
    callers raise their own typed error naming the file."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in CSV_SUFFIXES or p.name.lower().endswith(".csv.gz"):
        return "csv"
    return None


def check_table_file(path: str | Path, what: str) -> Path:
    """``path`` as a Path when it names a non-empty file; else :class:`DataError` naming it."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: {what} file not found")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: {what} file is empty")
    return p
