"""``common.dataset: folder``: a user's folder of paired files with a metadata table becomes a feature file, and
every stage, predict and export run on it. Tiny folders in the real formats (tests/folder_fixtures.py)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_result import one_line_error
from folder_fixtures import (
    NAMES,
    gray_level,
    image_array_rows,
    image_audio_rows,
    rows_of_features,
    write_png,
    write_table,
    write_wav,
)
from typer.testing import CliRunner

from mstcli.cli import app
from mstcli.data.store import FeatureFile
from mstcli.engine.logbook import routing_teachers

runner = CliRunner()
SMALL = ["-S", "prepare.image_size=8", "-S", "prepare.spec_size=8", "-S", "prepare.clip_seconds=0.25",
         "-S", "prepare.sample_rate=8000", "-S", "common.threads=1"]  # fmt: skip


def prepare(folder: Path, out: Path, *sets: str):
    return runner.invoke(
        app, ["prepare", "--dataset", "folder", "--source", str(folder), "--out", str(out), *SMALL, *sets]
    )


def prepared(folder: Path, out: Path, *sets: str) -> FeatureFile:
    result = prepare(folder, out, *sets)
    assert result.exit_code == 0, result.output
    return FeatureFile.open(out)


def refused(folder: Path, out: Path, *culprits: str, sets: tuple[str, ...] = ()) -> str:
    """The one line of a refused prepare, checked to name every culprit and to leave nothing behind."""
    line = one_line_error(prepare(folder, out, *sets), *culprits)
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    return line


def group_rows(features: FeatureFile, group: int, modality: str = "sensor") -> dict[str, set[int]]:
    ids = rows_of_features(features, modality)
    return {name: set(ids[rows].tolist()) for name, rows in features.split_indices(group).items()}


# ---- what a folder becomes -------------------------------------------------------------------------------------


def test_png_wav_csv_folder_becomes_paired_features_with_class_names(tmp_path):
    rows = image_audio_rows(tmp_path / "pairs", per_class=4)
    write_table(tmp_path / "pairs" / "metadata.csv", rows)
    features = prepared(tmp_path / "pairs", tmp_path / "f.h5")

    assert features.dataset == "folder"
    assert features.modalities == {"image": (1, 8, 8), "audio": (1, 8, 8)}
    assert features.class_names == sorted(NAMES) and features.num_samples == 12
    images, audio, labels = features.read("image"), features.read("audio"), features.labels()
    # each image is flat gray 8 * row + 4: the stored row, its label and its clip must all be of that row
    row_of = np.round((images.reshape(12, -1).mean(1) * 255 - 4) / 8).astype(int)
    assert np.allclose(images.reshape(12, -1).std(1), 0, atol=1e-6), "a flat image stays flat through the resize"
    assert sorted(row_of.tolist()) == list(range(12))
    assert [features.class_names[c] for c in labels] == [rows[r]["label"] for r in row_of]
    # the tone rises with the label: the loudest mel band of the clip must rise with it too
    band = audio[:, 0].mean(axis=2).argmax(axis=1)
    for a in range(12):
        for b in range(12):
            if NAMES.index(features.class_names[labels[a]]) < NAMES.index(features.class_names[labels[b]]):
                assert band[a] < band[b]
    states = {m: features.transform(m)["kind"] for m in ("image", "audio")}
    assert states == {"image": "image", "audio": "audio"}


def test_drawn_split_is_stratified_and_differs_between_groups(tmp_path):
    write_table(tmp_path / "f" / "metadata.csv", image_array_rows(tmp_path / "f", 30))
    features = prepared(tmp_path / "f", tmp_path / "f.h5")
    labels = features.labels()
    splits = features.split_indices(0)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [18, 6, 6]
    for rows in splits.values():
        assert np.bincount(labels[rows], minlength=3).tolist() in ([6, 6, 6], [2, 2, 2])
    assert group_rows(features, 0) != group_rows(features, 1), "each split group draws its own split"
    again = prepared(tmp_path / "f", tmp_path / "again.h5")
    for group in (0, 3):
        assert group_rows(again, group) == group_rows(features, group), "a group's split is the same every prepare"


def test_jsonl_with_a_split_column_keeps_every_given_split(tmp_path):
    rows = image_array_rows(tmp_path / "f", 18)
    given = {}
    for i, row in enumerate(rows):
        row["split"] = ("train", "val", "test", "train", "train", "validation", "test", "train", "train")[i % 9]
        given[i] = {"val": "val", "validation": "val"}.get(row["split"], row["split"])
    write_table(tmp_path / "f" / "metadata.jsonl", rows)
    features = prepared(tmp_path / "f", tmp_path / "f.h5")
    for group in (0, 7):
        assert group_rows(features, group) == {
            s: {i for i, g in given.items() if g == s} for s in ("train", "val", "test")
        }


def test_split_folders_each_with_their_own_table(tmp_path):
    root = tmp_path / "f"
    counts = {"train": 4, "validation": 2, "test": 2}
    offset = 0
    for split, per_class in counts.items():
        rows = image_audio_rows(root, per_class=per_class, offset=offset, folder=split)
        write_table(root / split / ("metadata.jsonl" if split == "test" else "metadata.csv"), rows)
        offset += len(rows)
    features = prepared(root, tmp_path / "f.h5")
    sizes = {s: len(r) for s, r in features.split_indices(5).items()}
    assert sizes == {"train": 12, "val": 6, "test": 6}
    row_of = np.round((features.read("image").reshape(24, -1).mean(1) * 255 - 4) / 8).astype(int)
    assert sorted(row_of[features.split_indices(5)["test"]].tolist()) == list(range(18, 24))


def test_missing_validation_is_drawn_from_train_per_class(tmp_path):
    rows = image_array_rows(tmp_path / "f", 24)
    for i, row in enumerate(rows):
        row["split"] = "test" if i >= 18 else "train"
    write_table(tmp_path / "f" / "metadata.csv", rows)
    features = prepared(tmp_path / "f", tmp_path / "f.h5")
    for group in (0, 1):
        parts = group_rows(features, group)
        assert parts["test"] == set(range(18, 24))
        assert len(parts["val"]) == 6 and parts["val"] < set(range(18))  # a quarter of 6 train rows, 2 per class
        assert len({r % 3 for r in parts["val"]}) == 3
    assert group_rows(features, 0)["val"] != group_rows(features, 1)["val"]


def test_rgb_jpeg_flac_npy_and_text_three_modalities(tmp_path, tiny_text_model):
    import soundfile
    from PIL import Image

    root = tmp_path / "f"
    rows = []
    for i in range(9):
        (root / "photos").mkdir(parents=True, exist_ok=True)
        pixels = np.zeros((10, 10, 3), dtype=np.uint8)
        pixels[..., i % 3] = 200
        Image.fromarray(pixels).save(root / "photos" / f"{i}.jpg", quality=95)
        (root / "clips").mkdir(exist_ok=True)
        soundfile.write(root / "clips" / f"{i}.flac", np.sin(np.arange(4000) * (0.05 + 0.1 * (i % 3))), 16000)
        (root / "notes").mkdir(exist_ok=True)
        (root / "notes" / f"{i}.txt").write_text(f"apple {NAMES[i % 3]} cherry")
        rows.append({"photo_file_name": f"photos/{i}.jpg", "clip_file_name": f"clips/{i}.flac",
                     "note_file_name": f"notes/{i}.txt", "label": i % 3})  # fmt: skip
    write_table(root / "metadata.csv", rows)
    features = prepared(root, tmp_path / "f.h5", "-S", f"prepare.text_model={tiny_text_model}")
    assert features.modalities == {"photo": (3, 8, 8), "clip": (1, 8, 8), "note": (12,)}
    assert features.class_names == ["0", "1", "2"]
    photos, labels = features.read("photo"), features.labels()
    assert (photos.mean(axis=(2, 3)).argmax(axis=1) == labels).all(), "RGB kept: the lit channel is the label"
    notes = features.read("note")
    assert np.allclose(notes[labels == 1][0], notes[labels == 1][1], atol=1e-7), "same text, same vector"
    assert np.abs(notes[labels == 0][0] - notes[labels == 1][0]).max() > 1e-5, "another text, another vector"

    info = runner.invoke(app, ["info", str(tmp_path / "f.h5")])
    assert info.exit_code == 0 and all(m in info.output for m in ("photo", "clip", "note", "3 x 8 x 8"))
    (tmp_path / "data" / "features").mkdir(parents=True)
    os.replace(tmp_path / "f.h5", tmp_path / "data" / "features" / "folder.h5")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    settings = ["-S", "common.dataset=folder", "-S", "common.student=photo", "-S", "train.epochs=1",
                "-S", "fit_masks.epochs=1", "-S", "distill.epochs=1", "-S", "train.batch_size=4",
                "-S", "fit_masks.batch_size=4", "-S", "distill.batch_size=4"]  # fmt: skip
    try:
        trained = runner.invoke(app, ["train", *settings])
        masked = runner.invoke(app, ["fit-masks", *settings])
        routed = runner.invoke(app, ["distill", *settings])
        named = runner.invoke(
            app, ["distill", "--method", "kd", "--teacher", "cm:note", "--out", "kd.pt", "--results", "kd", *settings]
        )
        plain_cm = runner.invoke(app, ["distill", "--method", "kd", "--teacher", "cm", *settings])
    finally:
        os.chdir(cwd)
    assert trained.exit_code == 0 and "CM clip" in trained.output and "CM note" in trained.output, trained.output
    for result in (masked, routed, named):
        assert result.exit_code == 0, result.output
    experts = routing_teachers(tmp_path / "results/main/distill")
    assert [e.split("@")[0] for e in experts] == ["mm", "mm", "cm:clip", "cm:clip", "cm:note", "cm:note"]
    assert plain_cm.exit_code == 2 and "name one: cm:clip, cm:note" in plain_cm.output, plain_cm.output


def test_inline_text_column_and_bmp_webp_images(tmp_path, tiny_text_model):
    from PIL import Image

    root = tmp_path / "f"
    rows = []
    for i in range(9):
        suffix = (".bmp", ".webp", ".png")[i % 3]
        (root / "img").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((9, 9), gray_level(i), dtype=np.uint8)).save(
            root / "img" / f"{i}{suffix}", lossless=True
        )
        rows.append({"image_file_name": f"img/{i}{suffix}", "caption_text": f"a {NAMES[i % 3]}", "label": NAMES[i % 3]})
    write_table(root / "metadata.jsonl", rows)
    features = prepared(root, tmp_path / "f.h5", "-S", f"prepare.text_model={tiny_text_model}")
    levels = np.round(features.read("image").reshape(9, -1).mean(1) * 255).astype(int)
    assert sorted(levels.tolist()) == [gray_level(i) for i in range(9)]
    assert features.modalities["caption"] == (12,)


def test_npy_modality_keeps_any_fixed_shape(tmp_path):
    write_table(tmp_path / "f" / "metadata.csv", image_array_rows(tmp_path / "f", 9, shape=(2, 3, 4, 5)))
    features = prepared(tmp_path / "f", tmp_path / "f.h5")
    assert features.modalities["sensor"] == (2, 3, 4, 5)
    assert sorted(rows_of_features(features).tolist()) == list(range(9))


def test_decoding_in_worker_processes_gives_the_same_file(tmp_path):
    write_table(tmp_path / "f" / "metadata.csv", image_audio_rows(tmp_path / "f", per_class=5))
    one = prepared(tmp_path / "f", tmp_path / "one.h5", "-S", "prepare.workers=1")
    pooled = prepared(tmp_path / "f", tmp_path / "pool.h5", "-S", "prepare.workers=2", "-S", "prepare.chunk_rows=4")
    for modality in ("image", "audio"):
        assert np.array_equal(one.read(modality), pooled.read(modality))
    assert np.array_equal(one.labels(), pooled.labels())


# ---- layouts of the Hugging Face folder builders --------------------------------------------------------------


@pytest.mark.parametrize("validation", ["val", "valid", "dev"])
def test_split_folders_by_any_hugging_face_split_name(tmp_path, validation):
    root = tmp_path / "f"
    offset = 0
    for folder, per_class in (("training", 4), (validation, 2), ("test", 2)):
        rows = image_audio_rows(root, per_class=per_class, offset=offset, folder=folder)
        write_table(root / folder / "metadata.csv", rows)
        offset += len(rows)
    features = prepared(root, tmp_path / "f.h5")
    row_of = np.round((features.read("image").reshape(24, -1).mean(1) * 255 - 4) / 8).astype(int)
    parts = {s: sorted(row_of[r].tolist()) for s, r in features.split_indices(2).items()}
    assert parts == {"train": list(range(12)), "val": list(range(12, 18)), "test": list(range(18, 24))}


def test_a_split_column_takes_the_same_names(tmp_path):
    rows = image_array_rows(tmp_path / "f", 18)
    for i, row in enumerate(rows):
        row["split"] = ("training", "dev", "eval", "train", "valid", "testing")[i // 3]  # 3 rows, one per class
    write_table(tmp_path / "f" / "metadata.jsonl", rows)
    features = prepared(tmp_path / "f", tmp_path / "f.h5")
    assert group_rows(features, 0) == {
        "train": {i for i in range(18) if i // 3 % 3 == 0},
        "val": {i for i in range(18) if i // 3 % 3 == 1},
        "test": {i for i in range(18) if i // 3 % 3 == 2},
    }


def test_prepare_modalities_reads_the_chosen_columns_and_lists_the_others(tmp_path):
    rows = image_audio_rows(tmp_path / "f", per_class=3)
    rows[4]["ocr_text"] = "a stray field of one row"
    write_table(tmp_path / "f" / "metadata.jsonl", rows)
    refused(tmp_path / "f", tmp_path / "f.h5", "line 1", "no ocr_text", "prepare.modalities")
    result = prepare(tmp_path / "f", tmp_path / "f.h5", "-S", "prepare.modalities=[audio, image]")
    assert result.exit_code == 0, result.output
    assert result.output.count("ignoring the columns ocr_text") == 1, result.output
    features = FeatureFile.open(tmp_path / "f.h5")
    assert list(features.modalities) == ["audio", "image"] and features.num_samples == 9
    refused(tmp_path / "f", tmp_path / "g.h5", "prepare.modalities names depth", "image, audio, ocr",
            sets=("-S", "prepare.modalities=[image, depth]"))  # fmt: skip
    refused(tmp_path / "f", tmp_path / "g.h5", "at least two modalities", sets=("-S", "prepare.modalities=[image]"))


class StandInParquetFile:
    """pyarrow.parquet.ParquetFile's interface (schema_arrow.names, iter_batches(batch_size) of record batches with
    to_pylist()) over rows kept as JSON: pyarrow is not a dependency of mst, and no Parquet writer is at hand to
    make a real file, so this checks what mst does with the rows pyarrow returns."""

    def __init__(self, path: str) -> None:
        self.rows = json.loads(Path(path).read_text())
        self.schema_arrow = type("Schema", (), {"names": list(self.rows[0])})()

    def iter_batches(self, batch_size: int):
        for start in range(0, len(self.rows), 4):  # small batches: rows are numbered across them
            part = self.rows[start : start + 4]
            yield type("Batch", (), {"to_pylist": lambda self, part=part: part})()


def test_metadata_parquet_is_read_through_pyarrow(tmp_path, monkeypatch):
    import sys
    import types

    parquet = types.ModuleType("pyarrow.parquet")
    parquet.ParquetFile = StandInParquetFile
    monkeypatch.setitem(sys.modules, "pyarrow", types.ModuleType("pyarrow"))
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", parquet)
    rows = image_audio_rows(tmp_path / "f", per_class=4)
    (tmp_path / "f" / "metadata.parquet").write_text(json.dumps(rows))
    features = prepared(tmp_path / "f", tmp_path / "f.h5")
    assert features.num_samples == 12 and set(features.modalities) == {"image", "audio"}
    (tmp_path / "f" / "sounds" / "009.wav").unlink()
    refused(tmp_path / "f", tmp_path / "g.h5", "metadata.parquet row 10 (sounds/009.wav): missing file")


def test_metadata_parquet_without_pyarrow_names_the_package(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as where pyarrow is not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    rows = image_audio_rows(tmp_path / "f", per_class=3)
    (tmp_path / "f" / "metadata.parquet").write_bytes(b"PAR1")
    refused(tmp_path / "f", tmp_path / "f.h5", "metadata.parquet", "pyarrow (pip install pyarrow)")
    write_table(tmp_path / "f" / "metadata.csv", rows)
    refused(tmp_path / "f", tmp_path / "f.h5", "metadata.csv and metadata.parquet; keep one")


def test_tiff_and_gif_images(tmp_path):
    from PIL import Image

    root = tmp_path / "f"
    rows = image_array_rows(root, 9)
    for i, row in enumerate(rows):
        suffix = (".tif", ".tiff", ".gif")[i % 3]
        (root / row["image_file_name"]).unlink()
        row["image_file_name"] = f"pics/{i:03d}{suffix}"
        Image.fromarray(np.full((9, 11), gray_level(i), dtype=np.uint8)).save(root / row["image_file_name"])
    write_table(root / "metadata.csv", rows)
    features = prepared(root, tmp_path / "f.h5")
    levels = np.round(features.read("image").reshape(9, -1).mean(1) * 255).astype(int)
    assert levels.tolist() == [gray_level(int(r)) for r in rows_of_features(features)]


def write_m4a(path: Path, samples: np.ndarray, rate: int) -> None:
    """AAC in MP4, encoded by PyAV (FFmpeg), as phones record voice memos."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024].astype(np.float32),
                                               format="fltp", layout="mono")  # fmt: skip
            frame.rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_opus_and_m4a_clips(tmp_path):
    import soundfile
    from folder_fixtures import tone

    root = tmp_path / "f"
    rows = image_audio_rows(root, per_class=3)
    for i, row in enumerate(rows):
        (root / row["audio_file_name"]).unlink()
        clip = tone(i % 3, seconds=0.3, rate=16000)
        if i % 2:
            row["audio_file_name"] = f"sounds/{i:03d}.opus"
            (root / "sounds").mkdir(exist_ok=True)
            soundfile.write(root / row["audio_file_name"], clip, 16000, format="OGG", subtype="OPUS")
        else:
            row["audio_file_name"] = f"sounds/{i:03d}.m4a"
            write_m4a(root / row["audio_file_name"], clip, 16000)
    write_table(root / "metadata.csv", rows)
    features = prepared(root, tmp_path / "f.h5", "-S", "prepare.sample_rate=16000")
    audio, labels = features.read("audio"), features.labels()
    band = audio[:, 0].mean(axis=2).argmax(axis=1)  # the tone rises with the label, so must the loudest band
    order = [NAMES.index(features.class_names[c]) for c in labels]
    for a in range(9):
        for b in range(9):
            if order[a] < order[b]:
                assert band[a] < band[b], (order, band.tolist())


