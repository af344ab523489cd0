"""Static columns that hold subscriber ids are never model inputs (ids must not reach model.json or
panel/meta.json, whose static encoding lists category values).

A static column is left out of the encoding, with one note saying so, when it is the id column
itself, is named like an id (``msisdn``, ``imsi``, ``customer_id``, ...; a yes/no flag such as
``consent_email`` is not), holds the same value as the id column on every row, or is text with a
different value on every row (at least :data:`MIN_ROWS_UNIQUE` rows: a key, not a category).
Notes name the column, never a value.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

ID_NAMES = re.compile(
    r"(?i)^(.*[_ -])?(msisdn|imsi|imei|iccid|mdn|phone(_?number)?|mobile(_?number)?|"
    r"(subscriber|customer|account|user|client|contract|line|sim)_?(id|no|number|key)|id|uuid|guid|"
    r"e?mail(_?address)?)$"
)
MIN_ROWS_UNIQUE = 50


FLAG_VALUES = {"0", "1", "0.0", "1.0", "true", "false", "yes", "no", "y", "n"}


def is_flag(s: pd.Series) -> bool:
    """A yes/no column (bool, or only 0/1, true/false, yes/no): ``consent_email`` is a consent
    flag, not an e-mail address, whatever its name says."""
    if pd.api.types.is_bool_dtype(s):
        return True
    values = s.dropna().astype(str).str.strip().str.lower().unique()
    return len(values) > 0 and set(values) <= FLAG_VALUES


def id_like_columns(frame: pd.DataFrame, columns: list[str], id_column: str) -> dict[str, str]:
    """column -> note for each of ``columns`` that holds ids (see the module docstring); the
    caller leaves those columns out. ``frame`` holds the static rows with ``id_column``."""
    notes: dict[str, str] = {}
    ids = frame[id_column].astype(str).to_numpy() if id_column in frame.columns else None
    for c in columns:
        why = None
        if c == id_column:
            why = "it is the id column (data.id_column)"
        elif ID_NAMES.fullmatch(str(c)) and not is_flag(frame[c]):
            why = "its name says it holds ids"
        else:
            s = frame[c]
            if ids is not None and len(s) and np.array_equal(s.astype(str).to_numpy(), ids):
                why = "it holds the subscriber id on every row"
            elif (
                not pd.api.types.is_numeric_dtype(s)
                and not pd.api.types.is_bool_dtype(s)
                and not pd.api.types.is_datetime64_any_dtype(s)
                and len(s) >= MIN_ROWS_UNIQUE
                and s.notna().all()
                and s.nunique() == len(s)
            ):
                why = "a different text value on every row: a key, not a category"
        if why:
            notes[c] = f"static column '{str(c)[:40]}' left out of the model: {why}"
    return notes
