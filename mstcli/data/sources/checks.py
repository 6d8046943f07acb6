"""Checks shared by the source readers: every problem becomes one UserError naming the file and what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mstcli.errors import UserError


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UserError(f"{path}: missing ({what})")
    return path


def load_npy(path: Path, what: str, mmap: bool = True) -> np.ndarray:
    """A .npy array, memory-mapped when possible so a large file is not read whole."""
    require_file(path, what)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(f"{path}: not a readable .npy array ({exc})") from None


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def require_shape(path: Path, array: np.ndarray, expected: tuple[int | None, ...], what: str) -> None:
    """``expected`` is the full shape; None matches any size on that axis."""
    shape = tuple(array.shape)
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape, strict=True)):
        wanted = shape_text(tuple("N" if e is None else e for e in expected))  # type: ignore[arg-type]
        raise UserError(f"{path}: {what} must have shape {wanted}, got {shape_text(shape)}")


def integer_labels(path: Path, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels as int64 in [0, num_classes), checked."""
    labels = np.asarray(labels).reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise UserError(f"{path}: labels must be whole numbers")
    labels = labels.astype(np.int64)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise UserError(f"{path}: label {labels[bad][0]} outside 0..{num_classes - 1}")
    return labels
