"""The teacher of a comparison run is checked against chance before S3, said on screen and kept in the result."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from conftest import invoke

from mstcli.engine.checkpoints import Stage1Checkpoint, StudentCheckpoint
from mstcli.engine.splits import Split
from mstcli.methods.teacher_check import TeacherCheck, check_teacher


def _val(labels: list[int]) -> Split:
    y = torch.tensor(labels)
    return Split({"image": torch.nn.functional.one_hot(y, 10).float()}, y)


def test_threshold_is_three_standard_errors_above_the_largest_class_share():
    check = TeacherCheck("cm", val_accuracy=0.13, constant_guess=0.1, rows=600)
    assert check.threshold == pytest.approx(0.1 + 3 * math.sqrt(0.1 * 0.9 / 600))
    assert check.at_chance  # 13.0 % < 13.67 %
    assert not TeacherCheck("cm", 0.14, 0.1, 600).at_chance
    assert TeacherCheck("cm", 0.14, 0.1, 60).at_chance  # fewer rows, wider margin
    record = check.record()
    assert record["at_chance"] is True and record["teacher"] == "cm" and record["rows"] == 600


def test_constant_guess_is_the_largest_class_share_and_accuracy_is_counted_over_every_batch():
    labels = [3] * 1500 + [1] * 600 + [7] * 400  # 2,500 rows: three batches of the check
    val = _val(labels)
    constant = check_teacher(
        "mm", lambda x: torch.zeros(len(x["image"]), 10).index_fill_(1, torch.tensor([3]), 1.0), val
    )
    assert constant.constant_guess == pytest.approx(0.6)
    assert constant.val_accuracy == pytest.approx(0.6)  # always class 3: exactly the constant guess
    assert constant.at_chance
    perfect = check_teacher("mm", lambda x: x["image"], val)
    assert perfect.val_accuracy == 1.0 and not perfect.at_chance
    # right on the last batch only: counts must come from every batch, not the first
    last = check_teacher("mm", lambda x: x["image"] if len(x["image"]) < 1024 else -x["image"], val)
    assert last.val_accuracy == pytest.approx((2500 - 2048) / 2500)


def _chance_run(root, source: str, run: str) -> None:
    """A copy of run ``source`` whose CM net answers the same for every input (all its weights zero)."""
    (root / "models" / run).mkdir(parents=True)
    checkpoint = Stage1Checkpoint.load(root / "models" / source / "stage1.pt")
    checkpoint.state = {
        k: (torch.zeros_like(v) if k.startswith("cms.") and v.is_floating_point() else v)
        for k, v in checkpoint.state.items()
    }
    checkpoint.save(root / "models" / run / "stage1.pt")


def test_distill_warns_about_a_teacher_at_chance_and_records_the_check(tiny_runs, monkeypatch):
    monkeypatch.chdir(tiny_runs)
    _chance_run(tiny_runs, "img", "chance")
    try:
        common = ["-S", "common.student=image", "-S", "distill.epochs=1"]
        at_chance = invoke(
            "distill", "--method", "kd", "--teacher", "cm", "-S", "common.run=chance", *common,
            "--out", "models/chance/kd.pt", "--results", "results/chance/kd",
        )
        assert "warning: teacher cm is at chance on validation" in at_chance.output
        record = StudentCheckpoint.load(tiny_runs / "models/chance/kd.pt").provenance["method"]["teacher_check"]
        assert record["at_chance"] is True and record["teacher"] == "cm"
        assert record["val_accuracy"] <= record["constant_guess"] + 1e-9  # one answer for all: at most the top share

        learned = invoke(
            "distill", "--method", "kd", "--teacher", "mm", "-S", "common.run=chance", *common,
            "--out", "models/chance/kd-mm.pt", "--results", "results/chance/kd-mm",
        )
        assert "teacher mm is at chance" not in learned.output  # (its one-epoch student may be: another warning)
        invoke("eval", "--student", "models/chance/kd-mm.pt", "--results", "results/chance/kd-mm",
               "-S", "common.run=chance", "-S", "common.student=image")
        metrics = json.loads((tiny_runs / "results/chance/kd-mm/metrics.json").read_text())
        check = metrics["provenance"]["method"]["teacher_check"]
        assert check["teacher"] == "mm" and check["at_chance"] is False and check["val_accuracy"] > check["threshold"]

        alone = invoke("distill", "--method", "none", "-S", "common.run=chance", *common,
                       "--out", "models/chance/none.pt", "--results", "results/chance/none")
        assert "warning: teacher" not in alone.output  # the student alone has no teacher to check
        assert StudentCheckpoint.load(tiny_runs / "models/chance/none.pt").provenance["method"]["teacher_check"] is None
    finally:
        shutil.rmtree(tiny_runs / "models" / "chance", ignore_errors=True)
        shutil.rmtree(tiny_runs / "results" / "chance", ignore_errors=True)


def test_a_student_left_at_chance_is_warned_recorded_and_listed_by_compare(tiny_runs, monkeypatch):
    """lr 0: the student S3 keeps is its random start, at chance; one that learned is not warned."""
    monkeypatch.chdir(tiny_runs)
    common = ["-S", "common.student=image", "-S", "distill.epochs=2", "-S", "common.run=img"]
    try:
        stuck = invoke("distill", "--method", "none", "--same-passes", "-S", "distill.lr=0", *common,
                       "--out", "models/stuck/none.pt", "--results", "results/stuck/none")  # fmt: skip
        lines = [line for line in stuck.output.splitlines() if "student is at chance" in line]
        assert len(lines) == 1 and "distill.baseline_settings=paper" in lines[0], stuck.output
        record = StudentCheckpoint.load(tiny_runs / "models/stuck/none.pt").provenance["method"]["student_check"]
        assert record["at_chance"] is True and record["val_accuracy"] < record["threshold"]
        invoke("eval", "--student", "models/stuck/none.pt", "--results", "results/stuck/none", *common)
        learned = invoke("distill", "--method", "none", "--same-passes", "-S", "distill.lr=0.01", *common,
                         "--out", "models/stuck/learned.pt", "--results", "results/stuck/learned")  # fmt: skip
        assert "student is at chance" not in learned.output
        check = StudentCheckpoint.load(tiny_runs / "models/stuck/learned.pt").provenance["method"]["student_check"]
        assert check["at_chance"] is False and check["val_accuracy"] > check["threshold"]
        from mstcli.stages.compare import compare

        _, _, notes = compare(tiny_runs / "results/stuck", tiny_runs / "results/stuck")
        assert any("the student ended at chance on validation" in note for note in notes), notes
        assert "At chance (`mst distill` warned):" in (tiny_runs / "results/stuck/compare.md").read_text()
    finally:
        shutil.rmtree(tiny_runs / "models" / "stuck", ignore_errors=True)
        shutil.rmtree(tiny_runs / "results" / "stuck", ignore_errors=True)
