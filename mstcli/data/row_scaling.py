"""A modality's rows read through statistics of the training rows of a split group: a folder's ``.npy``
modalities standardized by prepare.array_scaling.

Arrays come as their owners computed them: log-mel spectrograms in decibels (values around 14 +- 8), sensor
readings in volts, counts. mst's nets are initialized for inputs of about unit scale, and on such arrays they
learn slowly or not at all (measured on spoken digits stored as dB spectrograms: the map net stays at chance,
docs/own-data.md). ``standard`` subtracts from each value its mean and divides by its standard deviation, both
taken per position (every element of the row's shape) over the training rows only.

The training rows are those of a split group: where the folder's split is drawn, each of the 20 groups has its
own, so the statistics are kept per group (``scale_mean`` and ``scale_std``, groups x the row's shape, in the
modality's transforms state) and the rows are stored as they were given. Every reader of a feature file applies
its group's statistics: the stages through engine/splits.py, ``mst predict`` and ``mst export`` through the
student's split group (data/sources/folder.py), so no test or validation row ever shapes the scaling, in any
group. This module is numpy only, so the stages that read rows import nothing of the folder source.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

MODES = ("none", "standard")
SCALING_KEY, MEAN_KEY, STD_KEY = "scaling", "scale_mean", "scale_std"
#: the key under which mst predict and mst export pass the student's split group along with a modality's state
GROUP_KEY = "student_split_group"


@dataclass(frozen=True)
class RowScaling:
    """(x - mean) / std per position, for one split group."""

    mean: np.ndarray  # the row's shape, float32
    std: np.ndarray  # the row's shape, float32, > 0

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return ((np.asarray(rows, dtype=np.float32) - self.mean) / self.std).astype(np.float32)


def group_statistics(
    blocks: Iterable[tuple[int, np.ndarray]], permutations: np.ndarray, bounds: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per position over each split group's training rows (groups x row shape,
    float32), from the written rows in blocks (``(start, rows)``), in one pass whatever the number of groups:
    each block adds its rows to the sums of the groups that train on them."""
    groups, count = permutations.shape
    member = np.zeros((groups, count), dtype=np.float64)
    for g in range(groups):
        member[g, permutations[g, : bounds[0]]] = 1.0
    total = sumsq = None
    for start, block in blocks:
        flat = block.reshape(len(block), -1).astype(np.float64)
        weights = member[:, start : start + len(block)]
        total = weights @ flat if total is None else total + weights @ flat
        sumsq = weights @ flat**2 if sumsq is None else sumsq + weights @ flat**2
    assert total is not None and sumsq is not None
    rows = member.sum(axis=1, keepdims=True)
    mean = total / rows
    std = np.sqrt(np.maximum(sumsq / rows - mean**2, 0.0))
    tiny = 1e-6 * np.maximum(np.abs(mean), 1.0)
    std = np.where(std > tiny, std, 1.0)  # a value constant over the training rows is only centred
    shape = (groups, *block.shape[1:])
    return mean.reshape(shape).astype(np.float32), std.reshape(shape).astype(np.float32)


def scaling_state(mean: np.ndarray, std: np.ndarray) -> dict[str, Any]:
    return {SCALING_KEY: "standard", MEAN_KEY: mean, STD_KEY: std}


def row_scaling(state: dict[str, Any] | None, group: int) -> RowScaling | None:
    """The scaling of split group ``group`` that a modality's stored state holds, or None (rows as stored)."""
    if not state or state.get(SCALING_KEY, "none") != "standard":
        return None
    mean, std = np.asarray(state[MEAN_KEY]), np.asarray(state[STD_KEY])
    if not 0 <= group < len(mean):
        raise IndexError(f"split group {group} has no array scaling (the file has {len(mean)} groups)")
    return RowScaling(mean[group], std[group])


def scalings_of(features: Any, modalities: Iterable[str], group: int) -> dict[str, RowScaling]:
    """The scaling of each of ``modalities`` of a feature file (data.store.FeatureFile) that has one."""
    out = {}
    for modality in modalities:
        scaling = row_scaling(features.transform(modality), group) if features.dataset == "folder" else None
        if scaling is not None:
            out[modality] = scaling
    return out
