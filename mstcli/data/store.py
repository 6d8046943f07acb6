"""The HDF5 feature store: one file per prepared data set, written atomically, read split by split.

Layout (schema 1)::

    /modalities/<name>      float32, N x <per-sample shape>   one array per modality, row i = sample i; uint8 or
                            int64 where the nets reading the modality take raw inputs (a user's folder: RGB
                            pixels for torchvision or Hugging Face image nets, token ids and attention masks for a
                            Hugging Face text net; see data/folder/net_inputs.py)
    /labels                 int64, N (classification), or an integer type (uint8 when C <= 256), N x H x W:
                            one class per pixel for dense data sets (NYU-Depth-V2, class 0 = void); files with
                            1-D labels are read as before
    /class_names            strings, C
    /splits/permutations    int64, 20 x N    the reference split groups (see splits.py); attr ``bounds`` (optional):
                            the ends of train and val in every row, for files whose parts are not 60/20/20
                            (a user's folder: its given or stratified split)
    /transforms/<name>      optional: the fitted state of a modality's feature step (arrays as datasets,
                            numbers as attrs), e.g. AV-Digits' PCA basis, so `mst predict` can featurize new raw
                            inputs exactly as prepare did; files without it still read (predict then takes
                            only feature arrays)
    attrs: schema_version, dataset, modalities (ordered names), params (JSON of the settings used)

Rows of all modalities are paired: row i of every modality and label i describe the same sample.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mstcli.data.splits import SPLITS, reference_permutations, split_permutation
from mstcli.errors import UserError

SCHEMA_VERSION = 1
_CHUNK_BYTES = 1 << 20
_FINITE_CHECK_BYTES = 64 << 20  # largest boolean mask one finiteness check builds at a time
#: the types a modality may be stored as: float32 features (every built-in data set), uint8 pixels, int64 tokens
MODALITY_DTYPES = ("float32", "uint8", "int64")


def non_finite_rows(block: np.ndarray) -> np.ndarray:
    """Positions (ascending) of the rows of ``block`` holding a NaN or an Inf; empty when all are finite.

    One NaN in a feature row turns every loss it touches into NaN and training goes on silently with a
    useless model, so rows are checked wherever they enter (prepare) or leave (training, evaluation) the store.
    The check runs over row slices so its boolean mask stays small however large the block is.
    """
    block = np.asarray(block)
    if block.size == 0 or not np.issubdtype(block.dtype, np.floating):
        return np.empty(0, dtype=np.int64)
    flat = block.reshape(len(block), -1)
    step = max(1, _FINITE_CHECK_BYTES // flat.shape[1])
    finite = np.empty(len(flat), dtype=bool)
    for start in range(0, len(flat), step):
        finite[start : start + step] = np.isfinite(flat[start : start + step]).all(axis=1)
    return np.flatnonzero(~finite)


def require_finite(path: Path, modality: str, block: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``block`` itself, once checked free of NaN and Inf: rows of ``modality`` read from the feature file ``path``
    that hold one are refused (a bad value would otherwise show up only as a NaN loss, after training on it).

    ``rows`` are the file rows (sample numbers) of ``block``'s rows, so the message names the first bad
    sample of the file, not a position in a split or a batch; None means ``block`` starts at row 0.
    """
    bad = non_finite_rows(block)
    if bad.size:
        first = int(np.min(np.asarray(rows)[bad])) if rows is not None else int(bad[0])
        raise UserError(
            f"{path}: modality '{modality}' has NaN or Inf values (first in row {first}); prepare the data set again"
        )
    return block


@cache
def min_samples_for_splits() -> int:
    """The fewest samples for which train, val and test of a split group are all non-empty."""
    n = 1
    while not all(len(rows) for rows in split_permutation(np.arange(n)).values()):
        n += 1
    return n


