"""AV-MNIST from its MultiBench-style ``.npy`` files (docs/method.md §3.1).

Layout under the source folder::

    image/train_data.npy   N_train x 784 (or N x 28 x 28, N x 1 x 28 x 28)
    image/test_data.npy    N_test x ...
    audio/train_data.npy   N_train x 112 x 112 (or N x 1 x 112 x 112) spectrograms
    audio/test_data.npy
    train_labels.npy       N_train digits 0-9
    test_labels.npy

As the reference, train and test are concatenated (train first: 60,000 + 10,000 = 70,000 rows) and re-split
by the reference protocol, ignoring the official split. Each image and each spectrogram is min-max scaled on
its own (the reference's rule for 2-D/3-D arrays). The arrays are memory-mapped and written in blocks, so the
3.5 GB of float32 spectrograms never sit in memory at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mstcli.data.normalize import minmax_per_sample
from mstcli.data.sources import DataSource, register
from mstcli.data.sources.checks import integer_labels, load_npy, shape_text
from mstcli.data.sources.streaming import Block, stream_features
from mstcli.errors import UserError

PARTS = ("train", "test")
CLASS_NAMES = [str(d) for d in range(10)]
BLOCK_ROWS = 1024


def _as_square_image(path: Path, array: np.ndarray) -> tuple[int, ...]:
    """Per-sample shape 1 x S x S for N x S*S, N x S x S or N x 1 x S x S arrays."""
    per = array.shape[1:]
    if len(per) == 1 and math.isqrt(per[0]) ** 2 == per[0]:
        side = math.isqrt(per[0])
        return (1, side, side)
    if len(per) == 2 and per[0] == per[1]:
        return (1, *per)
    if len(per) == 3 and per[0] == 1 and per[1] == per[2]:
        return per
    raise UserError(f"{path}: expected N x S*S, N x S x S or N x 1 x S x S, got {shape_text(array.shape)}")


def read_layout(root: Path) -> dict[str, Any]:
    """Memory maps of every file, their per-sample shapes, and the labels; everything checked."""
    arrays: dict[str, list[np.ndarray]] = {"image": [], "audio": []}
    shapes: dict[str, tuple[int, ...]] = {}
    labels = []
    for part in PARTS:
        label_path = root / f"{part}_labels.npy"
        part_labels = integer_labels(label_path, load_npy(label_path, f"AV-MNIST {part} labels", mmap=False), 10)
        for modality in ("image", "audio"):
            path = root / modality / f"{part}_data.npy"
            array = load_npy(path, f"AV-MNIST {part} {modality} data")
            shape = _as_square_image(path, array)
            if shapes.setdefault(modality, shape) != shape:
                raise UserError(f"{path}: per-sample shape {shape_text(shape)} differs from the train file's")
            if len(array) != len(part_labels):
                raise UserError(f"{path}: {len(array)} rows but {label_path.name} has {len(part_labels)} labels")
            arrays[modality].append(array)
        labels.append(part_labels)
    return {"arrays": arrays, "shapes": shapes, "labels": np.concatenate(labels)}


def _blocks(layout: dict[str, Any]) -> Iterator[Block]:
    shapes = layout["shapes"]
    for index in range(len(PARTS)):
        image, audio = layout["arrays"]["image"][index], layout["arrays"]["audio"][index]
        for start in range(0, len(image), BLOCK_ROWS):
            stop = start + BLOCK_ROWS
            yield {
                "image": minmax_per_sample(np.asarray(image[start:stop]).reshape(-1, *shapes["image"])),
                "audio": minmax_per_sample(np.asarray(audio[start:stop]).reshape(-1, *shapes["audio"])),
            }


def build(source: Path, params: Any, out: Path, meta: dict[str, Any]) -> None:
    if not source.is_dir():
        raise UserError(f"{source}: AV-MNIST needs the folder holding image/, audio/ and *_labels.npy")
    layout = read_layout(source)
    stream_features(
        out,
        dataset="avmnist",
        shapes=layout["shapes"],
        labels=layout["labels"],
        class_names=CLASS_NAMES,
        params=meta,
        blocks=_blocks(layout),
        description="AV-MNIST rows",
    )


SOURCE = register(
    DataSource(
        name="avmnist",
        modalities=("image", "audio"),
        pictures=("image",),
        default_source=None,
        description="AV-MNIST (MultiBench .npy): 28x28 digit images + 112x112 spoken-digit spectrograms, 10 classes",
        build=build,
    )
)
