"""Why features are rejected: one reason per feature (the first found is the one
reported), kept in an object array beside the batch, None where there is none."""

from __future__ import annotations

from itertools import compress
from typing import Any

import numpy as np


def reject(reasons: np.ndarray, mask: np.ndarray, why: str) -> None:
    """Reject the features where ``mask`` holds, unless they have a reason already."""
    for i in np.flatnonzero(mask):
        reject_one(reasons, i, why)


def reject_one(reasons: np.ndarray, i: int, why: str) -> None:
    """Reject feature ``i``, unless it has a reason already."""
    if reasons[i] is None:  # the first reason is the one reported
        reasons[i] = why


def take(values: list[Any] | np.ndarray, keep: np.ndarray) -> list[Any] | np.ndarray:
    """The values of the features kept (the same list when all are)."""
    if isinstance(values, np.ndarray):
        return values if keep.all() else values[keep]
    if keep.all():
        return values
    return list(compress(values, keep))
