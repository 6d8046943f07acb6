"""Whole splits held as tensors; a batch is an index gather, not a Python call per sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from mstcli.data.store import FeatureFile


@dataclass
class Split:
    """One split of a feature file: every modality's rows and the labels, on one device."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    rows: torch.Tensor | None = None  # for a batch: its row numbers in the split it came from (bank lookups)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, rows: torch.Tensor) -> "Split":
        return Split({m: x[rows] for m, x in self.inputs.items()}, self.labels[rows], rows)


def load_splits(
    features: FeatureFile,
    group: int,
    modalities: list[str],
    device: torch.device,
    names=("train", "val", "test"),
    memory_mb: float = 4096,
) -> dict[str, Split]:
    """The splits ``names`` as tensors on ``device``, or read batch by batch from the file (engine/lazy.py)
    when together they would take more than ``memory_mb`` MiB (common.memory_mb)."""
    from mstcli.engine.lazy import lazy_splits, split_bytes

    indices = features.split_indices(group)
    if split_bytes(features, modalities, sum(len(indices[n]) for n in names)) > memory_mb * 2**20:
        return lazy_splits(features, indices, modalities, device, names)  # too large: read batch by batch
    labels = torch.from_numpy(features.labels())
    out = {}
    for name in names:
        rows = indices[name]
        out[name] = Split(
            {m: torch.from_numpy(features.read(m, rows)).to(device) for m in modalities},
            labels[torch.from_numpy(rows)].to(device),
        )
    return out


def batches(n: int, batch_size: int, generator: torch.Generator | None, device: torch.device) -> Iterator[torch.Tensor]:
    """Row indices of each batch: shuffled by ``generator`` when given, in order otherwise. The last
    batch may be smaller; it is kept (dropping it would skip samples in small data sets)."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    order = order.to(device)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def seeded_generator(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
