"""Static attributes encoded into one float32 matrix: numbers, 0/1, one-hot categories, dates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gpuseg.errors import DataError

# the largest magnitude a metric or attribute cell may hold: the panel stores float32 (max
# 3.4e38), and window statistics square the values, so beyond ~1.8e19 they overflow to inf
VALUE_LIMIT = 1e18


def check_magnitude(
    values: np.ndarray,
    path,
    column: str,
    row_offset: int = 0,
    hint: str = "a unit or export error?",
) -> None:
    """DataError naming the file, column and first row of an infinite value or one beyond
    :data:`VALUE_LIMIT` (NaN is left to the caller's missing-value policy); ``hint`` ends the
    message of a too-large value."""
    with np.errstate(invalid="ignore"):
        bad = np.abs(values) > VALUE_LIMIT  # inf too; NaN compares False
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        if np.isinf(values[i]):
            what = "infinite value"
        else:
            what = f"value {values[i]:.3g} is beyond the {VALUE_LIMIT:.0e} gpuseg reads ({hint})"
        raise DataError(f"{path}: column '{column}' row {i + 1 + row_offset}: {what}")


class _Columns:
    """The static matrix, allocated once (float32) and filled block by block from the left."""

    def __init__(self, n: int, encoding: list[dict]) -> None:
        width = 0
        for enc in encoding:
            if enc["kind"] == "category":
                width += len(enc["categories"])
            else:
                width += 1 + bool(enc["kind"] in ("number", "date") and enc.get("missing"))
        self.matrix = np.zeros((n, width), dtype=np.float32)
        self._col = 0

    def append(self, block: np.ndarray) -> None:
        w = block.shape[1]
        self.matrix[:, self._col : self._col + w] = block
        self._col += w


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
    blocks, names = _Columns(len(frame), encoding), []
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
                        f"{path}: column '{c}' row {int(np.flatnonzero(mapped.isna())[0]) + 1}: "
                        "not a boolean"
                    )
                s = mapped
            blocks.append(s.astype(float).fillna(0).to_numpy().astype(np.float32)[:, None])
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
                        f"{path}: column '{c}' row {int(np.flatnonzero(bad)[0]) + 1}: non-numeric "
                        "value"
                    )
            check_magnitude(v, path, c, hint="a code or id? leave it out of data.static_columns")
            miss = np.isnan(v)
            v32 = v.astype(np.float32)  # missing -> 0 in float32: no float64 copy of the column
            v32[miss] = 0.0
            blocks.append(v32[:, None])
            del v, v32
            names.append(c)
            if enc.get("missing"):
                blocks.append(miss.astype(np.float32)[:, None])
                names.append(f"{c}_missing")
        else:
            cats = enc["categories"]
            s = s.astype(str)
            for k in cats:
                blocks.append((s == k).to_numpy(dtype=np.float32)[:, None])
            names.extend(f"{c}={k}" for k in cats)
    # one float32 matrix filled in place (float64 values rounded once, as before): at 10M rows
    # no second copy of the matrix and no float64 version of it
    assert blocks.matrix.shape[1] == len(names)
    return blocks.matrix, names, encoding
