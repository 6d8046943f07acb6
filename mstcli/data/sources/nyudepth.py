"""NYU-Depth-V2, the 1,449 labelled RGB-D frames (docs/method.md §3.5), from the labelled ``.mat`` file.

The file is MATLAB v7.3, i.e. HDF5, read with h5py. MATLAB stores arrays column-major, so h5py sees every array
transposed: ``images`` N x 3 x W x H, ``depths`` N x W x H, labels N x W x H. They become N x 3 x H x W (``rgb``),
N x 1 x H x W (``depth``) and N x H x W per-pixel labels, at full resolution, no resizing.

Labels (41 classes, 0 = void):

* ``labels40`` when the file has it (the reference's prepared file): used as it is, values 0..40;
* else the official ``labels`` (894 raw classes, 0 = unlabelled) mapped to the 40 classes of Gupta et al. by the
  file named in ``prepare.label_map``: a ``.npy`` or text file of integers, entry i being the 40-class id (1..40,
  or 0 for void) of raw class i + 1, or the ``classMapping40.mat`` of Gupta et al.'s toolbox (its ``mapClass``).
  The official file does not carry the 40-class mapping and mst does not ship one, so without a mapping file the
  official file is refused (one line, naming the setting).

Scaling as the reference: the RGB images min-max per channel over the whole data set (test rows included, §6.6-12),
each depth map min-max on its own. Frames are read and written in blocks of ``BLOCK_ROWS`` under a progress bar, so
preparing needs about one block in memory (the RGB images are 5.3 GB as float32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mstcli.data.normalize import RunningRange, minmax_per_sample
from mstcli.data.sources import DataSource, register
from mstcli.data.sources.checks import shape_text
from mstcli.data.store import FeatureWriter
from mstcli.errors import UserError
from mstcli.ui import progress_bar

CLASS_NAMES = [
    "void",
    "wall",
    "floor",
    "cabinet",
    "bed",
    "chair",
    "sofa",
    "table",
    "door",
    "window",
    "bookshelf",
    "picture",
    "counter",
    "blinds",
    "desk",
    "shelves",
    "curtain",
    "dresser",
    "pillow",
    "mirror",
    "floor mat",
    "clothes",
    "ceiling",
    "books",
    "refrigerator",
    "television",
    "paper",
    "towel",
    "shower curtain",
    "box",
    "whiteboard",
    "person",
    "night stand",
    "toilet",
    "sink",
    "lamp",
    "bathtub",
    "bag",
    "otherstructure",
    "otherfurniture",
    "otherprop",
]
MAT_FILE = "nyu_depth_v2_labeled.mat"
BLOCK_ROWS = 32


def read_label_map(path: Path) -> np.ndarray:
    """The raw-class -> 40-class table as an int array indexed by the raw class (entry 0: void stays void)."""
    if not path.is_file():
        raise UserError(f"prepare.label_map not found: {path}")
    try:
        if path.suffix == ".npy":
            table = np.load(path, allow_pickle=False)
        elif path.suffix == ".mat":
            from scipy.io import loadmat

            data = loadmat(path)
            if "mapClass" not in data:
                raise UserError(f"{path}: no mapClass (the 40-class mapping of Gupta et al.'s classMapping40.mat)")
            table = data["mapClass"]
        else:
            table = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None)
    except (ValueError, OSError) as exc:
        raise UserError(f"{path}: not a readable label mapping ({str(exc).splitlines()[0]})") from None
    table = np.asarray(table).reshape(-1)
    if table.size == 0 or not np.all(np.equal(np.mod(table, 1), 0)) or table.min() < 0 or table.max() > 40:
        raise UserError(f"{path}: a label mapping must hold whole numbers 0..40, one per raw class")
    return np.concatenate([[0], table.astype(np.int64)])


class MatLayout:
    """The labelled ``.mat`` file opened and checked: the three arrays, N, the frame size and the label rule."""

    def __init__(self, path: Path, label_map: Path | None) -> None:
        self.path = path
        try:
            self.file = h5py.File(path, "r")
        except OSError:
            raise UserError(
                f"{path}: not a MATLAB v7.3 (HDF5) .mat file; NYU-Depth-V2's labelled file is one"
            ) from None
        try:
            self._check(label_map)
        except Exception:
            self.file.close()
            raise

    def _array(self, key: str) -> h5py.Dataset:
        item = self.file.get(key)
        if not isinstance(item, h5py.Dataset):
            raise UserError(f"{self.path}: missing key '{key}' (the labelled .mat holds images, depths and labels)")
        return item

    def _check(self, label_map: Path | None) -> None:
        self.images, self.depths = self._array("images"), self._array("depths")
        if "labels40" in self.file:
            self.labels, self.mapping = self._array("labels40"), None
        elif "labels" in self.file:
            if label_map is None:
                raise UserError(
                    f"{self.path}: has the 894-class 'labels' but no 'labels40'; set prepare.label_map to the"
                    " 40-class mapping (classMapping40.mat, or a .npy/.txt of 894 class ids)"
                )
            self.labels, self.mapping = self._array("labels"), read_label_map(label_map)
        else:
            raise UserError(f"{self.path}: missing key 'labels40' (or 'labels' with prepare.label_map)")
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise UserError(
                f"{self.path}: images must be N x 3 x W x H as MATLAB writes them, got {self._shape(self.images)}"
            )
        n, _, width, height = self.images.shape
        for name, array in (("depths", self.depths), (self.labels.name.lstrip("/"), self.labels)):
            if array.shape != (n, width, height):
                raise UserError(
                    f"{self.path}: {name} must be {n} x {width} x {height} (N x W x H, as images), "
                    f"got {self._shape(array)}"
                )
        if n == 0:
            raise UserError(f"{self.path}: no frames")
        if self.mapping is not None:
            top = int(max(self.labels[start : start + BLOCK_ROWS].max() for start in range(0, n, BLOCK_ROWS)))
            if top >= len(self.mapping):
                raise UserError(
                    f"{self.path}: raw class {top} but prepare.label_map covers 1..{len(self.mapping) - 1}"
                )
        self.num_samples, self.size = n, (height, width)

    @staticmethod
    def _shape(array: h5py.Dataset) -> str:
        return shape_text(tuple(array.shape))

    def block(self, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frames start.. (at most BLOCK_ROWS): rgb N x 3 x H x W, depth N x 1 x H x W (float32, unscaled), labels."""
        stop = start + BLOCK_ROWS
        rgb = np.asarray(self.images[start:stop], dtype=np.float32).transpose(0, 1, 3, 2)
        depth = np.asarray(self.depths[start:stop], dtype=np.float32).transpose(0, 2, 1)[:, None]
        labels = np.asarray(self.labels[start:stop]).transpose(0, 2, 1)
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise UserError(f"{self.path}: labels of frames {start}..{stop - 1} are not whole numbers")
        labels = labels.astype(np.int64)
        if self.mapping is not None:
            labels = self.mapping[labels]
        elif labels.size and (labels.min() < 0 or labels.max() > 40):
            raise UserError(f"{self.path}: labels40 holds {int(labels.max())} (classes are 0..40, 0 = void)")
        return rgb, depth, labels.astype(np.uint8)


