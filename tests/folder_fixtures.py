"""Tiny folders of paired files in the real formats (PNG, JPEG, WAV, FLAC, NPY, TXT; CSV and JSONL tables), for
the tests of ``common.dataset: folder``.

Every row carries its row number in a way the tests can read back after featurizing, so that the pairing of the
modalities and the labels is checked, not assumed: the image is a flat gray of level ``8 * row + 4`` (a flat image
stays flat through any resize), the .npy array is filled with the row number, the clip is a tone whose frequency
rises with the label.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

NAMES = ("apple", "banana", "cherry")
RATE = 8000


def gray_level(row: int) -> int:
    return 8 * row + 4


def write_png(path: Path, level: int, size: int = 12, mode: str = "L") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size, size + 2), level, dtype=np.uint8)
    image = Image.fromarray(pixels) if mode == "L" else Image.fromarray(np.stack([pixels] * 3, axis=-1))
    image.save(path)


def tone(label: int, seconds: float = 0.2, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.5 * np.sin(2 * np.pi * (400 + 900 * label) * t)


def write_wav(path: Path, label: int, rate: int = RATE) -> None:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, tone(label, rate=rate), rate, subtype="PCM_16")


def write_table(path: Path, rows: list[dict], fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or path.suffix.lstrip(".")
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


def image_audio_rows(root: Path, per_class: int = 4, offset: int = 0, folder: str = "") -> list[dict]:
    """PNG + WAV rows, ``per_class`` of each of NAMES, row ``offset + i``'s files under ``root/folder``."""
    rows = []
    for i in range(per_class * len(NAMES)):
        row, label = offset + i, i % len(NAMES)
        write_png(root / folder / "pics" / f"{row:03d}.png", gray_level(row))
        write_wav(root / folder / "sounds" / f"{row:03d}.wav", label)
        rows.append({"image_file_name": f"pics/{row:03d}.png", "audio_file_name": f"sounds/{row:03d}.wav",
                     "label": NAMES[label]})  # fmt: skip
    return rows


def image_array_rows(root: Path, count: int, shape: tuple[int, ...] = (3, 5)) -> list[dict]:
    """PNG + NPY rows; the array is full of the row number, so any row's pairing can be read back."""
    rows = []
    for row in range(count):
        write_png(root / "pics" / f"{row:03d}.png", gray_level(row))
        (root / "arrays").mkdir(parents=True, exist_ok=True)
        np.save(root / "arrays" / f"{row:03d}.npy", np.full(shape, row, dtype=np.float64))
        rows.append({"image_file_name": f"pics/{row:03d}.png", "sensor_file_name": f"arrays/{row:03d}.npy",
                     "label": NAMES[row % len(NAMES)]})  # fmt: skip
    return rows


def rows_of_features(features, modality: str = "sensor") -> np.ndarray:
    """The row numbers of the samples of a prepared feature file, read off an array modality."""
    data = features.read(modality)
    return data.reshape(len(data), -1)[:, 0].round().astype(int)
