"""Checkpoints are read without running code, and one made from other inputs is refused in one line."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import yaml
from cli_result import one_line_error as one_line_error_of
from conftest import write_raw_avdigits
from typer.testing import CliRunner

from mstcli.cli import app
from mstcli.engine.checkpoints import (
    SCHEMA_VERSION,
    MaskRecord,
    MasksCheckpoint,
    StudentCheckpoint,
    read_checkpoint_file,
)
from mstcli.errors import UserError

runner = CliRunner()

PARAMS = {
    "common": {"threads": 1},
    "prepare": {"num_samples": 200, "spec_size": 16},
    "train": {"epochs": 1, "batch_size": 32},
    "fit_masks": {"epochs": 1, "batch_size": 32, "hidden_dim_factor": 32, "heads": 1},
    "distill": {"epochs": 1, "batch_size": 32},
}


class Payload:
    """A pickle that would create a file when unpickled (what a crafted .pt can do to torch.load without
    weights_only)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    raw = write_raw_avdigits(root / "raw.h5", num_images=300)
    (root / "params.yaml").write_text(yaml.safe_dump(dict(PARAMS, prepare={**PARAMS["prepare"], "source": str(raw)})))
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    for args in (["prepare"], ["train"], ["distill", "--method", "none"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    mp.undo()
    return root


@pytest.fixture
def inside(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    return workdir


def one_line_error(args: list[str]) -> str:
    return one_line_error_of(runner.invoke(app, args))


def test_a_crafted_checkpoint_runs_no_code(inside, tmp_path):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pt"
    with open(crafted, "wb") as f:
        pickle.dump({"kind": "student", "payload": Payload(marker)}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError):  # the unsafe load would run it: prove the file is really harmful
        torch.load(crafted, weights_only=True)
    message = one_line_error(["eval", "--student", str(crafted), "--results", str(tmp_path / "r")])
    assert "crafted.pt" in message and not marker.exists()
    assert not (tmp_path / "r").exists()


def test_a_checkpoint_of_another_kind_or_schema_is_refused(inside, tmp_path):
    assert "not a student checkpoint" in one_line_error(["eval", "--student", "models/main/stage1.pt"])
    data = read_checkpoint_file(inside / "models/main/student.pt", "student checkpoint")
    old = tmp_path / "old.pt"
    torch.save({**data, "schema": SCHEMA_VERSION - 1}, old)
    assert f"schema {SCHEMA_VERSION - 1}" in one_line_error(["eval", "--student", str(old)])
    torch.save({k: v for k, v in data.items() if k != "state"}, old)
    assert "missing state" in one_line_error(["eval", "--student", str(old)])


def test_a_student_from_other_data_or_another_split_group_is_refused(inside, tmp_path):
    checkpoint = StudentCheckpoint.load(inside / "models/main/student.pt")
    other = tmp_path / "other.pt"
    StudentCheckpoint(**{**checkpoint.__dict__, "inputs": {**checkpoint.inputs, "dataset": "avmnist"}}).save(other)
    assert "data set 'avmnist'" in one_line_error(["eval", "--student", str(other)])
    shapes = {**checkpoint.spec["shapes"], "image": (1, 14, 14)}
    StudentCheckpoint(**{**checkpoint.__dict__, "spec": {**checkpoint.spec, "shapes": shapes}}).save(other)
    assert "shapes" in one_line_error(["eval", "--student", str(other)])
    # the same data set prepared with other settings: another version of the feature file
    features = inside / "data/features/avdigits.h5"
    saved = features.read_bytes()
    try:
        result = runner.invoke(app, ["prepare", "-S", "prepare.num_samples=180"])
        assert result.exit_code == 0, result.output
        assert "another version" in one_line_error(["eval"])
        assert "another version" in one_line_error(["distill", "--method", "none"])
    finally:
        features.write_bytes(saved)


def test_a_stage_input_from_another_split_group_is_refused(inside):
    message = one_line_error(["distill", "--method", "kd", "-S", "common.seed=4", "-S", "common.run=main"])
    assert "split group 0" in message and "common.seed=4" in message


def _mask_record_dict(teacher: str) -> dict:
    """One MaskNet record as masks.pt has always stored it: a plain dict."""
    return {
        "teacher": teacher,
        "layer": "fc1",
        "shape": (8,),
        "dim": 8,
        "heads": 1,
        "hidden_dim_factor": 2,
        "spatial": False,
        "state": {"weight": torch.arange(6.0).reshape(2, 3)},
        "parameters": 6,
    }


def _masks_file(path: Path, records: list[dict]) -> Path:
    """A masks.pt written the way an mst before typed records wrote it (no MaskRecord in the file)."""
    data = {
        "kind": "masks",
        "schema": SCHEMA_VERSION,
        "spec": {},
        "inputs": {"dataset": "avdigits", "features": "-", "split_group": 0},
        "settings": {},
        "provenance": {},
        "stage1": "abc",
        "masks": records,
        "best_epoch": 1,
        "val_score": 0.5,
    }
    torch.save(data, path)
    return path


def test_masks_checkpoint_records_are_typed_and_the_file_format_is_unchanged(tmp_path):
    written = [_mask_record_dict("mm"), _mask_record_dict("cm")]
    old = _masks_file(tmp_path / "old.pt", written)
    loaded = MasksCheckpoint.load(old)
    assert all(isinstance(r, MaskRecord) for r in loaded.masks)
    assert [r.teacher for r in loaded.masks] == ["mm", "cm"] and loaded.masks[0].shape == (8,)
    loaded.save(tmp_path / "again.pt")  # what a typed checkpoint writes is what the old one held
    again = torch.load(tmp_path / "again.pt", weights_only=True)
    original = torch.load(old, weights_only=True)
    assert again.keys() == original.keys()
    for saved, before in zip(again["masks"], original["masks"], strict=True):
        assert list(saved) == list(before) and saved["shape"] == before["shape"]
        assert torch.equal(saved["state"]["weight"], before["state"]["weight"])
    assert loaded.fingerprint() == MasksCheckpoint.load(tmp_path / "again.pt").fingerprint()


def test_a_masks_checkpoint_with_a_broken_record_is_refused_in_one_line(tmp_path):
    broken = {k: v for k, v in _mask_record_dict("mm").items() if k != "heads"}
    with pytest.raises(UserError, match=r"malformed MaskNet checkpoint .*without heads"):
        MasksCheckpoint.load(_masks_file(tmp_path / "broken.pt", [broken]))