def test_m4a_without_pyav_names_the_package(tmp_path, monkeypatch):
    import sys

    from mstcli.data import clips

    monkeypatch.setitem(sys.modules, "av", None)  # as where PyAV is not installed
    clips._pyav_missing.cache_clear()
    try:
        rows = image_audio_rows(tmp_path / "f", per_class=3)
        rows[2]["audio_file_name"] = "sounds/002.m4a"
        (tmp_path / "f" / "sounds" / "002.m4a").write_bytes(b"....ftypM4A ")
        write_table(tmp_path / "f" / "metadata.csv", rows)
        refused(tmp_path / "f", tmp_path / "f.h5", "metadata.csv line 4 (sounds/002.m4a)", "needs PyAV")
    finally:
        monkeypatch.undo()
        clips._pyav_missing.cache_clear()


# ---- files read as their owners see them -------------------------------------------------------------------------


def write_photo(path: Path, orientation: int) -> None:
    """A 16 x 8 JPEG whose stored left half is bright, with the EXIF orientation tag a phone writes: 6 says "turn
    the pixels 90 degrees clockwise to view", which puts that half on top."""
    from PIL import Image

    pixels = np.full((8, 16, 3), 20, dtype=np.uint8)
    pixels[:, :8] = 230
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95, exif=exif.tobytes())