def _chunk_rows(shape: tuple[int, ...], itemsize: int = 4) -> int:
    per_row = itemsize * int(np.prod(shape, dtype=np.int64)) or itemsize
    return max(1, min(4096, _CHUNK_BYTES // per_row))


def _checked_dtypes(modalities: dict[str, tuple[int, ...]], dtypes: dict[str, str] | None) -> dict[str, str]:
    """Every modality's stored type: float32 unless ``dtypes`` names another of MODALITY_DTYPES for it."""
    dtypes = dict(dtypes or {})
    unknown = [m for m in dtypes if m not in modalities]
    if unknown:
        raise ValueError(f"dtypes for modalities the file does not have: {unknown}")
    for name, dtype in dtypes.items():
        if dtype not in MODALITY_DTYPES:
            raise ValueError(f"modality {name!r}: dtype {dtype!r} is not one of {MODALITY_DTYPES}")
    return {m: dtypes.get(m, "float32") for m in modalities}


def _as_stored(block: np.ndarray, dtype: str, modality: str) -> np.ndarray:
    """``block`` in the modality's stored type. Floats become float32 as before; an integer modality takes only
    integer rows within its type's range, so a float or an overflowing value is never truncated silently."""
    if dtype == "float32":
        return np.asarray(block, dtype=np.float32)
    block = np.asarray(block)
    if block.size and not np.issubdtype(block.dtype, np.integer):
        raise ValueError(f"modality {modality!r} is stored as {dtype}, got rows of {block.dtype}")
    info = np.iinfo(dtype)
    if block.size and (block.min() < info.min or block.max() > info.max):
        raise ValueError(f"modality {modality!r}: values outside the range of {dtype}")
    return block.astype(dtype, copy=False)


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
        transforms: dict[str, dict[str, Any]] | None = None,
        label_shape: tuple[int, ...] = (),
        resizable: bool = False,
        dtypes: dict[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.dtypes = _checked_dtypes(modalities, dtypes)  # modality -> float32 (default), uint8 or int64
        self.resizable = resizable  # the row count may shrink before closing (rows that failed to decode)
        self.split_groups: tuple[np.ndarray, tuple[int, int]] | None = None
        self.transforms = transforms or {}
        self.label_shape = tuple(label_shape)  # (H, W) for per-pixel labels, written block by block
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.dataset = dataset
        self.modalities = modalities
        self.num_samples = num_samples
        self.class_names = class_names
        self.params = params
        self._file: h5py.File | None = None
        self._labels_written = False

    def __enter__(self) -> FeatureWriter:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            folder, reason = self.path.parent, exc.strerror or exc
            raise UserError(f"cannot write {self.path}: cannot create its folder {folder} ({reason})") from None
        try:
            self._file = h5py.File(self.tmp, "w")
        except OSError as exc:
            raise UserError(f"cannot write {self.path} ({exc})") from None
        group = self._file.create_group("modalities")
        for name, shape in self.modalities.items():
            dtype = self.dtypes[name]
            group.create_dataset(
                name,
                shape=(self.num_samples, *shape),
                dtype=dtype,
                chunks=(max(1, min(_chunk_rows(shape, np.dtype(dtype).itemsize), self.num_samples)), *shape),
                maxshape=(None, *shape) if self.resizable else None,
            )
        if self.label_shape:
            dtype = np.uint8 if len(self.class_names) <= 256 else np.int16
            self._file.create_dataset(
                "labels", shape=(self.num_samples, *self.label_shape), dtype=dtype, chunks=(1, *self.label_shape)
            )
        return self

    def write(self, modality: str, start: int, block: np.ndarray) -> None:
        """Write rows ``start``.. of ``modality``; a block with a NaN or an Inf is refused (the file is then
        never renamed into place) so that no feature file a stage would train on holds one."""
        assert self._file is not None
        block = _as_stored(block, self.dtypes[modality], modality)
        self._refuse_non_finite(modality, start, block)
        self._file["modalities"][modality][start : start + len(block)] = block

    def _refuse_non_finite(self, modality: str, start: int, block: np.ndarray) -> None:
        bad = non_finite_rows(block)
        if bad.size:
            raise UserError(
                f"{self.dataset}: modality '{modality}' has NaN or Inf values (first in row {start + int(bad[0])}); "
                f"not writing {self.path}"
            )

    def map_rows(self, modality: str, transform: Callable[[np.ndarray], np.ndarray], rows_per_block: int = 0) -> None:
        """Rewrite a written modality block by block with ``transform`` (e.g. a data-set-wide min-max known
        only after every row was written), so the modality is never held in memory whole."""
        assert self._file is not None
        data = self._file["modalities"][modality]
        block = rows_per_block or data.chunks[0]
        for start in range(0, self.num_samples, block):
            rows = _as_stored(transform(data[start : start + block]), self.dtypes[modality], modality)
            self._refuse_non_finite(modality, start, rows)  # e.g. a min-max over a constant modality
            data[start : start + block] = rows

    def written_blocks(self, modality: str, rows_per_block: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, rows)`` of a written modality block by block, for statistics known only once every row is in
        (a folder's array scaling), without holding the modality in memory whole."""
        assert self._file is not None
        data = self._file["modalities"][modality]
        block = rows_per_block or max(data.chunks[0], 256)
        for start in range(0, self.num_samples, block):
            yield start, data[start : start + block]

    def shrink(self, num_samples: int) -> None:
        """Keep only the first ``num_samples`` rows of every modality (a resizable writer whose source dropped
        rows while it was written)."""
        assert self._file is not None and self.resizable and num_samples <= self.num_samples
        for name in self.modalities:
            self._file["modalities"][name].resize(num_samples, axis=0)
        self.num_samples = num_samples

    def set_split_groups(self, permutations: np.ndarray, bounds: tuple[int, int]) -> None:
        """Store these split groups instead of the reference's 60/20/20 permutations."""
        permutations = np.asarray(permutations, dtype=np.int64)
        if permutations.ndim != 2 or permutations.shape[1] != self.num_samples:
            raise ValueError(f"split groups of shape {permutations.shape} for {self.num_samples} samples")
        self.split_groups = (permutations, (int(bounds[0]), int(bounds[1])))

    def write_label_rows(self, start: int, block: np.ndarray) -> None:
        """Per-pixel labels of rows ``start``.. (a writer made with ``label_shape``); classes are checked here, as
        the 1-D labels are when a feature file is opened."""
        assert self._file is not None and self.label_shape
        block = np.asarray(block)
        if tuple(block.shape[1:]) != self.label_shape:
            raise ValueError(f"label block shape {block.shape[1:]} != {self.label_shape}")
        if block.size and (block.min() < 0 or block.max() >= len(self.class_names)):
            bad = int(block.max() if block.max() >= len(self.class_names) else block.min())
            raise UserError(
                f"{self.dataset}: label {bad} outside 0..{len(self.class_names) - 1}; not writing {self.path}"
            )
        self._file["labels"][start : start + len(block)] = block
        self._labels_written = True

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
        if self.split_groups is None:
            f.create_group("splits").create_dataset("permutations", data=reference_permutations(self.num_samples))
        else:
            permutations, bounds = self.split_groups
            f.create_group("splits").create_dataset("permutations", data=permutations)
            f["splits/permutations"].attrs["bounds"] = np.asarray(bounds, dtype=np.int64)
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["dataset"] = self.dataset
        f.attrs["modalities"] = json.dumps(list(self.modalities))
        f.attrs["params"] = json.dumps(self.params, sort_keys=True)
        for modality, state in self.transforms.items():
            group = f.create_group(f"transforms/{modality}")
            for key, value in state.items():
                if isinstance(value, np.ndarray):
                    group.create_dataset(key, data=value)
                else:
                    group.attrs[key] = value


def write_features(
    path: Path,
    *,
    dataset: str,
    arrays: dict[str, np.ndarray],
    labels: np.ndarray,
    class_names: list[str],
    params: dict[str, Any],
    transforms: dict[str, dict[str, Any]] | None = None,
    dtypes: dict[str, str] | None = None,
) -> None:
    """Write in-memory arrays as a feature file (atomically); every modality float32 unless ``dtypes`` says."""
    shapes = {name: tuple(a.shape[1:]) for name, a in arrays.items()}
    with FeatureWriter(
        path,
        dataset=dataset,
        modalities=shapes,
        num_samples=len(labels),
        class_names=class_names,
        params=params,
        transforms=transforms,
        dtypes=dtypes,
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
    label_shape: tuple[int, ...] = ()  # (H, W) when every sample has a label per pixel (a dense data set)
    dtypes: dict[str, str] = field(default_factory=dict)  # modality -> numpy dtype name (float32, uint8, int64)

    def dtype(self, modality: str) -> str:
        """The stored type of ``modality``'s rows (float32 for a file made without dtypes)."""
        return self.dtypes.get(modality, "float32")

    @property
    def dense(self) -> bool:
        return bool(self.label_shape)

    @classmethod
    def open(cls, path: Path | str) -> FeatureFile:
        """Open and check a feature file, so that a broken one is refused here with its file and its fault
        named, not as a KeyError or a NaN loss deep inside a stage. Labels are read (they are small);
        modality arrays are only checked for shape and dtype, their values when they are read."""
        path = Path(path)
        if not path.exists():
            raise UserError(f"feature file not found: {path} (run `mst prepare` first)")
        try:
            with h5py.File(path, "r") as f:
                return cls._checked(path, f)
        except OSError as exc:
            raise UserError(f"{path}: not a readable HDF5 file ({exc})") from None
        except (KeyError, AttributeError, TypeError) as exc:  # a part of the wrong kind (a group, not an array)
            raise UserError(f"{path}: malformed feature file ({exc})") from None

    @classmethod
    def _checked(cls, path: Path, f: h5py.File) -> FeatureFile:
        version = f.attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise UserError(f"{path}: not an mst feature file of schema {SCHEMA_VERSION} (found {version})")
        for attr in ("dataset", "modalities"):
            if attr not in f.attrs:
                raise UserError(f"{path}: malformed feature file, missing attribute {attr}")
        try:
            names = json.loads(f.attrs["modalities"])
            params = json.loads(f.attrs.get("params", "{}"))
        except (TypeError, ValueError):
            raise UserError(f"{path}: malformed feature file, attribute modalities or params is not JSON") from None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise UserError(f"{path}: malformed feature file, attribute modalities is not a list of names")
        required = ["labels", "class_names", "splits/permutations", *(f"modalities/{n}" for n in names)]
        missing = list(dict.fromkeys(_missing_part(f, key) for key in required if key not in f))
        if missing:
            raise UserError(f"{path}: malformed feature file, missing {', '.join(missing)}")

        class_names = [s.decode() if isinstance(s, bytes) else str(s) for s in np.atleast_1d(f["class_names"][()])]
        num_classes = len(class_names)
        label_shape: tuple[int, ...] = ()
        if f["labels"].ndim == 3:  # per-pixel labels, checked block by block (NYU's are 445 MB)
            num_samples, label_shape = _checked_dense_labels(path, f["labels"], num_classes), f["labels"].shape[1:]
        else:
            labels = f["labels"][()]
            if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
                raise UserError(
                    f"{path}: labels must be a list of integers, got {labels.dtype} of shape {labels.shape}"
                )
            num_samples = len(labels)
            bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
            if bad.size:
                row = int(bad[0])
                raise UserError(
                    f"{path}: label {int(labels[row])} in row {row} is outside 0..{num_classes - 1} "
                    f"(the file has {num_classes} class names)"
                )

        modalities, dtypes = {}, {}
        for name in names:
            data = f["modalities"][name]
            if data.ndim < 1 or data.shape[0] != num_samples:
                rows = data.shape[0] if data.ndim else 0
                raise UserError(f"{path}: modality '{name}' has {rows} rows but there are {num_samples} labels")
            if data.dtype.name not in MODALITY_DTYPES:
                raise UserError(f"{path}: modality '{name}' is {data.dtype}, expected {', '.join(MODALITY_DTYPES)}")
            modalities[name], dtypes[name] = tuple(data.shape[1:]), data.dtype.name

        permutations = f["splits/permutations"]
        if permutations.ndim != 2 or permutations.shape[0] < 1 or permutations.shape[1] != num_samples:
            raise UserError(
                f"{path}: splits/permutations has shape {permutations.shape}, expected groups x {num_samples} samples"
            )
        return cls(
            path=path,
            dataset=str(f.attrs["dataset"]),
            modalities=modalities,
            class_names=class_names,
            num_samples=num_samples,
            params=params,
            label_shape=tuple(label_shape),
            dtypes=dtypes,
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_indices(self, group: int) -> dict[str, np.ndarray]:
        """Sample rows of train, val and test of split group ``group``, checked: a permutation of every sample
        (no row outside the file, none in two splits) and no empty split, which would otherwise fail later
        as a division by zero or an empty batch."""
        with h5py.File(self.path, "r") as f:
            permutations = f["splits/permutations"]
            if not 0 <= group < permutations.shape[0]:
                raise UserError(f"split group {group} out of range 0..{permutations.shape[0] - 1}")
            permutation = permutations[group]
            bounds = permutations.attrs.get("bounds")
        if bounds is not None:
            bounds = (int(bounds[0]), int(bounds[1]))
            if not 0 <= bounds[0] <= bounds[1] <= self.num_samples:
                raise UserError(f"{self.path}: splits/permutations has bounds {bounds} outside 0..{self.num_samples}")
        if not np.array_equal(np.sort(permutation), np.arange(self.num_samples)):
            raise UserError(
                f"{self.path}: splits/permutations row {group} is not a permutation of the {self.num_samples} samples"
            )
        splits = split_permutation(permutation, bounds)
        for name in SPLITS:
            if len(splits[name]) == 0:
                raise UserError(
                    f"{self.path}: split '{name}' of group {group} is empty with {self.num_samples} samples; "
                    f"at least {min_samples_for_splits()} samples are needed"
                )
        return splits

    def transform(self, modality: str) -> dict[str, Any] | None:
        """The stored state of ``modality``'s feature step (arrays and numbers by name), or None for a file
        prepared before states were stored or a modality whose step needs none."""
        with h5py.File(self.path, "r") as f:
            group = f.get(f"transforms/{modality}")
            if group is None:
                return None
            state: dict[str, Any] = {key: value[()] for key, value in group.items()}
            state.update({key: _attr_value(value) for key, value in group.attrs.items()})
            return state

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


def _attr_value(value: Any) -> Any:
    """A stored state attribute as Python: a number or a string as itself, a list (stored as an array attribute,
    e.g. the nets a modality was made for) as a list of str or numbers, whatever its length."""
    if isinstance(value, np.ndarray) and value.ndim:
        return [v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v for v in value]
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if hasattr(value, "item") else value


def _checked_dense_labels(path: Path, labels: h5py.Dataset, num_classes: int, block: int = 64) -> int:
    """The number of samples of N x H x W per-pixel labels, once every class is checked to be in range."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: per-pixel labels must be integers, got {labels.dtype}")
    for start in range(0, labels.shape[0], block):
        rows = labels[start : start + block]
        bad = np.flatnonzero(((rows < 0) | (rows >= num_classes)).reshape(len(rows), -1).any(axis=1))
        if bad.size:
            row = start + int(bad[0])
            raise UserError(
                f"{path}: a pixel label in row {row} is outside 0..{num_classes - 1} "
                f"(the file has {num_classes} class names)"
            )
    return int(labels.shape[0])


def _missing_part(f: h5py.File, key: str) -> str:
    """The outermost missing part of ``key`` ("splits" rather than "splits/permutations" when the whole group
    is gone), so the message names what to look for."""
    parts = key.split("/")
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        if prefix not in f:
            return prefix
    return key


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
        for b, (lo, hi) in enumerate(pairwise(bounds)):
            if hi > lo:
                chunk = data[b * block : min((b + 1) * block, data.shape[0])]
                rows[lo:hi] = chunk[unique[lo:hi] - b * block]
    out = np.empty((len(indices), *data.shape[1:]), dtype=data.dtype)
    out[order] = rows[inverse]
    return out
