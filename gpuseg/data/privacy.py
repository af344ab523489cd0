"""Pseudonymisation of subscriber IDs with a keyed hash.

With ``data.pseudonymize: true`` every subscriber ID is replaced, at the moment it is read from an
input table, by the hex HMAC-SHA256 of the ID under a secret key (optionally truncated to
``data.pseudonym_chars`` characters). Every artifact downstream (panel index, rejects, attributes,
embeddings, predictions, segments, report tables, targets, scores) then holds only pseudonyms.

The key comes from the environment variable named by ``data.id_key_env`` (default
``GPUSEG_ID_KEY``) or from the file ``data.id_key_file``. The config holds only that name or path;
the key itself is never written to any output. An operator re-identifies a target list by hashing
its own subscriber list with the same key (:func:`pseudonymize`) and joining.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

import numpy as np
import pandas as pd

from gpuseg.config import DataConfig
from gpuseg.errors import ConfigError, DataError

MIN_KEY_BYTES = 16


def read_key(cfg: DataConfig) -> bytes:
    """The pseudonymisation key named by ``cfg`` (file first, else environment variable).

    A missing, empty or short key raises a one-line ConfigError that names where it was looked
    for, never the key.
    """
    if cfg.id_key_file:
        path = Path(cfg.id_key_file)
        if not path.is_file():
            raise ConfigError(f"data.id_key_file: {path}: key file not found")
        key = path.read_bytes().strip()
        where = f"key file {path}"
    else:
        value = os.environ.get(cfg.id_key_env, "")
        if not value:
            raise ConfigError(
                f"data.pseudonymize: environment variable {cfg.id_key_env} is not set "
                "(or give data.id_key_file)"
            )
        key = value.strip().encode()
        where = f"environment variable {cfg.id_key_env}"
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"data.pseudonymize: the key in {where} is shorter than {MIN_KEY_BYTES} bytes"
        )
    return key


def pseudonymize(ids, key: bytes, chars: int = 0) -> np.ndarray:
    """Hex HMAC-SHA256 of each ID (as UTF-8 text) under ``key``; ``chars`` > 0 truncates."""
    out = [hmac.digest(key, str(i).encode("utf-8"), "sha256").hex() for i in np.asarray(ids)]
    if chars:
        out = [h[:chars] for h in out]
    return np.asarray(out, dtype=str) if out else np.asarray([], dtype=str)


def pseudonymize_ids(ids, cfg: DataConfig, path: str | Path = "") -> np.ndarray:
    """``ids`` pseudonymised (as strings) when ``cfg.pseudonymize`` is set, else unchanged.

    Two distinct IDs that map to one pseudonym (possible only with a short ``pseudonym_chars``)
    raise DataError rather than merging two subscribers.
    """
    if not cfg.pseudonymize:
        return ids
    if not 0 <= cfg.pseudonym_chars <= 64:
        raise ConfigError(f"data.pseudonym_chars: {cfg.pseudonym_chars} is not in 0..64")
    ids = np.asarray(ids).astype(str)
    out = pseudonymize(ids, read_key(cfg), cfg.pseudonym_chars)
    # full 64-character HMACs do not collide in practice; truncated ones are checked
    if 0 < cfg.pseudonym_chars < 64 and len(pd.unique(out)) != len(pd.unique(ids)):
        raise DataError(
            f"{path}: two subscriber IDs share a pseudonym; raise data.pseudonym_chars"
            f" (now {cfg.pseudonym_chars})"
        )
    return out