def test_exif_orientation_turns_photos_upright(tmp_path):
    root = tmp_path / "f"
    rows = image_array_rows(root, 9)
    for i, row in enumerate(rows):
        (root / row["image_file_name"]).unlink()
        row["image_file_name"] = f"photos/{i}.jpg"
        write_photo(root / row["image_file_name"], 6 if i % 2 else 1)
    write_table(root / "metadata.csv", rows)
    features = prepared(root, tmp_path / "f.h5")
    images, ids = features.read("image")[:, 0], rows_of_features(features)
    for image, row in zip(images, ids, strict=True):
        top, bottom = image[:4].mean(), image[4:].mean()
        left, right = image[:, :4].mean(), image[:, 4:].mean()
        if row % 2:
            assert top - bottom > 0.5 and abs(left - right) < 0.05, (row, top, bottom)
        else:
            assert left - right > 0.5 and abs(top - bottom) < 0.05, (row, left, right)


def test_auto_image_mode_keeps_colour_when_the_first_image_is_gray(tmp_path):
    root = tmp_path / "f"
    rows = image_array_rows(root, 9)
    for i, row in enumerate(rows[1:], start=1):
        write_png(root / row["image_file_name"], gray_level(i), mode="RGB" if i != 5 else "L")
    write_table(root / "metadata.csv", rows)
    assert prepared(root, tmp_path / "f.h5").modalities["image"] == (3, 8, 8)
    for row in rows[1:]:
        write_png(root / row["image_file_name"], 9)
    assert prepared(root, tmp_path / "g.h5").modalities["image"] == (1, 8, 8), "all gray: gray"


