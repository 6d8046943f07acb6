"""Random feature files for the speed benchmarks: the time of a stage does not depend on the values, so the
benchmarks need no prepared data set. ``synthetic_features`` has AV-MNIST's layout (1x28x28 images, 1xSxS
spectrograms, 10 classes); ``synthetic_frames`` NYU-Depth-V2's (RGB-D frames, a label per pixel, 41 classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mstcli.data.store import FeatureWriter, write_features


def synthetic_features(path: Path, n: int, spec_size: int, seed: int = 0) -> Path:
    """``n`` random AV-Digits pairs: images 1x28x28 and spectrograms 1x``spec_size``x``spec_size``."""
    rng = np.random.default_rng(seed)
    write_features(
        path,
        dataset="avdigits",
        arrays={
            "image": rng.random((n, 1, 28, 28), dtype=np.float32),
            "audio": rng.random((n, 1, spec_size, spec_size), dtype=np.float32),
        },
        labels=rng.integers(0, 10, n),
        class_names=[str(d) for d in range(10)],
        params={"synthetic": True},
    )
    return path


def synthetic_frames(path: Path, frames: int, height: int, width: int, seed: int = 0) -> Path:
    """``frames`` random NYU-Depth-V2 frames: RGB 3xHxW, depth 1xHxW, a label (void included) per pixel."""
    from mstcli.data.sources.nyudepth import CLASS_NAMES

    rng = np.random.default_rng(seed)
    with FeatureWriter(
        path,
        dataset="nyudepth",
        modalities={"rgb": (3, height, width), "depth": (1, height, width)},
        num_samples=frames,
        class_names=CLASS_NAMES,
        params={"synthetic": True},
        label_shape=(height, width),
    ) as writer:
        writer.write("rgb", 0, rng.random((frames, 3, height, width), dtype=np.float32))
        writer.write("depth", 0, rng.random((frames, 1, height, width), dtype=np.float32))
        writer.write_label_rows(0, rng.integers(0, len(CLASS_NAMES), (frames, height, width)).astype(np.uint8))
    return path
