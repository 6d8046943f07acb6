"""A stage killed in the middle of an epoch and run again continues after its last finished epoch and ends with
exactly the result of an uninterrupted run (CPU); the NaN guard stops a stage and keeps the last good state."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_result import error_lines
from conftest import invoke, tensors, tiny_workdir
from typer.testing import CliRunner

from mstcli.cli import app
from mstcli.engine.checkpoints import ResumeState, read_checkpoint_file
from mstcli.engine.logbook import read_curves

runner = CliRunner()

EPOCHS = {"train": 4, "fit_masks": 3, "distill": 4}
PARAMS = {
    "common": {"threads": 1},
    "prepare": {"num_samples": 240, "spec_size": 16, "image_energy": 0.9, "snr_db": [10.0, 20.0]},
    "train": {"epochs": EPOCHS["train"], "batch_size": 32, "lr": 0.003},
    "fit_masks": {"epochs": EPOCHS["fit_masks"], "batch_size": 32, "lr": 0.003, "hidden_dim_factor": 16},
    "distill": {"epochs": EPOCHS["distill"], "batch_size": 32, "lr": 0.003},
}
# the stage, its command, its output (relative to models/<run>/), its curves (relative to results/<run>/)
STAGES = [
    ("S1", "train", "stage1.pt", "train"),
    ("S2", "fit-masks", "masks.pt", "fit_masks"),
    ("S3 mst", "distill", "student.pt", "distill"),
]
BATCHES_PER_EPOCH = 5  # 144 train rows in batches of 32

# runs the CLI with every training batch slowed down, so that a kill lands in the middle of an epoch
SLOW_CLI = """
import sys, time
import mstcli.engine.loop as loop
delay = float(sys.argv[1])
plain_batches = loop.batches
def slow_batches(*args):
    for item in plain_batches(*args):
        time.sleep(delay)
        yield item
loop.batches = slow_batches
from mstcli.cli import main
sys.argv = ["mst", *sys.argv[2:]]
main()
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with params.yaml and a tiny raw source, shared by the tests of this module."""
    return tiny_workdir(tmp_path_factory.mktemp("run"), PARAMS)


@pytest.fixture
def inside(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    if not (workdir / "data/features/avdigits.h5").exists():
        invoke("prepare")
    return workdir


def states_equal(a: Path, b: Path) -> bool:
    """Every tensor of two checkpoints equal (the weights; settings and fingerprints follow from them)."""

    left, right = dict(tensors(read_checkpoint_file(a, "x"))), dict(tensors(read_checkpoint_file(b, "x")))
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def curves_without_times(path: Path) -> list[dict]:
    """A stage's logged rows (its dvclive folder) without the epoch times."""
    return [{k: v for k, v in row.items() if k != "epoch_s"} for row in read_curves(path)]


