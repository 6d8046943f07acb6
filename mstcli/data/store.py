"""The HDF5 feature store: one file per prepared data set, written atomically, read split by split.

Layout (schema 1)::

    /modalities/<name>      float32, N x <per-sample shape>   one array per modality, row i = sample i
    /labels                 int64, N
    /class_names            strings, C
    /splits/permutations    int64, 20 x N    the reference split groups (see splits.py)
    attrs: schema_version, dataset, modalities (ordered names), params (JSON of the settings used)

Rows of all modalities are paired: row i of every modality and label i describe the same sample.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np

from mstcli.data.splits import reference_permutations, split_permutation
from mstcli.errors import UserError

SCHEMA_VERSION = 1
_CHUNK_BYTES = 1 << 20


def _chunk_rows(shape: tuple[int, ...]) -> int:
    per_row = 4 * int(np.prod(shape, dtype=np.int64)) or 4
    return max(1, min(4096, _CHUNK_BYTES // per_row))


class FeatureWriter:
    """Writes a feature file under a temporary name and renames it into place only on success.

    Use as a context manager; an exception inside the block removes the temporary file, so an
    interrupted prepare never leaves a file at ``path`` that DVC could take for a finished output.
    Modalities are written in row blocks (``write``) so sources larger than memory can stream in.
    """

    def __init__(
        self,
        path: Path,
        *,
        dataset: str,
        modalities: dict[str, tuple[int, ...]],
        num_samples: int,
        class_names: list[str],
        params: dict[str, Any],
    ) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.dataset = dataset
        self.modalities = modalities
        self.num_samples = num_samples
        self.class_names = class_names
        self.params = params
        self._file: h5py.File | None = None
        self._labels_written = False

    def __enter__(self) -> "FeatureWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self.tmp, "w")
        group = self._file.create_group("modalities")
        for name, shape in self.modalities.items():
            group.create_dataset(
                name,
                shape=(self.num_samples, *shape),
                dtype="float32",
                chunks=(max(1, min(_chunk_rows(shape), self.num_samples)), *shape),
            )
        return self

    def write(self, modality: str, start: int, block: np.ndarray) -> None:
        assert self._file is not None
        self._file["modalities"][modality][start : start + len(block)] = np.asarray(block, dtype=np.float32)

    def map_rows(self, modality: str, transform: Callable[[np.ndarray], np.ndarray], rows_per_block: int = 0) -> None:
        """Rewrite a written modality block by block with ``transform`` (e.g. a data-set-wide min-max known
        only after every row was written), so the modality is never held in memory whole."""
        assert self._file is not None
        data = self._file["modalities"][modality]
        block = rows_per_block or data.chunks[0]
        for start in range(0, self.num_samples, block):
            data[start : start + block] = np.asarray(transform(data[start : start + block]), dtype=np.float32)

    def write_labels(self, labels: np.ndarray) -> None:
        assert self._file is not None
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (self.num_samples,):
            raise ValueError(f"labels shape {labels.shape} != ({self.num_samples},)")
        self._file.create_dataset("labels", data=labels)
        self._labels_written = True

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._file is not None
        try:
            if exc_type is None:
                if not self._labels_written:
                    raise RuntimeError("FeatureWriter closed without labels")
                self._finish(self._file)
            self._file.close()
            if exc_type is None:
                os.replace(self.tmp, self.path)
        finally:
            if self.tmp.exists():
                self.tmp.unlink()

    def _finish(self, f: h5py.File) -> None:
        f.create_dataset("class_names", data=np.array(self.class_names, dtype=h5py.string_dtype()))
        f.create_group("splits").create_dataset("permutations", data=reference_permutations(self.num_samples))
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["dataset"] = self.dataset
        f.attrs["modalities"] = json.dumps(list(self.modalities))
        f.attrs["params"] = json.dumps(self.params, sort_keys=True)


def write_features(
    path: Path,
    *,
    dataset: str,
    arrays: dict[str, np.ndarray],
    labels: np.ndarray,
    class_names: list[str],
    params: dict[str, Any],
) -> None:
    """Write in-memory arrays as a feature file (atomically)."""
    shapes = {name: tuple(a.shape[1:]) for name, a in arrays.items()}
    with FeatureWriter(
        path, dataset=dataset, modalities=shapes, num_samples=len(labels), class_names=class_names, params=params
    ) as writer:
        for name, array in arrays.items():
            writer.write(name, 0, array)
        writer.write_labels(labels)


@dataclass
class FeatureFile:
    """Read access to a feature file. Opening checks the schema; arrays are read on demand."""

    path: Path
    dataset: str
    modalities: dict[str, tuple[int, ...]]
    class_names: list[str]
    num_samples: int
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path | str) -> "FeatureFile":
        path = Path(path)
        if not path.exists():
            raise UserError(f"feature file not found: {path} (run `mst prepare` first)")
        try:
            with h5py.File(path, "r") as f:
                version = f.attrs.get("schema_version")
                if version != SCHEMA_VERSION:
                    raise UserError(f"{path}: not an mst feature file of schema {SCHEMA_VERSION} (found {version})")
                names = json.loads(f.attrs["modalities"])
                return cls(
                    path=path,
                    dataset=str(f.attrs["dataset"]),
                    modalities={n: tuple(f["modalities"][n].shape[1:]) for n in names},
                    class_names=[s.decode() if isinstance(s, bytes) else str(s) for s in f["class_names"][:]],
                    num_samples=int(f["labels"].shape[0]),
                    params=json.loads(f.attrs.get("params", "{}")),
                )
        except OSError as exc:
            raise UserError(f"{path}: not a readable HDF5 file ({exc})") from None
        except KeyError as exc:
            raise UserError(f"{path}: malformed feature file, missing {exc}") from None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_indices(self, group: int) -> dict[str, np.ndarray]:
        with h5py.File(self.path, "r") as f:
            permutations = f["splits/permutations"]
            if not 0 <= group < permutations.shape[0]:
                raise UserError(f"split group {group} out of range 0..{permutations.shape[0] - 1}")
            return split_permutation(permutations[group])

    def labels(self) -> np.ndarray:
        with h5py.File(self.path, "r") as f:
            return f["labels"][:]

    def read(self, modality: str, indices: np.ndarray | None = None) -> np.ndarray:
        """Rows ``indices`` (any order) of one modality; all rows when ``indices`` is None."""
        if modality not in self.modalities:
            raise UserError(f"{self.path}: no modality '{modality}' (has: {', '.join(self.modalities)})")
        with h5py.File(self.path, "r") as f:
            data = f["modalities"][modality]
            if indices is None:
                return data[:]
            return gather_rows(data, np.asarray(indices))

    def iter_rows(self, modality: str, block: int = 4096) -> Iterator[tuple[int, np.ndarray]]:
        with h5py.File(self.path, "r") as f:
            data = f["modalities"][modality]
            for start in range(0, self.num_samples, block):
                yield start, data[start : start + block]


def gather_rows(data: h5py.Dataset, indices: np.ndarray, block_bytes: int = 256 << 20) -> np.ndarray:
    """Rows in the requested order. h5py's point selection is slow for many rows, so many rows are read as
    contiguous blocks (each block once, memory bounded by ``block_bytes``) and picked in numpy."""
    if indices.size == 0:
        return np.empty((0, *data.shape[1:]), dtype=data.dtype)
    order = np.argsort(indices, kind="stable")
    unique, inverse = np.unique(indices[order], return_inverse=True)
    if len(unique) < 256:
        rows = data[unique]
    else:
        per_row = max(1, data.dtype.itemsize * int(np.prod(data.shape[1:], dtype=np.int64)))
        block = max(1, block_bytes // per_row)
        rows = np.empty((len(unique), *data.shape[1:]), dtype=data.dtype)
        bounds = np.searchsorted(unique, np.arange(0, data.shape[0] + block, block))
        for b, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            if hi > lo:
                chunk = data[b * block : min((b + 1) * block, data.shape[0])]
                rows[lo:hi] = chunk[unique[lo:hi] - b * block]
    out = np.empty((len(indices), *data.shape[1:]), dtype=data.dtype)
    out[order] = rows[inverse]
    return out
