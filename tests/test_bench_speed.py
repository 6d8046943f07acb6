"""`mst bench speed --json`: one JSON object with every method's epoch time beside the student alone's.

The figures themselves are measurements (a benchmark, not a test); what is tested is the object's contract: every
registered method is there, the ratio is its time over the student alone's, and the teacher kind comes from the
registry (so a method that trains its teacher cannot be reported as frozen)."""

from __future__ import annotations

import json

import pytest
from conftest import invoke, tiny_workdir
from typer.testing import CliRunner

from mstcli.cli import app
from mstcli.methods.registry import ENTRIES

TINY = {
    "common": {"threads": 1},
    "prepare": {"num_samples": 60, "spec_size": 8},
    "train": {"batch_size": 16},
    "fit_masks": {"batch_size": 16, "hidden_dim_factor": 32, "heads": 1},
    "distill": {"batch_size": 16},
}


@pytest.mark.e2e
def test_speed_json_reports_every_method_against_the_student_alone(tmp_path, monkeypatch):
    tiny_workdir(tmp_path, TINY, num_images=80)
    monkeypatch.chdir(tmp_path)
    invoke("prepare")
    out = tmp_path / "speed.json"
    result = CliRunner().invoke(app, ["bench", "speed", "--json", "--rounds", "2", "--out", str(out),
                                      "-S", "distill.teacher=cm"])  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures == json.loads(out.read_text())
    methods = figures["methods"]
    assert list(methods) == [e.name for e in ENTRIES]
    alone = figures["student_epoch_s"]
    assert alone > 0 and methods["none"]["over_student"] == 1.0
    for name, m in methods.items():
        assert m["over_student"] == pytest.approx(m["seconds_per_epoch"] / alone, rel=1e-2, abs=2e-3), name
    kinds = {e.name: e.teacher_training for e in ENTRIES}
    assert {n: m["teacher"] for n, m in methods.items()} == kinds
    assert kinds["dml"] == "trained" and kinds["kd"] == "frozen"
    frozen = [m["over_student"] for n, m in methods.items() if m["teacher"] == "frozen" and n != "mst"]
    assert figures["frozen_teacher_max_over_student"] == max(frozen)
    assert figures["teacher"] == "cm" and figures["s1_epoch_s"] > 0 and figures["s2_epoch_s"] > 0
    assert figures["peak_rss_mb"] > 50 and figures["models"] is None  # mst's own nets: no models record


@pytest.mark.e2e
def test_speed_of_chosen_methods_and_other_nets(tmp_path, monkeypatch):
    tiny_workdir(tmp_path, TINY, num_images=80)
    monkeypatch.chdir(tmp_path)
    invoke("prepare")
    result = CliRunner().invoke(app, ["bench", "speed", "--json", "--rounds", "2", "--method", "mst",
                                      "--method", "kd", "-S", "models.mask_layers.mm=[fc1]"])  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(figures["methods"]) == ["none", "kd", "mst"]  # the student alone always, in the registry's order
    assert figures["s3_over_student"] == figures["methods"]["mst"]["over_student"]
    assert figures["models"]["mask_layers"] == {"mm": ["fc1"]}
    unknown = CliRunner().invoke(app, ["bench", "speed", "--method", "kdd"])
    assert unknown.exit_code == 2 and "--method: unknown kdd" in unknown.output


def test_speed_without_a_feature_file_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["bench", "speed"])
    assert result.exit_code == 2 and "run `mst prepare` first" in result.output
