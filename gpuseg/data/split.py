"""Splits of a panel's subscribers into train, validation and test rows (by subscriber, seeded)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpuseg.errors import DataError


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
