"""Splits of a panel's subscribers into train, validation and test rows (by subscriber, seeded)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpuseg.errors import DataError, RunDirError


@dataclass
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_subscribers(n: int, val_frac: float, test_frac: float, seed: int) -> Split:
    """Random split by subscriber (each subscriber in exactly one part)."""
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise DataError(
            f"train.val_frac + train.test_frac must be in (0, 1); got {val_frac} + {test_frac}"
        )
    perm = np.random.default_rng(seed).permutation(n)
    n_val, n_test = int(round(n * val_frac)), int(round(n * test_frac))
    return Split(
        train=np.sort(perm[n_val + n_test :]),
        val=np.sort(perm[:n_val]),
        test=np.sort(perm[n_val : n_val + n_test]),
    )


def load_split(run_dir: str | Path, n_rows: int) -> Split:
    """The run's train/val/test rows from ``run_dir/split.npz``, checked against the panel size
    (RunDirError naming the file when it is damaged or from another panel)."""
    path = Path(run_dir) / "split.npz"
    if not path.is_file():
        raise RunDirError(f"{path}: missing (run gpuseg train first)")
    try:
        with np.load(path, allow_pickle=False) as z:
            parts = [np.asarray(z[k]) for k in ("train", "val", "test")]
    except KeyError as exc:
        raise RunDirError(f"{path}: no {exc} array; expected train, val and test") from None
    except (ValueError, OSError, EOFError) as exc:
        why = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        raise RunDirError(f"{path}: not a readable split ({why})") from None
    for name, rows in zip(("train", "val", "test"), parts, strict=True):
        if rows.ndim != 1 or (len(rows) and rows.dtype.kind not in "iu"):
            raise RunDirError(f"{path}: {name} must be a 1-D array of row numbers")
    split = Split(*(p.astype(np.int64) for p in parts))
    for name in ("train", "val", "test"):
        rows = getattr(split, name)
        if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
            raise DataError(
                f"{path}: {name} rows reach {int(rows.max())} but the panel has {n_rows} "
                "subscribers; the split belongs to another panel (train again, or use the panel "
                "the run was trained on)"
            )
    if len(split.test) == 0:
        raise RunDirError(f"{path}: the test split is empty")
    return split
