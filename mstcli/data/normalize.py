"""Min-max scaling as the reference does it (docs/method.md §3.0), in forms that work on row blocks.

The reference scales 2-D and 3-D arrays per sample and 4-D/5-D arrays per channel over the whole data set
(test rows included). A data set larger than memory cannot be scaled in one call, so the data-set-wide case
is split in two: :class:`RunningRange` collects the minimum and maximum block by block while the rows are
written, and :func:`scale` applies them to each block afterwards.
"""

from __future__ import annotations

import numpy as np


def scale(x: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
    """(x - lo) / (hi - lo) as float32; where hi == lo the result is 0 instead of the reference's NaN."""
    x = np.asarray(x, dtype=np.float32)
    span = np.asarray(hi, dtype=np.float32) - np.asarray(lo, dtype=np.float32)
    safe = np.where(span > 0, span, 1.0).astype(np.float32)
    return ((x - lo) / safe * (span > 0)).astype(np.float32)


def minmax_per_sample(x: np.ndarray) -> np.ndarray:
    """Each row (sample) scaled to [0, 1] by its own minimum and maximum."""
    x = np.asarray(x, dtype=np.float32)
    axes = tuple(range(1, x.ndim))
    return scale(x, x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True))


class RunningRange:
    """Minimum and maximum over all rows seen so far, per channel (``channel_axis`` of a row) or global (None)."""

    def __init__(self, channel_axis: int | None = None) -> None:
        self.channel_axis = channel_axis
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None

    def _reduce_axes(self, ndim: int) -> tuple[int, ...]:
        if self.channel_axis is None:
            return tuple(range(ndim))
        keep = 1 + self.channel_axis  # axis 0 of a block is the row
        return tuple(a for a in range(ndim) if a != keep)

    def update(self, block: np.ndarray) -> None:
        axes = self._reduce_axes(block.ndim)
        lo = block.min(axis=axes, keepdims=True).astype(np.float32)
        hi = block.max(axis=axes, keepdims=True).astype(np.float32)
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)

    def apply(self, block: np.ndarray) -> np.ndarray:
        if self.lo is None or self.hi is None:
            raise RuntimeError("RunningRange.apply before any update")
        return scale(block, self.lo, self.hi)
