"""Splits as the stages see them: whole splits held as tensors (a batch is an index gather, not a Python call
per sample), or, when a data set is larger than ``common.memory_mb``, lazy splits whose rows are read from the
feature file when a batch asks for them.

:class:`LazySplit` offers what the stages use of :class:`Split` (``len``, ``labels``, ``batch(rows)`` returning an
in-memory ``Split`` with ``.rows``). Its HDF5 file is opened on the first read in each process and reopened after
a fork: an h5py handle inherited across ``fork`` is not safe to use, so a DataLoader with worker processes over
batches of row indices can wrap a LazySplit as it is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from mstcli.data.row_scaling import RowScaling, scalings_of
from mstcli.data.store import FeatureFile, gather_rows, require_finite


@dataclass
class Split:
    """One split of a feature file: every modality's rows and the labels, on one device."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    rows: torch.Tensor | None = None  # for a batch: its row numbers in the split it came from (bank lookups)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, rows: torch.Tensor) -> Split:
        return Split({m: x[rows] for m, x in self.inputs.items()}, self.labels[rows], rows)


def load_splits(
    features: FeatureFile,
    group: int,
    modalities: list[str],
    device: torch.device,
    names=("train", "val", "test"),
    memory_mb: float = 4096,
) -> dict[str, Split]:
    """The splits ``names`` as tensors on ``device``, or read batch by batch from the file (:class:`LazySplit`)
    when together they would take more than ``memory_mb`` MiB (common.memory_mb). Each modality keeps its stored
    type (float32, uint8 pixels, int64 tokens): the nets that read raw inputs convert them themselves. A folder's
    array modality standardized at prepare (data/row_scaling.py) is read through the statistics of
    ``group``'s training rows."""
    indices = features.split_indices(group)
    scalings = scalings_of(features, modalities, group)
    if split_bytes(features, modalities, sum(len(indices[n]) for n in names)) > memory_mb * 2**20:
        return lazy_splits(features, indices, modalities, device, names, scalings)  # too large: read batch by batch
    labels = torch.from_numpy(features.labels())
    out = {}
    for name in names:
        rows = indices[name]
        inputs = {m: require_finite(features.path, m, features.read(m, rows), rows) for m in modalities}
        inputs = {m: scalings[m](x) if m in scalings else x for m, x in inputs.items()}
        out[name] = Split(
            {m: torch.from_numpy(x).to(device) for m, x in inputs.items()}, labels[torch.from_numpy(rows)].to(device)
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


def split_bytes(features: FeatureFile, modalities: list[str], rows: int) -> int:
    """Bytes that ``rows`` samples of ``modalities`` take as tensors of their stored types (float32 features, uint8
    pixels, int64 tokens: the splits keep the type the file holds)."""
    per_row = sum(
        np.dtype(features.dtype(m)).itemsize * int(np.prod(features.modalities[m], dtype=np.int64)) for m in modalities
    )
    return per_row * rows


class LazySplit:
    """The rows ``indices`` of a feature file, read on demand; labels are small and held in memory."""

    def __init__(
        self,
        path: Path,
        indices: np.ndarray,
        labels: torch.Tensor,
        modalities: list[str],
        device: torch.device,
        scalings: dict[str, RowScaling] | None = None,
    ) -> None:
        self.path = Path(path)
        self.scalings = dict(scalings or {})
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = labels
        self.modalities = list(modalities)
        self.device = device
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, None  # a worker opens its own handle
        return state

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def read(self, rows: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        """Inputs of split rows ``rows`` (positions in this split), on the CPU."""
        wanted = self.indices[np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows, dtype=np.int64)]
        group = self._handle()["modalities"]
        inputs = {m: require_finite(self.path, m, gather_rows(group[m], wanted), wanted) for m in self.modalities}
        inputs = {m: self.scalings[m](x) if m in self.scalings else x for m, x in inputs.items()}
        return {m: torch.from_numpy(x) for m, x in inputs.items()}

    def batch(self, rows: torch.Tensor) -> Split:
        inputs = {m: x.to(self.device) for m, x in self.read(rows).items()}
        return Split(inputs, self.labels[rows.to(self.labels.device)], rows)

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None


def lazy_splits(
    features: FeatureFile,
    indices: dict[str, np.ndarray],
    modalities: list[str],
    device: torch.device,
    names,
    scalings: dict[str, RowScaling] | None = None,
) -> dict[str, LazySplit]:
    labels = torch.from_numpy(features.labels())
    return {
        name: LazySplit(
            features.path,
            indices[name],
            labels[torch.from_numpy(indices[name])].to(device),
            modalities,
            device,
            scalings,
        )
        for name in names
    }
