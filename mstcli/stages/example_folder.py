"""``mst example-folder``: a folder of paired PNG + WAV files with a metadata table, made from the embedded
AV-Digits data, so anyone can try (and benchmark) the pipeline on "their own" data without having any.

Each pair is one MNIST digit image (28 x 28 grayscale PNG) and one spoken clip of the same digit (8 kHz mono
16-bit WAV, a real voice of the AV-Digits source with AV-Digits' augmentation: speed, shift, gain and noise, so
the clips differ); the label is the digit's English name ("three").
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Literal

import numpy as np

from mstcli.data.audio import Augmentation, place_in_window
from mstcli.data.sources.avdigits import read_raw
from mstcli.errors import UserError

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEFAULT_RAW = Path("data/raw/avdigits.h5")
SPLIT_FRACTIONS = (("train", 0.6), ("validation", 0.2), ("test", 0.2))


def write_example_folder(
    out: Path,
    pairs: int,
    table: Literal["csv", "jsonl"] = "csv",
    split_column: bool = False,
    seed: int = 0,
    raw_path: Path = DEFAULT_RAW,
    progress: bool = True,
) -> Path:
    """Write ``pairs`` pairs to the new folder ``out`` (refused if it exists and is not empty); returns the
    metadata file. The folder is built under a temporary name and renamed at the end."""
    import soundfile
    from PIL import Image

    from mstcli.ui import progress_bar

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty folder; give a new folder")
    if not raw_path.is_file():
        raise UserError(f"{raw_path}: missing (the embedded AV-Digits source; run from the repository's root)")
    raw = read_raw(raw_path)
    if pairs < 1 or pairs > len(raw["images"]):
        raise UserError(f"--pairs must be in 1..{len(raw['images'])}, got {pairs}")
    rng = np.random.default_rng(seed)
    rate = raw["sample_rate"]
    aug = Augmentation(snr_db=(5.0, 20.0), speed=(0.9, 1.1), gain_db=(-6.0, 6.0), shift_seconds=0.1)
    clips_by_digit = {d: np.flatnonzero(raw["audio_labels"] == d) for d in range(10)}
    image_rows = np.sort(rng.choice(len(raw["images"]), size=pairs, replace=False))
    splits = _splits(pairs, rng) if split_column else None

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "pics").mkdir(parents=True)
    (tmp / "sounds").mkdir()
    rows = []
    try:
        with progress_bar(f"writing {out.name}", pairs, transient=not progress) as advance:
            for i, image_row in enumerate(image_rows):
                digit = int(raw["image_labels"][image_row])
                name = f"{i + 1:05d}"
                Image.fromarray(raw["images"][image_row]).save(tmp / "pics" / f"{name}.png")
                clip_row = rng.choice(clips_by_digit[digit])
                clip = raw["audio"][clip_row, : raw["audio_lengths"][clip_row]].astype(np.float64) / 32768.0
                wave = place_in_window(clip, rate, rate, aug, rng)
                soundfile.write(tmp / "sounds" / f"{name}.wav", np.clip(wave, -1, 1), rate, subtype="PCM_16")
                row = {
                    "image_file_name": f"pics/{name}.png",
                    "audio_file_name": f"sounds/{name}.wav",
                    "label": DIGIT_NAMES[digit],
                }
                if splits is not None:
                    row["split"] = splits[i]
                rows.append(row)
                advance(1)
        metadata = tmp / f"metadata.{table}"
        metadata.write_text(_table_text(rows, table))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / metadata.name


def _splits(pairs: int, rng: np.random.Generator) -> list[str]:
    names = []
    for split, fraction in SPLIT_FRACTIONS:
        names += [split] * int(round(fraction * pairs))
    names = (names + ["train"] * pairs)[:pairs]
    return list(rng.permutation(np.array(names)))


def _table_text(rows: list[dict[str, str]], table: str) -> str:
    if table == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()
