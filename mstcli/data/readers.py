"""Single raw inputs for ``mst predict``: one reader per file suffix, each returning what the feature step
of its kind takes (an image as H x W uint8, a clip as its file and rate, read through data/clips.py by the
step, or a feature array as is). A file a reader cannot use raises :class:`BadInput` with the reason, so a batch
can list it and go on with the other files."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mstcli.data.clips import AUDIO_SUFFIXES


class BadInput(Exception):
    """One input cannot be used; the message is the reason shown next to its file name."""


@dataclass(frozen=True)
class RawInput:
    kind: str  # "image", "audio", "text" or "features"
    data: np.ndarray | str  # an audio input's samples are read by the step that needs them (clip_samples)
    rate: int = 0  # samples per second of an audio clip
    path: Path | None = None  # the file read (steps that decode in their own way read it again, e.g. RGB images)


def read_image(path: Path) -> RawInput:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = np.asarray(ImageOps.exif_transpose(image).convert("L"), dtype=np.uint8)  # upright, as viewed
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadInput(f"not a readable image ({str(exc).splitlines()[0][:80] or type(exc).__name__})") from None
    if pixels.size == 0:
        raise BadInput("empty image")
    return RawInput("image", pixels)


def read_audio(path: Path) -> RawInput:
    """A clip, checked from its header (data/clips.py, the reader of prepare's folder workers) and not decoded
    yet: each data set's step reads what it needs of it (:func:`clip_samples`, or only the window a folder's
    features take), so an hour-long file costs what the step uses."""
    from mstcli.data.clips import ClipError, clip_info

    try:
        info = clip_info(path)
    except ClipError as exc:
        raise BadInput(str(exc)) from None
    return RawInput("audio", np.zeros(0, dtype=np.float32), info.rate, path)


def clip_samples(item: RawInput) -> np.ndarray:
    """The whole clip of an audio input: mono float64 samples at ``item.rate``."""
    from mstcli.data.clips import ClipError, read_clip

    if item.data.size or item.path is None:
        return np.asarray(item.data)
    try:
        return read_clip(item.path)[0]
    except ClipError as exc:
        raise BadInput(str(exc)) from None


def read_text(path: Path) -> RawInput:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput("not a UTF-8 text file") from None
    if not text.strip():
        raise BadInput("empty text")
    return RawInput("text", text)


def read_features(path: Path) -> RawInput:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise BadInput(f"not a readable .npy array ({str(exc).splitlines()[0][:80] or type(exc).__name__})") from None
    if array.size == 0:
        raise BadInput("empty array")
    if not np.issubdtype(array.dtype, np.number):
        raise BadInput(f"array of {array.dtype}, not numbers")
    if not np.isfinite(array).all():
        raise BadInput("array holds NaN or Inf")
    return RawInput("features", array.astype(np.float32))


READERS: dict[str, Callable[[Path], RawInput]] = {
    ".png": read_image,
    ".jpg": read_image,
    ".jpeg": read_image,
    ".bmp": read_image,
    ".webp": read_image,
    ".tif": read_image,
    ".tiff": read_image,
    ".gif": read_image,
    **dict.fromkeys(AUDIO_SUFFIXES, read_audio),
    ".txt": read_text,
    ".npy": read_features,
}


def read_input(path: Path) -> RawInput:
    """The raw input in ``path``, by its suffix."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise BadInput(f"unknown file type '{path.suffix}' (mst predict reads {', '.join(sorted(READERS))})")
    if not path.is_file():
        raise BadInput("not found" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise BadInput("empty file")
    return dataclasses.replace(reader(path), path=path)


#: the kind of raw input each suffix gives (RawInput.kind), so a folder can be narrowed to what a student reads
SUFFIX_KINDS: dict[str, str] = {
    suffix: {read_image: "image", read_audio: "audio", read_text: "text", read_features: "features"}[reader]
    for suffix, reader in READERS.items()
}
