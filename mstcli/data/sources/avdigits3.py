"""AV-Digits-3: the embedded three-modality set, AV-Digits' image and spoken digit plus a third real view.

The third view (``scan``) is an 8x8 digit of the UCI Optical Recognition of Handwritten Digits data (13 other
writers, 32x32 bitmaps reduced to counts 0-16 per 4x4 block; ``data/raw/optdigits.h5``, built by
``scripts/build_optdigits.py``). Each pair of AV-Digits (drawn exactly as ``avdigits`` draws it, with the same
seed) gets a scan of the same digit, degraded per sample so that it is no easier than the other two views: a
random share of its 64 cells is blanked (``prepare.scan_dropout``) and Gaussian noise is added
(``prepare.scan_noise``, on counts scaled to [0, 1]). With only 1,797 scans a scan recurs in about three
samples; the per-sample degradation makes the recurrences differ, as AV-Digits' augmentation does for its clips.

``prepare.source`` is the folder holding both raw files (``data/raw``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mstcli.data.sources import DataSource, FeatureStep, register
from mstcli.data.sources.avdigits import (
    CLASS_NAMES,
    audio_features,
    audio_graph,
    check_audio,
    check_image,
    draw_pairs,
    image_features,
    image_graph,
)
from mstcli.data.store import write_features
from mstcli.errors import UserError

AVDIGITS_FILE = "avdigits.h5"
SCAN_FILE = "optdigits.h5"
SCAN_LEVELS = 16  # the counts of set pixels in a 4x4 block
SCAN_SIDE = 8


def read_scans(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N x 8 x 8 counts, N labels), checked so that a wrong file is named."""
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise UserError(f"{path}: not a readable HDF5 file (build it with scripts/build_optdigits.py)") from None
    with f:
        if "images" not in f or "labels" not in f:
            raise UserError(f"{path}: not an optdigits source, it needs the arrays images and labels")
        images, labels = f["images"][:], f["labels"][:].astype(np.int64)
    if images.shape[1:] != (SCAN_SIDE, SCAN_SIDE) or len(images) != len(labels):
        raise UserError(f"{path}: images must be N x 8 x 8 with one label each, got {images.shape}")
    return images, labels


def degrade_scans(counts: np.ndarray, dropout: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Counts / 16, a random ``dropout`` share of the cells set to 0, Gaussian noise of std ``noise``; flat rows."""
    x = counts.reshape(len(counts), -1).astype(np.float32) / SCAN_LEVELS
    x *= rng.random(x.shape) >= dropout
    x += rng.normal(0.0, noise, x.shape).astype(np.float32)
    return x


def _source_files(source: Path) -> tuple[Path, Path]:
    if not source.is_dir():
        raise UserError(
            f"prepare.source for avdigits3 is the folder with {AVDIGITS_FILE} and {SCAN_FILE}, got {source}"
        )
    files = source / AVDIGITS_FILE, source / SCAN_FILE
    for path in files:
        if not path.is_file():
            raise UserError(f"{path} not found: avdigits3 reads {AVDIGITS_FILE} and {SCAN_FILE} from {source}")
    return files


def build(source: Path, params: Any, out: Path, meta: dict[str, Any]) -> None:
    avdigits, scans_path = _source_files(source)
    scans, scan_labels = read_scans(scans_path)
    rng = np.random.default_rng(params.seed)
    pairs = draw_pairs(avdigits, params, rng)  # the same pairs as avdigits with this seed: the generator goes on
    by_digit = {d: np.flatnonzero(scan_labels == d) for d in range(len(CLASS_NAMES))}
    if any(len(rows) == 0 for rows in by_digit.values()):
        raise UserError(f"{scans_path}: every digit 0-9 needs at least one scan")
    rows = np.array([rng.choice(by_digit[int(d)]) for d in pairs.labels])
    scan = degrade_scans(scans[rows], params.scan_dropout, params.scan_noise, rng)
    write_features(
        out,
        dataset="avdigits3",
        arrays={"image": pairs.images, "audio": pairs.spectrograms, "scan": scan},
        labels=pairs.labels,
        class_names=CLASS_NAMES,
        params=meta,
        transforms={**pairs.transforms(), "scan": {"levels": SCAN_LEVELS, "side": SCAN_SIDE}},
    )


SOURCE = register(
    DataSource(
        name="avdigits3",
        modalities=("image", "audio", "scan"),
        pictures=("image",),
        default_source="data/raw",
        description="embedded, three views: AV-Digits' image and spoken digit plus an 8x8 UCI digit scan (degraded)",
        build=build,
        # a scan's feature row is its 64 cells / 16 (predict reads .npy rows of that form)
        feature_steps={
            "image": FeatureStep(reads="image", check=check_image, apply=image_features, graph=image_graph),
            "audio": FeatureStep(reads="audio", check=check_audio, apply=audio_features, graph=audio_graph),
        },
    )
)