def _differences(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in set(a) | set(b):
            yield from _differences(a.get(key), b.get(key), f"{prefix}.{key}")
    elif a != b:
        yield f"{prefix}: {a!r} != {b!r}"


def without_run_name(metrics: dict) -> dict:
    """metrics.json without the run name in its provenance (two runs of the same settings differ only there)."""
    settings = metrics["provenance"]["settings"]
    common = {k: v for k, v in settings["common"].items() if k != "run"}
    return {**metrics, "provenance": {**metrics["provenance"], "settings": {**settings, "common": common}}}


def kill_mid_epoch(root: Path, command: str, run: str, resume_file: Path, output: Path) -> int:
    """Start ``mst <command>`` slowed down, SIGKILL it during the epoch after the first finished one; returns the
    last finished epoch the resume state holds."""
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, "0.25", command, "-S", f"common.run={run}"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not resume_file.exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no epoch finished within 2 minutes"
        time.sleep(0.05)
    time.sleep(0.25 * BATCHES_PER_EPOCH / 2)  # about half of the next epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not output.exists(), "killed too late: the stage had finished"
    return ResumeState.load(resume_file).epoch


@pytest.mark.e2e
def test_killed_stages_resume_to_the_uninterrupted_result(inside):
    for _, command, _, _ in STAGES:
        invoke(command, "-S", "common.run=whole")
    invoke("eval", "-S", "common.run=whole")

    for stage, command, output, curves in STAGES:
        resume_file = inside / "models/killed/.resume" / output
        last = kill_mid_epoch(inside, command, "killed", resume_file, inside / "models/killed" / output)
        epochs = EPOCHS[{"train": "train", "fit-masks": "fit_masks", "distill": "distill"}[command]]
        assert 0 <= last < epochs - 1, f"{stage}: the kill should fall inside the run"
        rerun = subprocess.run(
            [sys.executable, "-m", "mstcli", command, "-S", "common.run=killed"],
            cwd=inside,
            capture_output=True,
            text=True,
        )
        assert rerun.returncode == 0, rerun.stderr
        assert f"resuming after epoch {last + 1}/{epochs}" in rerun.stderr, rerun.stderr
        epoch_lines = [line for line in rerun.stderr.splitlines() if line.startswith(f"{stage} epoch")]
        assert len(epoch_lines) == epochs - last - 1, f"{stage}: only the missing epochs run again"
        assert not resume_file.exists(), "the resume state is removed once the outputs are written"
        assert states_equal(inside / "models/whole" / output, inside / "models/killed" / output), stage
        assert curves_without_times(inside / "results/whole" / curves) == curves_without_times(
            inside / "results/killed" / curves
        ), stage
    invoke("eval", "-S", "common.run=killed")
    whole = json.loads((inside / "results/whole/metrics.json").read_text())
    killed = json.loads((inside / "results/killed/metrics.json").read_text())
    a, b = without_run_name(whole), without_run_name(killed)
    differing = sorted(_differences(a, b))
    assert a == b, differing


def poisoned_after_first_epoch(mutual_loss):
    """S1's loss with its 'align' term (and so the total) made NaN from the second epoch on."""
    calls = {"n": 0}

    def poisoned(logits, labels, temperature, *task_losses):  # task_losses: the run's CE and KD (methods/tasks.py)
        total, terms = mutual_loss(logits, labels, temperature, *task_losses)
        calls["n"] += 1
        if calls["n"] > BATCHES_PER_EPOCH:
            nan = torch.tensor(float("nan"))
            terms = {**terms, "align": terms["align"] + nan}
            total = total + nan
        return total, terms

    return poisoned


def test_nan_loss_stops_the_stage_and_keeps_the_last_good_epoch(inside, monkeypatch):
    import mstcli.stages.train as train_stage

    real = train_stage.mutual_loss
    poisoned = poisoned_after_first_epoch(real)
    monkeypatch.setattr(train_stage, "mutual_loss", poisoned)
    result = runner.invoke(app, ["train", "-S", "common.run=nan"])
    errors = error_lines(result)
    assert len(errors) == 1, result.output
    assert "S1" in errors[0] and "'align'" in errors[0] and "epoch 2" in errors[0], errors[0]
    assert not (inside / "models/nan/stage1.pt").exists() and not (inside / "results/nan/train/plots").exists()
    resume_file = inside / "models/nan/.resume/stage1.pt"
    assert ResumeState.load(resume_file).epoch == 0, "the state after the last good epoch stays for a rerun"
    assert f"the state after epoch 1 stays in {Path('models/nan/.resume/stage1.pt')}" in errors[0]

    monkeypatch.setattr(train_stage, "mutual_loss", real)
    other = runner.invoke(app, ["train", "-S", "common.run=nan", "-S", "train.lr=0.002", "-S", "train.epochs=1"])
    assert other.exit_code == 0 and "starting fresh" in other.output and "resuming" not in other.output, other.output
    assert not resume_file.exists()


def test_restart_ignores_a_saved_state(inside, monkeypatch):
    import mstcli.stages.train as train_stage

    real = train_stage.mutual_loss
    poisoned = poisoned_after_first_epoch(real)
    monkeypatch.setattr(train_stage, "mutual_loss", poisoned)
    assert runner.invoke(app, ["train", "-S", "common.run=restart"]).exit_code == 2
    assert (inside / "models/restart/.resume/stage1.pt").exists()
    monkeypatch.setattr(train_stage, "mutual_loss", real)
    result = invoke("train", "-S", "common.run=restart", "--restart")
    assert "resuming" not in result.output
    assert result.output.count("S1 epoch") == EPOCHS["train"]


def test_same_settings_give_the_same_result_twice(inside):
    """Two identical runs (here with common.deterministic) give identical weights and metrics on the CPU."""
    reports = []
    for run in ("twice-a", "twice-b"):
        run_args = ["-S", f"common.run={run}", "-S", "common.deterministic=true", "-S", "train.epochs=2"]
        invoke("train", *run_args)
        invoke("distill", "--method", "kd", *run_args, "-S", "distill.epochs=2")
        invoke("eval", *run_args)
        reports.append(json.loads((inside / f"results/{run}/metrics.json").read_text()))
    assert without_run_name(reports[0]) == without_run_name(reports[1])
    assert states_equal(inside / "models/twice-a/student.pt", inside / "models/twice-b/student.pt")


def test_resume_every_spaces_the_saves(inside, monkeypatch):
    """With common.resume_every=2 nothing is saved after the first epoch: a NaN in the second leaves no state."""
    import mstcli.stages.train as train_stage

    monkeypatch.setattr(train_stage, "mutual_loss", poisoned_after_first_epoch(train_stage.mutual_loss))
    result = runner.invoke(app, ["train", "-S", "common.run=every", "-S", "common.resume_every=2"])
    assert result.exit_code == 2 and "no resume state was saved" in result.output, result.output
    assert not (inside / "models/every/.resume/stage1.pt").exists()
