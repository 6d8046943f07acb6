"""Writing a source to a feature file block by block, under a progress bar.

Readers of large sources yield row blocks (a few hundred samples) instead of whole arrays, so preparing
never needs more memory than one block; modalities the reference scales over the whole data set get a
:class:`RunningRange` that sees every block and is applied in a second pass over the written file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mstcli.data.normalize import RunningRange
from mstcli.data.store import FeatureWriter
from mstcli.ui import progress_bar

Block = dict[str, np.ndarray]


def stream_features(
    out: Path,
    *,
    dataset: str,
    shapes: dict[str, tuple[int, ...]],
    labels: np.ndarray,
    class_names: list[str],
    params: dict[str, Any],
    blocks: Iterable[Block],
    description: str,
    dataset_ranges: dict[str, RunningRange] | None = None,
) -> None:
    """Write ``blocks`` (consecutive rows, every modality of ``shapes`` in each) to ``out`` atomically.

    ``dataset_ranges[m]`` is updated with every block of modality ``m`` and then applied to the whole written
    modality: the reference's data-set-wide min-max, without holding the data set in memory.
    """
    dataset_ranges = dataset_ranges or {}
    n = len(labels)
    with FeatureWriter(
        out, dataset=dataset, modalities=shapes, num_samples=n, class_names=class_names, params=params
    ) as writer:
        start = 0
        with progress_bar(description, n) as advance:
            for block in blocks:
                size = len(next(iter(block.values())))
                for name, rows in block.items():
                    if name in dataset_ranges:
                        dataset_ranges[name].update(rows)
                    writer.write(name, start, rows)
                start += size
                advance(size)
        if start != n:
            raise RuntimeError(f"{dataset}: wrote {start} rows, expected {n}")
        for name, value_range in dataset_ranges.items():
            writer.map_rows(name, value_range.apply)
        writer.write_labels(labels)
