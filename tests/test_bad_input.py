"""Bad data reaches the user as one line, ``error: ...`` and exit code 2: no traceback, nothing half-written.

A tiny AV-Digits feature file is prepared once through the CLI; each test corrupts its own copy with h5py
(or writes a tiny file directly) and runs the real command on it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from cli_result import one_line_error
from conftest import write_raw_avdigits
from typer.testing import CliRunner

from mstcli.cli import app
from mstcli.data.splits import reference_permutations, split_permutation
from mstcli.data.store import write_features

runner = CliRunner()

FEATURES = Path("data/features/avdigits.h5")
NUM_SAMPLES = 40
TINY = {
    "common": {"threads": 1},
    "prepare": {"num_samples": NUM_SAMPLES, "spec_size": 8, "clip_seconds": 0.25},
    "train": {"epochs": 1, "batch_size": 16},
}


def train_row(group: int = 0) -> int:
    """A sample in the train split of ``group``, so stage 1 reads it."""
    return int(split_permutation(reference_permutations(NUM_SAMPLES)[group])["train"][3])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A folder with params.yaml and a prepared tiny feature file, copied by each test."""
    root = tmp_path_factory.mktemp("prepared")
    raw = write_raw_avdigits(root / "raw.h5", num_images=60, clips_per_digit=1)
    (root / "params.yaml").write_text(yaml.safe_dump(dict(TINY, prepare={**TINY["prepare"], "source": str(raw)})))
    result = runner.invoke(app, ["prepare", "--params", str(root / "params.yaml"), "--out", str(root / FEATURES)])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def inside(prepared, tmp_path, monkeypatch) -> Path:
    """A fresh working folder with its own copy of the prepared features (free to corrupt)."""
    shutil.copy(prepared / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / FEATURES).parent.mkdir(parents=True)
    shutil.copy(prepared / FEATURES, tmp_path / FEATURES)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def nothing_written(root: Path) -> None:
    """A refused stage leaves no checkpoint and no results behind."""
    for folder in ("models", "results"):
        written = [p for p in (root / folder).rglob("*") if p.is_file()] if (root / folder).exists() else []
        assert not written, written


# 1. a feature file without one of its parts -------------------------------------------------------------


@pytest.mark.parametrize("key", ["splits", "splits/permutations", "labels", "class_names", "modalities/audio"])
def test_missing_part_is_named(inside, key):
    with h5py.File(FEATURES, "r+") as f:
        del f[key]
    line = one_line_error(runner.invoke(app, ["train"]), str(FEATURES), f"missing {key}")
    nothing_written(inside)
    one_line_error(runner.invoke(app, ["info", str(FEATURES)]), str(FEATURES), f"missing {key}")
    assert "Unable" not in line  # h5py's own wording stays out of the message


def test_missing_attribute_is_named(inside):
    with h5py.File(FEATURES, "r+") as f:
        del f.attrs["modalities"]
    one_line_error(runner.invoke(app, ["info", str(FEATURES)]), str(FEATURES), "missing attribute modalities")


# 2. prepare --out that cannot be a file -----------------------------------------------------------------


@pytest.fixture
def no_source_reading(monkeypatch) -> None:
    """Make reading the AV-Digits source fail loudly: a bad --out must be refused before any work."""
    import mstcli.data.sources.avdigits as avdigits

    def no_work(*args, **kwargs):
        raise AssertionError("prepare read its source before checking --out")

    monkeypatch.setattr(avdigits, "read_raw", no_work)


def test_prepare_refuses_a_folder_as_out_before_any_work(inside, no_source_reading):
    line = one_line_error(runner.invoke(app, ["prepare", "--out", "data"]), "data", "folder")
    assert "data/avdigits.h5" in line  # says what to give instead
    assert sorted(p.name for p in Path("data").iterdir()) == ["features"]


def test_prepare_refuses_an_out_whose_parent_cannot_be_made(inside, no_source_reading):
    Path("blocker").write_text("a file, not a folder")
    out = Path("blocker/sub/f.h5")
    one_line_error(runner.invoke(app, ["prepare", "--out", str(out)]), str(out), "blocker")
    assert Path("blocker").read_text() == "a file, not a folder"


# 3. NaN or Inf in a feature array -----------------------------------------------------------------------


