"""A folder laid out as the Hugging Face folder builders document it, with the quirks of folders made outside the
project all at once: split folders named ``train/``, ``val/`` and ``test/`` each with its own ``metadata.parquet``
(written by pyarrow), an extra text column that is not a modality, phone photos stored sideways with an EXIF
orientation, grayscale and colour JPEGs mixed, file names decomposed (NFD) on disk but composed (NFC) in the
table, and labels ``01`` and ``1`` that are two classes. It must prepare as written and train a student that
learns; each quirk read wrong breaks one of the checks (a sideways photo puts its bar in a column, one gray image
turning the folder gray gives one channel, merged labels give two classes, a missing NFD file or an ``ocr_text``
modality refuses the folder)."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from folder_fixtures import write_wav
from typer.testing import CliRunner

from mstcli.cli import app
from mstcli.data.store import FeatureFile

runner = CliRunner()
LABELS = ("01", "1", "2")
SPLITS = {"train": 12, "val": 3, "test": 4}  # rows per class


def write_photo(path: Path, label: int, row: int, rng: np.random.Generator) -> None:
    """A 12 x 12 JPEG with a bright horizontal bar at the class's height, as the viewer should see it. Every third
    photo is stored sideways with EXIF orientation 6 (turn 90 degrees clockwise to view), as phones write them;
    every fourth is grayscale, the others colour."""
    from PIL import Image

    seen = rng.integers(0, 50, (12, 12)).astype(np.uint8)
    seen[1 + 4 * label : 3 + 4 * label] = 250
    stored = np.rot90(seen, k=1) if row % 3 == 0 else seen  # rot90 k=1 turns counter-clockwise
    path.parent.mkdir(parents=True, exist_ok=True)
    if row % 4 == 0:
        image = Image.fromarray(np.ascontiguousarray(stored))
    else:
        image = Image.fromarray(np.ascontiguousarray(np.stack([stored, stored // 2, stored], axis=-1)))
    exif = Image.Exif()
    if row % 3 == 0:
        exif[0x0112] = 6
    image.save(path, quality=95, exif=exif.tobytes())


def hugging_face_folder(root: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    row = 0
    for split, per_class in SPLITS.items():
        records = []
        for i in range(per_class * len(LABELS)):
            label = i % len(LABELS)
            name = f"photos/café {row}.jpg"  # composed in the table, decomposed on disk (as macOS writes it)
            write_photo(root / split / unicodedata.normalize("NFD", name), label, row, rng)
            write_wav(root / split / "sounds" / f"{row}.wav", label)
            records.append({"image_file_name": name, "audio_file_name": f"sounds/{row}.wav",
                            "label": LABELS[label], "ocr_text": "scanned" if row % 5 == 0 else None})  # fmt: skip
            row += 1
        pq.write_table(pa.Table.from_pylist(records), root / split / "metadata.parquet")


@pytest.mark.e2e
def test_a_hugging_face_folder_with_every_quirk_prepares_and_trains(tmp_path, monkeypatch):
    hugging_face_folder(tmp_path / "pairs")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(json.dumps({
        "common": {"dataset": "folder", "student": "image", "threads": 1},
        "prepare": {"source": "pairs", "modalities": ["image", "audio"], "image_size": 12, "spec_size": 8,
                    "clip_seconds": 0.25, "sample_rate": 8000},
        "train": {"epochs": 8, "batch_size": 6, "lr": 3e-3},
        "fit_masks": {"epochs": 1, "batch_size": 6, "hidden_dim_factor": 32, "heads": 1},
        "distill": {"epochs": 4, "batch_size": 6, "lr": 3e-3},
    }))  # fmt: skip
    result = runner.invoke(app, ["prepare"])
    assert result.exit_code == 0, result.output
    assert "ocr_text" in result.output, "the columns left out are listed"

    features = FeatureFile.open(tmp_path / "data/features/folder.h5")
    assert features.class_names == list(LABELS)
    assert set(features.modalities) == {"image", "audio"}
    assert features.modalities["image"] == (3, 12, 12), "colour whenever any photo is colour"
    sizes = {name: len(rows) for name, rows in features.split_indices(0).items()}
    assert sizes == {name: per_class * len(LABELS) for name, per_class in SPLITS.items()}, "val/ is the validation"
    images = features.read("image").astype(np.float32).mean(axis=1)  # N x 12 x 12
    across_rows = images.mean(axis=2).std(axis=1)  # a horizontal bar makes the row means differ
    across_columns = images.mean(axis=1).std(axis=1)
    assert (across_rows > 3 * across_columns).all(), "every photo upright: its bar is a row, not a column"

    for command in (["train"], ["fit-masks"], ["distill"], ["eval", "--json"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, (command, result.output)
    metrics = json.loads(result.output)
    assert metrics["accuracy"] >= 0.75, metrics  # 12 test rows of 3 classes: chance is 1/3
