"""The reference split protocol (docs/method.md §3.0), regenerated for any N, and the splits of a user's folder.

The reference code's index CSVs are exactly ``numpy.random.seed(19980427)`` followed by 20 successive
``numpy.random.permutation(N)`` calls; run ``--seed g`` uses permutation g: the first 60 % is train, the
next 20 % val, the rest test. ``RandomState`` is the legacy global generator, so this is bit-exact.

A folder of the user's own data may name each row's split; where it does not, the split is drawn per class
(stratified) for each of the 20 groups. Such a file stores its permutations with ``bounds`` (the ends of train
and val), since its parts are not 60/20/20 of N.
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


def split_permutation(permutation: np.ndarray, bounds: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Cut one permutation into train, val and test: at ``bounds`` (train end, val end) when given, else the
    reference's first 60 %, next 20 % and the rest."""
    n = len(permutation)
    train_end, val_end = bounds if bounds is not None else (int(0.6 * n), int(0.8 * n))
    return {
        "train": permutation[:train_end],
        "val": permutation[train_end:val_end],
        "test": permutation[val_end:],
    }


#: codes of a row's given split in ``drawn_split_groups``; UNASSIGNED rows are drawn
TRAIN, VAL, TEST, UNASSIGNED = 0, 1, 2, -1


def drawn_split_groups(
    labels: np.ndarray, given: np.ndarray, class_names: list[str], groups: int = NUM_GROUPS, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, tuple[int, int]]:
    """``groups`` x N permutations (train rows, then val, then test) and their bounds, for a folder's rows.

    Rows with a given split (``given``: TRAIN, VAL or TEST) stay in it in every group. A split no row is given
    is drawn per class from the train rows and the unassigned ones: with no split given at all, 60/20/20 of each
    class (at least one row of each class in each split); with only validation or only test missing, a quarter
    of each class's train rows. Each group shuffles with its own generator, so the groups differ where the split
    is drawn; the per-class counts, and so the bounds, are the same in every group.
    """
    from mstcli.errors import UserError

    labels, given = np.asarray(labels), np.asarray(given)
    present = {code for code in (TRAIN, VAL, TEST) if (given == code).any()}
    missing = [code for code in (VAL, TEST) if code not in present]
    pool_rows = np.flatnonzero((given == TRAIN) | (given == UNASSIGNED))
    if not present:
        _require_stratifiable(labels, class_names)
    rng = np.random.RandomState(seed)
    permutations, bounds = [], (0, 0)
    for _ in range(groups):
        parts = {code: list(np.flatnonzero(given == code)) for code in (VAL, TEST)}
        parts[TRAIN] = []
        for c in np.unique(labels[pool_rows]):
            rows = rng.permutation(pool_rows[labels[pool_rows] == c])
            taken = 0
            for code in missing:
                fraction = 0.2 if len(missing) == 2 else 0.25
                count = max(1, int(round(fraction * len(rows)))) if len(rows) > len(missing) else 0
                parts[code].extend(rows[taken : taken + count])
                taken += count
            parts[TRAIN].extend(rows[taken:])
        order = [rng.permutation(np.asarray(parts[code], dtype=np.int64)) for code in (TRAIN, VAL, TEST)]
        permutations.append(np.concatenate(order))
        bounds = (len(order[0]), len(order[0]) + len(order[1]))
    for name, size in (("train", bounds[0]), ("validation", bounds[1] - bounds[0]), ("test", len(labels) - bounds[1])):
        if size == 0:
            raise UserError(f"the {name} split has no rows ({len(labels)} rows in all)")
    _require_training_rows(labels, permutations[0], bounds, class_names)
    return np.stack(permutations).astype(np.int64), bounds


def _require_training_rows(
    labels: np.ndarray, permutation: np.ndarray, bounds: tuple[int, int], class_names: list[str]
) -> None:
    """Every class needs training rows: a class the given splits leave out of train could never be predicted,
    and its validation and test rows would count as certain errors."""
    from mstcli.errors import UserError

    parts = split_permutation(permutation, bounds)
    counts = {name: np.bincount(labels[rows], minlength=len(class_names)) for name, rows in parts.items()}
    lacking = [c for c in range(len(class_names)) if counts["train"][c] == 0 and (labels == c).any()]
    if lacking:
        c = lacking[0]
        more = f" (and {len(lacking) - 1} more classes)" if len(lacking) > 1 else ""
        raise UserError(
            f"class '{class_names[c]}' has no training rows ({counts['train'][c]} train, {counts['val'][c]} "
            f"validation, {counts['test'][c]} test){more}: the given splits must put rows of every class in train"
        )


def _require_stratifiable(labels: np.ndarray, class_names: list[str]) -> None:
    """A drawn split needs a row of every class in train, validation and test: three rows per class."""
    from mstcli.errors import UserError

    counts = np.bincount(labels, minlength=len(class_names))
    small = [(class_names[c], int(n)) for c, n in enumerate(counts) if n < 3]
    if small:
        name, n = small[0]
        more = f" (and {len(small) - 1} more classes)" if len(small) > 1 else ""
        raise UserError(
            f"class '{name}' has {n} row{'s' if n != 1 else ''}{more}: a drawn split needs at least 3 per class "
            "(one each for train, validation and test); add rows or give a split column"
        )