@pytest.mark.parametrize(
    ("labels", "classes"),
    [(["01", "1", "2"], ["01", "1", "2"]), (["10", "2", "1"], ["1", "2", "10"]), (["b", "10", "9"], ["10", "9", "b"])],
)
def test_labels_stay_as_written(tmp_path, labels, classes):
    rows = image_array_rows(tmp_path / "f", 9)
    for i, row in enumerate(rows):
        row["label"] = labels[i % 3]
    write_table(tmp_path / "f" / "metadata.csv", rows)
    features = prepared(tmp_path / "f", tmp_path / "f.h5")
    assert features.class_names == classes
    ids = rows_of_features(features)
    assert [features.class_names[c] for c in features.labels()] == [labels[r % 3] for r in ids]


def test_unicode_normal_forms_and_backslashes_in_paths(tmp_path):
    import unicodedata

    root = tmp_path / "f"
    rows = image_array_rows(root, 9)
    composed = "pics/caf\u00e9"  # é as one code point (NFC), as typed in most editors
    for i, row in enumerate(rows):
        if i % 3 == 0:  # on disk decomposed (NFD), as macOS writes names; in the table composed
            name = f"{composed} {i}.png"
            os.replace(root / row["image_file_name"], root / unicodedata.normalize("NFD", name))
            row["image_file_name"] = name
        elif i % 3 == 1:
            row["image_file_name"] = row["image_file_name"].replace("/", "\\")  # a table written on Windows
    write_table(root / "metadata.csv", rows)
    features = prepared(root, tmp_path / "f.h5")
    levels = np.round(features.read("image").reshape(9, -1).mean(1) * 255).astype(int)
    assert levels.tolist() == [gray_level(int(r)) for r in rows_of_features(features)]
    rows[0]["image_file_name"] = "C:\\pairs\\pics\\000.png"
    write_table(root / "metadata.csv", rows)
    refused(root, tmp_path / "g.h5", "line 2", "absolute path")


