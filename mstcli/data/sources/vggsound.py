"""VGGSound-50k (docs/method.md §3.3): per-clip features extracted outside mst, listed by a metadata file.

Layout under the source folder (the feature files may sit in any sub-folders)::

    VGGS50k_metadata.txt           one clip per line: ``name&label`` (label: class id, or the category name)
    <name>_vFeature.npy            visual, 10 x 7 x 7 x 512 (segments x H x W x channels)
    <name>_aFeature.npy            audio, 10 x 128 (segments x VGGish embedding)
    seg_labels/<name>_sLabel.npy   segment event flags, 1 x 10 (checked; unused, as in the reference)

The target is the clip's class id from the metadata. With numeric labels the classes are 0..max id; with
category names they are numbered in order of first appearance, as the reference numbers the CSV's
categories. Both modalities are min-max scaled with one data-set-wide minimum and maximum each (the
reference's global scaling); the clips are read and written in blocks, never all at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mstcli.data.normalize import RunningRange
from mstcli.data.sources import DataSource, register
from mstcli.data.sources.checks import load_npy, require_shape
from mstcli.data.sources.streaming import Block, stream_features
from mstcli.errors import UserError

METADATA = "VGGS50k_metadata.txt"
VISUAL_SHAPE = (10, 7, 7, 512)
AUDIO_SHAPE = (10, 128)
SUFFIXES = {"visual": "_vFeature.npy", "audio": "_aFeature.npy", "segments": "_sLabel.npy"}
BLOCK_CLIPS = 64


def read_metadata(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Clip names, class ids and class names from ``name&label`` lines."""
    if not path.is_file():
        raise UserError(f"{path}: missing (the VGGSound-50k clip list, lines name&label)")
    names, raw_labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, label = line.strip().rpartition("&")
        if not sep or not name or not label:
            raise UserError(f"{path}: line {number} is not name&label: {line.strip()!r}")
        names.append(name)
        raw_labels.append(label.strip())
    if not names:
        raise UserError(f"{path}: no clips listed")
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise UserError(f"{path}: clip {duplicate} is listed twice")
    if all(label.isdigit() for label in raw_labels):
        ids = np.array([int(label) for label in raw_labels], dtype=np.int64)
        return names, ids, [f"class_{i}" for i in range(int(ids.max()) + 1)]
    classes = list(dict.fromkeys(raw_labels))
    return names, np.array([classes.index(label) for label in raw_labels], dtype=np.int64), classes


def index_files(root: Path) -> dict[str, dict[str, Path]]:
    """kind -> clip name -> file, over one walk of the source folder."""
    found: dict[str, dict[str, Path]] = {kind: {} for kind in SUFFIXES}
    for path in root.rglob("*.npy"):
        for kind, suffix in SUFFIXES.items():
            if path.name.endswith(suffix):
                found[kind][path.name[: -len(suffix)]] = path
    return found


def clip_files(names: list[str], files: dict[str, dict[str, Path]], root: Path) -> list[dict[str, Path]]:
    clips = []
    for name in names:
        clip = {}
        for kind, suffix in SUFFIXES.items():
            if name not in files[kind]:
                where = "seg_labels/" if kind == "segments" else ""
                raise UserError(f"{root / where}{name}{suffix}: missing (listed in {METADATA})")
            clip[kind] = files[kind][name]
        clips.append(clip)
    return clips


def _read_clip(clip: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    visual = load_npy(clip["visual"], "visual features", mmap=False)
    require_shape(clip["visual"], visual, VISUAL_SHAPE, "visual features")
    audio = load_npy(clip["audio"], "audio features", mmap=False)
    require_shape(clip["audio"], audio, AUDIO_SHAPE, "audio features")
    segments = load_npy(clip["segments"], "segment labels", mmap=False)
    if segments.size != AUDIO_SHAPE[0]:
        raise UserError(f"{clip['segments']}: segment labels must have 10 values (1 x 10), got {segments.shape}")
    return visual, audio


def _blocks(clips: list[dict[str, Path]]) -> Iterator[Block]:
    for start in range(0, len(clips), BLOCK_CLIPS):
        pairs = [_read_clip(clip) for clip in clips[start : start + BLOCK_CLIPS]]
        yield {"visual": np.stack([v for v, _ in pairs]), "audio": np.stack([a for _, a in pairs])}


def build(source: Path, params: Any, out: Path, meta: dict[str, Any]) -> None:
    if not source.is_dir():
        raise UserError(f"{source}: VGGSound-50k needs the folder holding {METADATA} and the feature files")
    names, labels, class_names = read_metadata(source / METADATA)
    clips = clip_files(names, index_files(source), source)
    stream_features(
        out,
        dataset="vggsound",
        shapes={"visual": VISUAL_SHAPE, "audio": AUDIO_SHAPE},
        labels=labels,
        class_names=class_names,
        params=meta,
        blocks=_blocks(clips),
        description="VGGSound clips",
        dataset_ranges={"visual": RunningRange(), "audio": RunningRange()},
    )


SOURCE = register(
    DataSource(
        name="vggsound",
        modalities=("visual", "audio"),
        default_source=None,
        description="VGGSound-50k pre-extracted features (visual 10x7x7x512, audio 10x128), 141 classes",
        build=build,
    )
)