def test_nan_in_features_is_refused_when_splits_are_loaded(inside):
    row = train_row()
    with h5py.File(FEATURES, "r+") as f:
        image = f["modalities/image"][row]
        image[0, 5, 5] = np.nan
        f["modalities/image"][row] = image
    one_line_error(runner.invoke(app, ["train"]), str(FEATURES), "'image'", "NaN or Inf", f"row {row}")
    nothing_written(inside)


def test_inf_in_features_is_refused_when_read_lazily(inside):
    row = train_row()
    with h5py.File(FEATURES, "r+") as f:
        audio = f["modalities/audio"][row]
        audio[0, 1, 2] = -np.inf
        f["modalities/audio"][row] = audio
    result = runner.invoke(app, ["train", "-S", "common.memory_mb=0"])  # 0 MiB: every split is read lazily
    one_line_error(result, str(FEATURES), "'audio'", "NaN or Inf", f"row {row}")
    nothing_written(inside)


def test_prepare_never_writes_non_finite_features(inside, monkeypatch):
    import mstcli.data.sources.avdigits as avdigits

    real_log_mel = avdigits.log_mel

    def log_mel_with_nan(*args, **kwargs):
        spectrograms = real_log_mel(*args, **kwargs)
        spectrograms[7, 0, 0, 0] = np.nan
        return spectrograms

    monkeypatch.setattr(avdigits, "log_mel", log_mel_with_nan)
    out = Path("out/f.h5")
    one_line_error(runner.invoke(app, ["prepare", "--out", str(out)]), str(out), "'audio'", "row 7")
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temporary file left either


# 4. labels outside the class names ----------------------------------------------------------------------


@pytest.mark.parametrize("label", [10, -1])
def test_label_out_of_range_is_refused(inside, label):
    with h5py.File(FEATURES, "r+") as f:
        labels = f["labels"][:]
        labels[4] = label
        f["labels"][:] = labels
    line = one_line_error(runner.invoke(app, ["info", str(FEATURES)]), str(FEATURES), f"label {label}", "row 4")
    assert "0..9" in line
    one_line_error(runner.invoke(app, ["train"]), str(FEATURES), f"label {label}")
    nothing_written(inside)


# 5. modalities and labels that disagree in rows ---------------------------------------------------------


def test_modality_rows_must_match_labels(inside):
    with h5py.File(FEATURES, "r+") as f:
        audio = f["modalities/audio"][:]
        del f["modalities/audio"]
        f["modalities/audio"] = audio[:-3]
    one_line_error(
        runner.invoke(app, ["info", str(FEATURES)]),
        str(FEATURES),
        "'audio'",
        f"{NUM_SAMPLES - 3} rows",
        f"{NUM_SAMPLES} labels",
    )
    one_line_error(runner.invoke(app, ["train"]), str(FEATURES), "'audio'")
    nothing_written(inside)


def test_split_permutations_must_cover_every_sample(inside):
    with h5py.File(FEATURES, "r+") as f:
        del f["splits/permutations"]
        f["splits/permutations"] = reference_permutations(NUM_SAMPLES + 5)
    one_line_error(runner.invoke(app, ["info", str(FEATURES)]), str(FEATURES), "splits/permutations")


def test_split_group_must_be_a_permutation(inside):
    with h5py.File(FEATURES, "r+") as f:
        permutation = f["splits/permutations"][0]
        permutation[0] = permutation[1]  # one sample twice (in train and maybe test), another never
        f["splits/permutations"][0] = permutation
    one_line_error(runner.invoke(app, ["info", str(FEATURES)]), str(FEATURES), "row 0", "not a permutation")
    one_line_error(runner.invoke(app, ["train"]), str(FEATURES), "not a permutation")
    nothing_written(inside)


# 6. a data set too small for every split ----------------------------------------------------------------


def test_empty_split_is_refused(inside):
    rng = np.random.default_rng(0)
    write_features(
        FEATURES,
        dataset="avdigits",
        arrays={"image": rng.random((2, 1, 28, 28), np.float32), "audio": rng.random((2, 1, 8, 8), np.float32)},
        labels=np.array([3, 5]),
        class_names=[str(d) for d in range(10)],
        params={},
    )
    for args in (["info", str(FEATURES)], ["train"]):
        line = one_line_error(runner.invoke(app, args), "val", "group 0", "2 samples", "at least 3")
        assert "empty" in line
    nothing_written(inside)