def test_given_splits_that_leave_a_class_out_of_train(tmp_path):
    root = tmp_path / "f"
    train = [r for r in image_audio_rows(root, per_class=3, folder="train") if r["label"] != "cherry"]
    write_table(root / "train" / "metadata.csv", train)
    write_table(root / "test" / "metadata.csv", image_audio_rows(root, per_class=1, offset=9, folder="test"))
    refused(root, tmp_path / "f.h5", "class 'cherry' has no training rows (0 train, 0 validation, 1 test)")


# ---- memory: chunks bounded by bytes, clips read by their window -----------------------------------------------


def test_chunks_hold_at_most_chunk_mb_of_rows(tmp_path, monkeypatch):
    import mstcli.data.folder.decoding as decoding

    sizes = []
    real = decoding.decode_chunk

    def recorded(chunk):
        done = real(chunk)
        sizes.append((len(done.kept), sum(rows.nbytes for rows in done.rows.values())))
        return done

    monkeypatch.setattr(decoding, "decode_chunk", recorded)
    write_table(tmp_path / "f" / "metadata.csv", image_array_rows(tmp_path / "f", 30))
    sets = ["prepare.image_size=64", "prepare.image_mode=rgb", "prepare.chunk_mb=0.25", "prepare.workers=1"]
    features = prepared(tmp_path / "f", tmp_path / "f.h5", *[a for s in sets for a in ("-S", s)])
    row_bytes = 3 * 64 * 64 * 4 + 3 * 5 * 4  # a 64 x 64 RGB float32 row and its 3 x 5 array
    assert features.num_samples == 30 and sum(n for n, _ in sizes) == 30
    assert max(b for _, b in sizes) <= 0.25 * 2**20 and max(n for n, _ in sizes) == 0.25 * 2**20 // row_bytes
    sizes.clear()
    prepared(tmp_path / "f", tmp_path / "g.h5", "-S", "prepare.workers=1")  # 8 x 8 gray rows: one chunk of 30
    assert [n for n, _ in sizes] == [30]


def write_long_clips(root: Path, seconds: float, rate: int) -> list[dict]:
    """Image + audio rows whose clips are long recordings: the label's tone in the middle, noise around it."""
    import soundfile
    from folder_fixtures import tone

    rows = image_audio_rows(root, per_class=3)
    rng = np.random.default_rng(0)
    for i, row in enumerate(rows):
        clip = rng.normal(0, 0.01, int(seconds * rate))
        middle = tone(i % 3, seconds=0.5, rate=rate)
        start = (len(clip) - len(middle)) // 2
        clip[start : start + len(middle)] += middle
        row["audio_file_name"] = f"long/{i:03d}.wav"
        (root / "long").mkdir(parents=True, exist_ok=True)
        soundfile.write(root / row["audio_file_name"], clip, rate, subtype="FLOAT")
    write_table(root / "metadata.csv", rows)
    return rows


def test_a_long_clip_is_read_by_its_window_in_prepare_and_predict(tmp_path, monkeypatch):
    import soundfile

    from mstcli.data.folder.kinds import KindSettings, clip_window, log_mel_rows, read_clip
    from mstcli.data.readers import read_input
    from mstcli.data.sources import get_source

    rows = write_long_clips(tmp_path / "f", seconds=20.0, rate=44100)
    reads = []
    real = soundfile.read

    def recorded(file, *args, **kwargs):
        reads.append(kwargs.get("frames", -1))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(soundfile, "read", recorded)
    features = prepared(tmp_path / "f", tmp_path / "f.h5", "-S", "prepare.workers=1")
    window_frames = 0.25 * 44100  # prepare.clip_seconds at the file's rate
    assert len(reads) == 9 and all(0 < n < 1.2 * window_frames for n in reads), reads  # not 20 s each

    state = features.transform("audio")
    settings = KindSettings(sample_rate=8000, clip_seconds=0.25, spec_size=8)
    whole = np.stack([clip_window(*read_clip(tmp_path / "f" / r["audio_file_name"]), settings) for r in rows])
    ids = np.round((features.read("image").reshape(9, -1).mean(1) * 255 - 4) / 8).astype(int)
    stored = features.read("audio")
    assert np.allclose(stored, log_mel_rows(whole[ids], settings), atol=1e-4), "the window of the whole clip"

    reads.clear()
    step = get_source("folder").feature_step("audio", state)
    items = [read_input(tmp_path / "f" / rows[i]["audio_file_name"]) for i in ids]
    assert np.array_equal(step.apply(items, features.params.get("prepare", {}), state), stored), "predict = prepare"
    assert len(reads) == 9 and all(0 < n < 1.2 * window_frames for n in reads), reads


def test_predict_lists_a_clip_whose_samples_are_bad_and_featurizes_the_rest(tmp_path):
    import soundfile

    from mstcli.data.readers import read_input
    from mstcli.data.sources import get_source
    from mstcli.stages.predict import featurize

    write_table(tmp_path / "f" / "metadata.csv", image_audio_rows(tmp_path / "f", per_class=3))
    features = prepared(tmp_path / "f", tmp_path / "f.h5")
    bad = tmp_path / "nan.wav"
    soundfile.write(bad, np.full(800, np.nan), 8000, subtype="FLOAT")  # its header reads; its samples do not
    good = [tmp_path / "f" / "sounds" / f"00{i}.wav" for i in range(3)]
    state = features.transform("audio")

    class Context:
        def records(self):
            return features.params.get("prepare", {}), state

    rows = featurize(get_source("folder").feature_step("audio", state), [read_input(p) for p in [*good, bad]],
                     Context(), batch_size=8)  # fmt: skip
    assert [type(r).__name__ for r in rows] == ["ndarray"] * 3 + ["BadInput"] and "NaN" in str(rows[3])