def build(source: Path, params: Any, out: Path, meta: dict[str, Any]) -> None:
    path = source if source.is_file() else source / MAT_FILE
    if not path.is_file():
        raise UserError(f"{source}: no {MAT_FILE} (give the labelled .mat file or its folder)")
    label_map = Path(params.label_map).expanduser() if params.label_map else None
    layout = MatLayout(path, label_map)
    height, width = layout.size
    rgb_range = RunningRange(channel_axis=0)  # per channel over the whole data set, applied in a second pass
    try:
        with FeatureWriter(
            out,
            dataset="nyudepth",
            modalities={"rgb": (3, height, width), "depth": (1, height, width)},
            num_samples=layout.num_samples,
            class_names=CLASS_NAMES,
            params=meta,
            label_shape=(height, width),
        ) as writer:
            with progress_bar("NYU-Depth-V2 frames", layout.num_samples) as advance:
                for start in range(0, layout.num_samples, BLOCK_ROWS):
                    rgb, depth, labels = layout.block(start)
                    rgb_range.update(rgb)
                    writer.write("rgb", start, rgb)
                    writer.write("depth", start, minmax_per_sample(depth))
                    writer.write_label_rows(start, labels)
                    advance(len(rgb))
            writer.map_rows("rgb", rgb_range.apply)
    finally:
        layout.file.close()


SOURCE = register(
    DataSource(
        name="nyudepth",
        modalities=("rgb", "depth"),
        default_source=None,
        description="NYU-Depth-V2 labelled frames (the MATLAB v7.3 .mat): RGB + depth, 40 classes + void per pixel",
        build=build,
    )
)
