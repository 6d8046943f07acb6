"""The reference split protocol (method.md §3.0), regenerated for any N.

The reference code's index CSVs are exactly ``numpy.random.seed(19980427)`` followed by 20 successive
``numpy.random.permutation(N)`` calls; run ``--seed g`` uses permutation g: the first 60 % is train, the
next 20 % val, the rest test. ``RandomState`` is the legacy global generator, so this is bit-exact.
"""

from __future__ import annotations

import numpy as np

SPLIT_SEED = 19980427
NUM_GROUPS = 20
SPLITS = ("train", "val", "test")


def reference_permutations(n: int, groups: int = NUM_GROUPS, seed: int = SPLIT_SEED) -> np.ndarray:
    """``groups`` x ``n`` int array: row g is the permutation of split group g."""
    rng = np.random.RandomState(seed)
    return np.stack([rng.permutation(n) for _ in range(groups)]).astype(np.int64)


def split_permutation(permutation: np.ndarray) -> dict[str, np.ndarray]:
    """Cut one permutation into train (first 60 %), val (next 20 %) and test (the rest)."""
    n = len(permutation)
    train_end, val_end = int(0.6 * n), int(0.8 * n)
    return {
        "train": permutation[:train_end],
        "val": permutation[train_end:val_end],
        "test": permutation[val_end:],
    }