# ---- array modalities: standardized by each split group's training rows -------------------------------------


def spread_array_rows(root: Path, count: int) -> list[dict]:
    """PNG + NPY rows whose 2 x 3 arrays are far from unit scale (around 40, spread 10, each position its own),
    with the row number kept in the last value, so rows and statistics can be checked by hand."""
    rows = image_array_rows(root, count, shape=(2, 3))
    rng = np.random.default_rng(1)
    for row in range(count):
        values = 40.0 + 10.0 * rng.standard_normal((2, 3)) + np.arange(6).reshape(2, 3)
        values[1, 2] = row
        np.save(root / "arrays" / f"{row:03d}.npy", values)
    write_table(root / "metadata.csv", rows)
    return rows


def test_arrays_are_standardized_by_each_groups_training_rows(tmp_path):
    from mstcli.engine.splits import load_splits

    spread_array_rows(tmp_path / "f", 30)
    features = prepared(tmp_path / "f", tmp_path / "f.h5")
    stored = features.read("sensor")
    assert sorted(stored[:, 1, 2].astype(int).tolist()) == list(range(30)), "rows are stored as given"
    state = features.transform("sensor")
    assert state["scaling"] == "standard" and state["scale_mean"].shape == (20, 2, 3)
    for group in (0, 5):
        train = features.split_indices(group)["train"]
        assert np.allclose(state["scale_mean"][group], stored[train].mean(axis=0), atol=1e-4)
        assert np.allclose(state["scale_std"][group], stored[train].std(axis=0), atol=1e-4)
        splits = load_splits(features, group, ["sensor"], torch.device("cpu"))
        seen = splits["train"].inputs["sensor"].numpy()
        assert np.allclose(seen.mean(axis=0), 0, atol=1e-5) and np.allclose(seen.std(axis=0), 1, atol=1e-4)
        val = splits["val"].inputs["sensor"].numpy()
        rows = features.split_indices(group)["val"]
        assert np.allclose(val, (stored[rows] - state["scale_mean"][group]) / state["scale_std"][group], atol=1e-5)
    assert not np.allclose(state["scale_mean"][0], state["scale_mean"][5]), "each group has its own training rows"
    plain = prepared(tmp_path / "f", tmp_path / "g.h5", "-S", "prepare.array_scaling=none")
    assert "scaling" not in plain.transform("sensor")
    raw = load_splits(plain, 0, ["sensor"], torch.device("cpu"))["train"].inputs["sensor"].numpy()
    assert np.allclose(raw, stored[plain.split_indices(0)["train"]])


@pytest.mark.parametrize(
    ("shape", "seen"), [((112, 112), (1, 28, 28)), ((64, 400), (1, 32, 200)), ((3, 32, 32), (3, 32, 32))]
)
def test_a_map_larger_than_32_a_side_is_average_pooled_before_the_first_convolution(shape, seen):
    from mstcli.models.folder import FolderFusionNet, FolderMapNet

    torch.manual_seed(0)
    x = torch.randn(2, *shape)
    factor = shape[-1] // seen[-1]
    expected = torch.nn.functional.avg_pool2d(x if len(shape) == 3 else x[:, None], factor)
    unimodal, fusion = FolderMapNet(shape, 10), FolderFusionNet((shape,), 10)
    for net, encoder in ((unimodal, unimodal.encoder), (fusion, fusion.encoders[0])):
        inputs: list[torch.Tensor] = []
        hook = encoder.conv1.register_forward_pre_hook(lambda _module, args, seen_by=inputs: seen_by.append(args[0]))
        net(x)
        hook.remove()
        assert tuple(inputs[0].shape[1:]) == seen
        assert torch.allclose(inputs[0], expected, atol=1e-6), "the stem averages, it does not pick or max-pool"


def test_predict_and_export_standardize_an_array_as_the_stages_read_it(tmp_path):
    from mstcli.data.readers import read_input
    from mstcli.data.row_scaling import GROUP_KEY
    from mstcli.data.sources import get_source
    from mstcli.engine.splits import load_splits

    spread_array_rows(tmp_path / "f", 30)
    features = prepared(tmp_path / "f", tmp_path / "f.h5")
    group = 3
    state = {**features.transform("sensor"), GROUP_KEY: group}
    step = get_source("folder").feature_step("sensor", state)
    assert step is not None and step.reads == "features"
    test = features.split_indices(group)["test"]
    items = [read_input(tmp_path / "f" / "arrays" / f"{int(r):03d}.npy") for r in test]
    rows = step.apply(items, {}, state)
    seen = load_splits(features, group, ["sensor"], torch.device("cpu"), names=("test",))["test"]
    assert np.allclose(rows, seen.inputs["sensor"].numpy(), atol=1e-6), "predict reads what the stages read"
    graph = step.graph({}, state)
    with torch.no_grad():
        inside = graph.module(torch.from_numpy(np.stack([i.data for i in items])))
    assert np.allclose(inside.numpy(), rows, atol=1e-5), "the exported graph standardizes as predict does"
    assert get_source("folder").feature_step("image", features.transform("image")).reads == "image"


# ---- bad input: exit 2, one line, nothing written --------------------------------------------------------------


def good_folder(root: Path, per_class: int = 3) -> list[dict]:
    rows = image_audio_rows(root, per_class=per_class)
    write_table(root / "metadata.csv", rows)
    return rows


def test_empty_folder(tmp_path):
    (tmp_path / "f").mkdir()
    refused(tmp_path / "f", tmp_path / "f.h5", "no metadata.csv, metadata.jsonl or metadata.parquet")


