"""Build ``data/raw/optdigits.h5``, the third view of the embedded three-modality set (``avdigits3``).

The 1,797 8x8 digits of the UCI "Optical Recognition of Handwritten Digits" data (Alpaydin and Kaynak, 1998;
CC BY 4.0): 32x32 bitmaps of forms filled in by 13 writers (another population than MNIST's), each reduced to
an 8x8 grid of counts 0-16 of the set pixels in its 4x4 block. The copy read here is the one scikit-learn ships
as ``sklearn/datasets/data/digits.csv.gz`` (its ``load_digits``): the file is read straight out of the wheel,
which is never installed.

Usage (network needed once, to fetch the wheel)::

    python scripts/build_optdigits.py [--wheel scikit_learn-....whl] [--out data/raw/optdigits.h5]
"""

from __future__ import annotations

import argparse
import gzip
import io
import subprocess
import tempfile
import zipfile
from pathlib import Path

import h5py
import numpy as np

WHEEL = "scikit-learn==1.9.1"
MEMBER = "sklearn/datasets/data/digits.csv.gz"


def fetch_wheel(workdir: Path) -> Path:
    subprocess.run(
        ["pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(workdir), WHEEL], check=True
    )
    (wheel,) = workdir.glob("scikit_learn-*.whl")
    return wheel


def read_digits(wheel: Path) -> tuple[np.ndarray, np.ndarray]:
    """(1797 x 8 x 8 uint8 counts 0-16, 1797 labels) from the CSV inside the wheel (64 pixels, then the label)."""
    with zipfile.ZipFile(wheel) as archive:
        text = gzip.decompress(archive.read(MEMBER)).decode()
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64)
    if table.shape != (1797, 65) or table[:, :64].max() > 16 or set(np.unique(table[:, 64])) != set(range(10)):
        raise SystemExit(f"{wheel}: {MEMBER} is not the 1797 x (64 + 1) digits table")
    return table[:, :64].reshape(-1, 8, 8).astype(np.uint8), table[:, 64]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, help="a scikit-learn wheel already downloaded")
    parser.add_argument("--out", type=Path, default=Path("data/raw/optdigits.h5"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        images, labels = read_digits(wheel)
    with h5py.File(args.out, "w") as f:
        f.create_dataset("images", data=images, compression="gzip", compression_opts=9)
        f.create_dataset("labels", data=labels)
        f.attrs["source"] = "UCI Optical Recognition of Handwritten Digits, as scikit-learn's digits.csv.gz"
        f.attrs["licence"] = "CC BY 4.0"
        f.attrs["levels"] = 16
    print(f"wrote {args.out}: {len(labels)} digits, counts per class {np.bincount(labels).tolist()}")


if __name__ == "__main__":
    main()
