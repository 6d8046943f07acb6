"""Build a folder the way a user brings precomputed audio features: noisy spoken digits stored as log-mel
spectrograms in ``.npy`` files (float32 decibels, not scaled), paired with PNG digit images, and a
``metadata.csv`` with only train and test splits.

It is the folder on which an array modality is measured (docs/own-data.md, "Array modalities"): the spectrograms
are 112 x 112 (AV-MNIST's size), in dB as a recorder at a fixed gain gives them, so their values sit around
14 +- 5 rather than in [0, 1]; the images are MNIST digits degraded as AV-Digits degrades them (most of their
variance removed by PCA, pixel noise), so that neither modality alone tells every digit. Both come from the
embedded AV-Digits source (``data/raw/avdigits.h5``, as ``mst example-folder`` uses it).

Usage (from the repository's root)::

    python scripts/build_mel_folder.py OUT [--train 3000] [--test 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

SIZE = 112  # mel bands x frames
RATE = 8000
GAIN_DB = 14.0  # the recorder's gain: moves every value by the same number of dB
SNR_DB = (-2.0, 10.0)  # noisy, as AV-Digits: from noise as loud as the voice to a quiet room
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def log_mel_db(waves: np.ndarray) -> np.ndarray:
    """N x 112 x 112 float32 log-mel power in dB (10 log10), no floor and no scaling."""
    import torch
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=RATE, n_fft=512, win_length=200, hop_length=RATE // SIZE, n_mels=SIZE, f_min=20.0
    )
    with torch.no_grad():
        power = mel(torch.from_numpy(waves.astype(np.float32)))[:, :, :SIZE]
    return (10.0 * torch.log10(power + 1e-10) + GAIN_DB).numpy().astype(np.float32)


def build(out: Path, train: int, test: int, seed: int, raw_path: Path = Path("data/raw/avdigits.h5")) -> dict:
    """Write the folder; returns the spectrograms' mean and standard deviation."""
    from PIL import Image

    from mstcli.data.audio import Augmentation, place_in_window
    from mstcli.data.image import pca_degrade
    from mstcli.data.sources.avdigits import read_raw

    raw = read_raw(raw_path)
    rng = np.random.default_rng(seed)
    count = train + test
    rows = np.sort(rng.choice(len(raw["images"]), size=count, replace=False))
    digits = raw["image_labels"][rows].astype(int)
    degraded, _ = pca_degrade(raw["images"][rows], energy=0.3, noise=0.1, rng=rng)
    aug = Augmentation(snr_db=SNR_DB, speed=(0.9, 1.1), gain_db=(-6.0, 6.0), shift_seconds=0.1)
    clips_by_digit = {d: np.flatnonzero(raw["audio_labels"] == d) for d in range(10)}
    waves = np.empty((count, RATE), dtype=np.float32)
    for i, digit in enumerate(digits):
        clip_row = rng.choice(clips_by_digit[digit])
        clip = raw["audio"][clip_row, : raw["audio_lengths"][clip_row]].astype(np.float64) / 32768.0
        waves[i] = place_in_window(clip, RATE, raw["sample_rate"], aug, rng)
    (out / "pics").mkdir(parents=True)
    (out / "mels").mkdir()
    table, stats = [], []
    splits = ["train"] * train + ["test"] * test
    for start in range(0, count, 500):
        mels = log_mel_db(waves[start : start + 500])
        stats.append((float(mels.mean()), float(mels.std())))
        for offset, mel in enumerate(mels):
            i = start + offset
            name = f"{i:05d}"
            np.save(out / "mels" / f"{name}.npy", mel)
            Image.fromarray(np.round(degraded[i, 0] * 255).astype(np.uint8)).save(out / "pics" / f"{name}.png")
            table.append({"image_file_name": f"pics/{name}.png", "mel_file_name": f"mels/{name}.npy",
                          "label": DIGIT_NAMES[digits[i]], "split": splits[i]})  # fmt: skip
    with open(out / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    return {"mean": float(np.mean([m for m, _ in stats])), "std": float(np.mean([s for _, s in stats]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"error: {args.out} exists")
    stats = build(args.out, args.train, args.test, args.seed)
    print(f"wrote {args.out}: spectrograms {stats['mean']:.1f} +- {stats['std']:.1f} dB")


if __name__ == "__main__":
    main()