def test_renamed_file_name_column(tmp_path):
    rows = image_audio_rows(tmp_path / "f")
    for row in rows:
        row["file_name"] = row.pop("image_file_name")
    write_table(tmp_path / "f" / "metadata.csv", rows)
    refused(tmp_path / "f", tmp_path / "f.h5", "metadata.csv", "at least two modalities", "found 1", "image_file_name")


def test_one_modality_and_no_label_column(tmp_path):
    rows = [{"image_file_name": r["image_file_name"], "label": r["label"]} for r in image_audio_rows(tmp_path / "f")]
    write_table(tmp_path / "f" / "metadata.csv", rows)
    refused(tmp_path / "f", tmp_path / "f.h5", "found 1 (image_file_name)")
    write_table(tmp_path / "f" / "metadata.csv", [{k: v for k, v in r.items() if k != "label"} for r in rows])
    refused(tmp_path / "f", tmp_path / "f.h5", "no 'label' column")


def test_missing_file_names_the_row_the_file_and_the_count_of_others(tmp_path):
    good_folder(tmp_path / "f")
    for name in ("001", "004", "007"):
        (tmp_path / "f" / "sounds" / f"{name}.wav").unlink()
    refused(tmp_path / "f", tmp_path / "f.h5", "metadata.csv line 3", "sounds/001.wav", "missing file", "2 other rows")


def test_truncated_png(tmp_path):
    good_folder(tmp_path / "f")
    png = tmp_path / "f" / "pics" / "005.png"
    png.write_bytes(png.read_bytes()[:40])
    refused(tmp_path / "f", tmp_path / "f.h5", "line 7", "pics/005.png", "decode")


@pytest.mark.parametrize(
    "change, culprits",
    [
        (lambda rows: rows[2].update(split="holdout"), ("line 4", "unknown split 'holdout'")),
        (lambda rows: rows[4].update(label=" "), ("line 6", "empty label")),
        (
            lambda rows: rows[1].update(image_file_name="../outside.png"),
            ("line 3", "../outside.png", "leaves the folder"),
        ),
        (lambda rows: rows[1].update(image_file_name="/etc/passwd.png"), ("line 3", "absolute path")),
        (lambda rows: rows[3].update(audio_file_name="pics/000.png"), ("line 5", "kind image", "kind audio")),
        (lambda rows: rows[3].update(image_file_name=""), ("line 5", "no image_file_name")),
    ],
)
def test_bad_rows_are_named(tmp_path, change, culprits):
    rows = image_audio_rows(tmp_path / "f")
    for row in rows:
        row["split"] = ""
    change(rows)
    write_png(tmp_path / "outside.png", 3)
    write_table(tmp_path / "f" / "metadata.csv", rows)
    refused(tmp_path / "f", tmp_path / "f.h5", *culprits)


def test_class_too_small_to_split(tmp_path):
    rows = image_audio_rows(tmp_path / "f", per_class=4)
    rows[0]["label"] = "durian"  # one row of its own; apple keeps 3
    write_table(tmp_path / "f" / "metadata.csv", rows)
    refused(tmp_path / "f", tmp_path / "f.h5", "class 'durian' has 1 row", "at least 3 per class")


def test_mixed_npy_shapes(tmp_path):
    write_table(tmp_path / "f" / "metadata.csv", image_array_rows(tmp_path / "f", 9))
    np.save(tmp_path / "f" / "arrays" / "006.npy", np.zeros((3, 6)))
    refused(tmp_path / "f", tmp_path / "f.h5", "line 8", "arrays/006.npy", "3x6", "3x5")


def test_both_table_formats_at_once(tmp_path):
    rows = good_folder(tmp_path / "f")
    write_table(tmp_path / "f" / "metadata.jsonl", rows)
    refused(tmp_path / "f", tmp_path / "f.h5", "metadata.csv and metadata.jsonl; keep one")


def test_skip_leaves_bad_rows_out_and_lists_them(tmp_path):
    good_folder(tmp_path / "f", per_class=4)
    (tmp_path / "f" / "pics" / "002.png").write_bytes(b"not a png")
    (tmp_path / "f" / "sounds" / "009.wav").unlink()
    out = tmp_path / "f.h5"
    result = prepare(tmp_path / "f", out, "-S", "prepare.bad_rows=skip")
    assert result.exit_code == 0, result.output
    assert "left out 2 of 12 rows" in result.output
    features = FeatureFile.open(out)
    levels = np.round(features.read("image").reshape(10, -1).mean(1) * 255).astype(int)
    assert sorted(levels.tolist()) == [gray_level(r) for r in range(12) if r not in (2, 9)]
    with open(tmp_path / "f.bad_rows.csv") as f:
        listed = list(csv.DictReader(f))
    assert [(r["line"], r["file"]) for r in listed] == [("4", "pics/002.png"), ("11", "sounds/009.wav")]
    assert "decode" in listed[0]["reason"] and listed[1]["reason"] == "missing file"
    write_png(tmp_path / "f" / "pics" / "002.png", gray_level(2))
    write_wav(tmp_path / "f" / "sounds" / "009.wav", 0)
    assert prepare(tmp_path / "f", out, "-S", "prepare.bad_rows=skip").exit_code == 0
    assert not (tmp_path / "f.bad_rows.csv").exists(), "a stale list of bad rows is removed"
    assert FeatureFile.open(out).num_samples == 12


# ---- the pipeline, predict and export on a folder --------------------------------------------------------------


