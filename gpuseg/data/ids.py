"""Subscriber ids: lookups of ids in the panel's id order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from gpuseg.errors import ConfigError, DataError


def id_positions(ids: np.ndarray, values) -> np.ndarray:
    """Index of each of ``values`` (strings) in ``ids``, -1 where absent.

    One Arrow hash lookup: no Python string object per row, which matters at 10M rows.
    """
    ids = np.asarray(ids)
    value_set = pa.array(ids if ids.dtype.kind == "U" else ids.astype(str))  # no copy of 'U' ids
    found = pc.index_in(pa.array(values, type=pa.string(), from_pandas=True), value_set=value_set)
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


LOOKUP_BLOCK = 1 << 20  # value-set entries hashed at a time by index_in_blocks


def index_in_blocks(values, value_set, block: int = LOOKUP_BLOCK) -> np.ndarray:
    """Index of each of ``values`` (an Arrow string array or chunked array) in ``value_set`` (a
    numpy str array or an Arrow array): its first occurrence, -1 where absent, as
    ``pc.index_in`` gives, int64.

    The value set is hashed ``block`` entries at a time, one more pass over ``values`` per
    block: the hash table of a 10M-id value set alone takes about 0.7 GB, that of a block of
    1M about a tenth of it."""
    if block < 1:
        raise ConfigError(f"id lookup: block size must be >= 1, got {block}")
    out = np.full(len(values), -1, np.int64)
    for s in range(0, len(value_set), block):
        part = value_set[s : s + block]
        if isinstance(part, np.ndarray):
            part = pa.array(part, values.type)
        elif part.type != values.type:
            part = pc.cast(part, values.type)
        found = pc.index_in(values, value_set=part).fill_null(-1).to_numpy()
        hit = (found >= 0) & (out < 0)
        out[hit] = found[hit] + s
        del found, hit
    return out


def _as_number(values) -> set:
    """The values that read as numbers, as floats (for the 'would match as numbers' hint)."""
    nums = pd.to_numeric(pd.Series(list(values), dtype="object"), errors="coerce")
    return set(nums.dropna().tolist())


def require_overlap(
    found: np.ndarray, other_ids, usage_ids, table: str, usage: str, what: str
) -> None:
    """Stop when none of a table's ids is among the usage ids (ids are compared as text).

    ``found``: bool per row of the other table. One line naming both files and the count of
    unmatched ids (never the ids), and whether they would match as numbers (``1.0`` and ``1``).
    """
    found = np.asarray(found, dtype=bool)
    if len(found) == 0 or found.any():
        return
    sample_other = list(np.asarray(other_ids)[:1000])
    sample_usage = list(np.asarray(usage_ids)[:1000])
    numeric = _as_number(sample_other) & _as_number(sample_usage)
    hint = (
        "; they match as numbers, so the ids are written differently (e.g. 1.0 and 1, or leading "
        "zeros): write them the same way in both files"
        if numeric
        else ""
    )
    raise DataError(
        f"{table}: none of its {len(found):,} {what} ids is in {usage} "
        f"({len(found):,} unmatched; ids are compared as text, exactly as written){hint}"
    )