def learnable_folder(root: Path, per_class: int) -> None:
    """Images with a bright bar whose row is the class, paired with the class's tone: easy for both modalities."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(per_class * 3):
        label = i % 3
        pixels = rng.integers(0, 60, (12, 12)).astype(np.uint8)
        pixels[2 + 4 * label : 4 + 4 * label] = 250
        (root / "pics").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "pics" / f"{i}.png")
        write_wav(root / "sounds" / f"{i}.wav", label)
        rows.append({"image_file_name": f"pics/{i}.png", "audio_file_name": f"sounds/{i}.wav", "label": NAMES[label]})
    write_table(root / "metadata.csv", rows)


@pytest.mark.e2e
def test_pipeline_predict_and_export_on_a_folder(tmp_path, monkeypatch):
    learnable_folder(tmp_path / "pairs", per_class=10)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(json.dumps({
        "common": {"dataset": "folder", "student": "image", "threads": 1},
        "prepare": {"source": "pairs", "image_size": 12, "spec_size": 8, "clip_seconds": 0.25, "sample_rate": 8000},
        "train": {"epochs": 8, "batch_size": 6, "lr": 3e-3},
        "fit_masks": {"epochs": 1, "batch_size": 6, "hidden_dim_factor": 32, "heads": 1},
        "distill": {"epochs": 4, "batch_size": 6, "lr": 3e-3},
    }))  # fmt: skip
    for command in (["prepare"], ["train"], ["fit-masks"], ["distill"], ["eval", "--json"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, (command, result.output)
    metrics = json.loads(result.output)
    assert metrics["accuracy"] >= 0.8, metrics  # 6 test rows of 3 classes: chance is 1/3

    pics = sorted((tmp_path / "pairs" / "pics").glob("*.png"))[:6]
    result = runner.invoke(app, ["predict", "--json", *map(str, pics)])
    assert result.exit_code == 0, result.output
    predicted = json.loads(result.output)["predictions"]
    assert {p["class"] for p in predicted} <= set(NAMES)
    truth = [NAMES[int(p.stem) % 3] for p in pics]
    assert sum(p["class"] == t for p, t in zip(predicted, truth, strict=True)) >= 4

    result = runner.invoke(app, ["export"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "models/main/export/manifest.json").read_text())
    assert manifest["classes"] == sorted(NAMES)
    assert "resize to 12 x 12" in json.dumps(manifest)


@pytest.mark.e2e
def test_text_student_predicts_from_the_command_line(tmp_path, monkeypatch, tiny_text_model):
    root = tmp_path / "pairs"
    rows = []
    for i in range(30):
        label = i % 3
        write_png(root / "pics" / f"{i}.png", 40 + 80 * label)
        rows.append({"image_file_name": f"pics/{i}.png", "review_text": f"{NAMES[label]} {NAMES[label]}",
                     "label": NAMES[label]})  # fmt: skip
    write_table(root / "metadata.jsonl", rows)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(json.dumps({
        "common": {"dataset": "folder", "student": "review", "threads": 1},
        "prepare": {"source": "pairs", "image_size": 8, "text_model": str(tiny_text_model)},
        "train": {"epochs": 2, "batch_size": 6}, "fit_masks": {"epochs": 1, "batch_size": 6, "heads": 1},
        "distill": {"epochs": 1, "batch_size": 6},
    }))  # fmt: skip
    for command in (["prepare"], ["train"], ["fit-masks"], ["distill"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, (command, result.output)
    result = runner.invoke(app, ["predict", "--json", "--text", "cherry cherry", "--text", "apple apple"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [p["file"] for p in report["predictions"]] == ['"cherry cherry"', '"apple apple"']
    assert all(p["class"] in NAMES for p in report["predictions"])
    # the prediction is the student on the text's stored feature step: the same text as in training, the same row
    features = FeatureFile.open(tmp_path / "data/features/folder.h5")
    from mstcli.stages.predict import Student

    student = Student.load(tmp_path / "models/main/student.pt")
    row = features.read("review", np.flatnonzero(features.labels() == sorted(NAMES).index("cherry"))[:1])
    expected = student.probabilities(row, 1)[0]
    assert np.allclose(report["predictions"][0]["probabilities"], expected, atol=1e-5)


def test_predict_without_inputs_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["predict"])
    assert result.exit_code == 2 and "give files or folders" in result.output


def test_example_folder_writes_pngs_wavs_and_a_table(tmp_path):
    import soundfile
    from PIL import Image

    repo = Path(__file__).resolve().parents[1]
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        result = runner.invoke(app, ["example-folder", str(tmp_path / "ex"), "--pairs", "12", "--table", "jsonl",
                                     "--split-column"])  # fmt: skip
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "ex" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {r["split"] for r in rows} == {"train", "validation", "test"}
    image = np.asarray(Image.open(tmp_path / "ex" / rows[0]["image_file_name"]))
    assert image.shape == (28, 28) and image.max() > 100
    samples, rate = soundfile.read(tmp_path / "ex" / rows[0]["audio_file_name"])
    assert rate == 8000 and len(samples) == 8000 and np.abs(samples).max() > 0.01
    again = runner.invoke(app, ["example-folder", str(tmp_path / "ex")])
    assert again.exit_code == 2 and "not an empty folder" in again.output


@pytest.fixture(scope="module")
def tiny_text_model(tmp_path_factory) -> Path:
    """A tiny BERT folder (vocabulary of the test words, 12-d, one layer), loadable offline by transformers."""
    from transformers import BertConfig, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("text")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", *NAMES]) + "\n")
    folder = root / "tiny-bert"
    BertTokenizer(str(vocab)).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=9, hidden_size=12, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=32)  # fmt: skip
    BertModel(config).save_pretrained(folder)
    return folder


def test_feature_file_of_a_folder_records_each_modalitys_step(tmp_path):
    write_table(tmp_path / "f" / "metadata.csv", image_audio_rows(tmp_path / "f"))
    prepared(tmp_path / "f", tmp_path / "f.h5")
    with h5py.File(tmp_path / "f.h5") as f:
        assert f["transforms/image"].attrs["size"] == 8 and f["transforms/audio"].attrs["sample_rate"] == 8000
        assert list(f["splits/permutations"].attrs["bounds"]) == [6, 9]
