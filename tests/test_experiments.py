"""Grids of runs (mstcli/experiments): the benchmark matrix on the local pool gives the sequential `dvc repro`
path's table cell for cell and is recorded in DVC; a failed cell is marked and the rest goes on; a sweep shares
S1 between its cells and ends in its table; every bad input is one line. SLURM: the tests at the end, against the
one-node SLURM of scripts/slurm_local.sh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_dvc_pipeline import copy_repo, set_params
from typer.testing import CliRunner

from mstcli.cli import app
from mstcli.experiments.jobs import Job
from mstcli.experiments.sweep import Axis, grid_cells, plan_sweep, split_values

TINY = {
    "prepare": {"num_samples": 60, "spec_size": 8},
    "common": {"threads": 1},
    "train": {"epochs": 1, "batch_size": 16},
    "fit_masks": {"epochs": 1, "batch_size": 16, "heads": 1, "hidden_dim_factor": 32},
    "distill": {"epochs": 2, "batch_size": 16},
}
CELLS = ["--student", "image", "--seed", "1", "--method", "kd", "--teacher", "cm"]
runner = CliRunner()


def tiny_repo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    copy_repo(root)
    set_params(root / "params.yaml", TINY)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def mst(cwd: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(["mst", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def accuracies(root: Path) -> dict[str, float]:
    """cell folder -> test accuracy of every metrics.json of mst eval under results/bench."""
    out = {}
    for path in sorted((root / "results" / "bench").rglob("metrics.json")):
        data = json.loads(path.read_text())
        if "method" in data:
            out[str(path.parent.relative_to(root / "results" / "bench"))] = data["accuracy"]
    return out


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> dict[str, float]:
    """The reference: the same three cells through one sequential `dvc repro`."""
    root = tiny_repo(tmp_path_factory.mktemp("sequential"))
    done = mst(root, "bench", "accuracy", *CELLS, "--executor", "dvc")
    assert done.returncode == 0, done.stdout + done.stderr
    return accuracies(root)


@pytest.mark.e2e
def test_local_pool_gives_the_sequential_table_and_records_every_cell_in_dvc(sequential, tmp_path):
    root = tiny_repo(tmp_path / "pool")
    listed = mst(root, "bench", "accuracy", *CELLS, "--dry")
    assert listed.returncode == 0, listed.stderr
    assert [line.split("\t")[1] for line in listed.stdout.splitlines()] == ["missing"] * 3
    pooled = mst(root, "bench", "accuracy", *CELLS, "--executor", "local", "--jobs", "2")
    assert pooled.returncode == 0, pooled.stdout + pooled.stderr
    assert "6 jobs to run on the local executor" in pooled.stdout  # prepare, S1, S2 and the three cells
    assert accuracies(root) == sequential and len(sequential) == 3  # cell for cell, to the last digit
    stages = ["prepare", "bench/dvc.yaml:train@image-1", "bench/dvc.yaml:fit_masks@image-1",
              "bench/dvc.yaml:mst@image-1", "bench/dvc.yaml:alone@image-1", "bench/dvc.yaml:baseline@kd-cm-image-1"]
    status = subprocess.run(["dvc", "status", *stages], cwd=root, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout  # each job recorded by dvc commit
    listed = mst(root, "bench", "accuracy", *CELLS, "--dry")
    assert [line.split("\t")[1] for line in listed.stdout.splitlines()] == ["done"] * 3
    again = mst(root, "bench", "accuracy", *CELLS, "--executor", "local", "--jobs", "2")
    assert again.returncode == 0 and "all 3 cells are up to date" in again.stdout, again.stdout + again.stderr

    # a changed setting the cells read makes them stale in DVC's own status, not by a file's presence
    set_params(root / "params.yaml", {"common": {"deterministic": True}})
    listed = mst(root, "bench", "accuracy", *CELLS, "--dry")
    assert [line.split("\t")[1] for line in listed.stdout.splitlines()] == ["stale"] * 3


def test_planning_reads_each_lock_file_once_and_plans_what_dvc_collects(tmp_path, monkeypatch):
    """DVC's per-target collect reads the lock file twice for every target; a grown benchmark lock file made that
    minutes per seed. The plan must still hold exactly the stages DVC's own collect finds, upstream first."""
    from dvc.dvcfile import Lockfile
    from dvc.repo import Repo

    from mstcli.benchmarks.accuracy_matrix import Matrix
    from mstcli.experiments.dvc_stages import plan_stages

    root = tiny_repo(tmp_path / "plan")
    monkeypatch.chdir(root)
    targets = [stage for stage, _ in Matrix.read().narrowed(students=["image"], seeds=[0]).cells()]
    assert len(targets) > 20
    with Repo(str(root)) as repo:
        dvc_collects = {s.addressing for t in targets for s in repo.stage.collect(t, with_deps=True)}
    loads = []
    real_load = Lockfile.load
    monkeypatch.setattr(Lockfile, "load", lambda self, **kw: loads.append(self.path) or real_load(self, **kw))
    plan = plan_stages(targets, root)
    assert len(loads) == len(set(loads)) <= 2  # dvc.lock and bench/dvc.lock, each read once
    assert set(plan.states) == dvc_collects and set(plan.states.values()) == {"missing"}
    order = [job.name for job in plan.jobs]
    assert set(order) == dvc_collects and order[0] == "prepare"
    assert order.index("bench/dvc.yaml:train@image-0") < order.index("bench/dvc.yaml:fit_masks@image-0")
    for job in plan.jobs:
        assert all(order.index(before) < order.index(job.name) for before in job.after)
    cell = next(job for job in plan.jobs if job.name == "bench/dvc.yaml:baseline@kd-cm-image-0")
    # the features and S1 it reads, and S2: fit-masks holds the run exclusively, so a cell beside it is refused
    assert set(cell.after) == {"prepare", "bench/dvc.yaml:train@image-0", "bench/dvc.yaml:fit_masks@image-0"}
    assert "bench/dvc.yaml:fit_masks@image-0" not in next(j for j in plan.jobs if "train@image-0" in j.name).after
    fit_masks = next(job for job in plan.jobs if job.name == "bench/dvc.yaml:fit_masks@image-0")
    assert set(fit_masks.after) == {"prepare", "bench/dvc.yaml:train@image-0"}  # no cycle back to its readers


def recorder_held_at_its_first_commit(refuse: str | None = None):
    """A BackgroundRecorder whose commits are logged in ``calls`` and refuse any batch holding ``refuse``; its first
    commit waits for ``release`` after it has added "a", so later stages pile up behind it."""
    import threading

    from mstcli.errors import UserError
    from mstcli.experiments.dvc_stages import BackgroundRecorder

    calls, started, release = [], threading.Event(), threading.Event()

    def record(names, root):
        calls.append(list(names))
        started.set()
        assert release.wait(10)
        if refuse in names:
            raise UserError(f"dvc commit of {', '.join(names)} failed: no")

    recorder = BackgroundRecorder(Path("."), record)
    recorder.add("a")
    assert started.wait(10)  # add() returned at once: the job pool is not held up by the commit
    return recorder, calls, release


def test_recorder_commits_what_finished_during_a_commit_together_and_waits_at_close():
    recorder, calls, release = recorder_held_at_its_first_commit()
    recorder.add("b")
    recorder.add("c")
    release.set()
    recorder.close()
    assert calls == [["a"], ["b", "c"]]


def test_recorder_records_a_refused_batch_stage_by_stage_and_raises_the_first_error_at_close():
    from mstcli.errors import UserError

    recorder, calls, release = recorder_held_at_its_first_commit(refuse="bad")
    recorder.add("bad")
    recorder.add("c")
    release.set()
    with pytest.raises(UserError, match=r"^dvc commit of bad failed: no$"):
        recorder.close()
    assert calls == [["a"], ["bad", "c"], ["bad"], ["c"]]  # c is recorded although its batch was refused


def test_commit_records_a_stage_and_leaves_its_output_where_a_job_may_be_reading_it(tmp_path, monkeypatch):
    from mstcli.experiments.dvc_stages import commit, plan_stages

    monkeypatch.chdir(tmp_path)  # mst runs from the project's root: stage addresses are relative to it
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True, env=env)
    # a shared cluster's usual setting: relinking would replace the output by a link into the cache
    subprocess.run(["dvc", "config", "cache.type", "symlink"], cwd=tmp_path, check=True, env=env)
    (tmp_path / "dvc.yaml").write_text("stages:\n  make:\n    cmd: echo one > out.txt\n    outs:\n      - out.txt\n")
    subprocess.run("echo one > out.txt", shell=True, cwd=tmp_path, check=True)  # the job ran the stage's command
    before = (tmp_path / "out.txt").stat().st_ino
    assert plan_stages(["make"], tmp_path).states == {"make": "stale"}  # never recorded
    commit(["make"], tmp_path)
    out = tmp_path / "out.txt"
    assert not out.is_symlink() and out.stat().st_ino == before  # not deleted and put back from the cache
    assert plan_stages(["make"], tmp_path).states == {"make": "done"}


# holds the exclusive lock of one output (as a stage writing it would) until its stdin closes
HOLD_OUTPUT = """
import sys
from pathlib import Path
from mstcli.engine.run_lock import run_lock
with run_lock(Path("models/holder"), "holder", "mst distill", shared=True, outputs=[Path(sys.argv[1])]):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.mark.e2e
def test_a_failed_cell_is_marked_and_the_others_finish(tmp_path):
    root = tiny_repo(tmp_path / "failing")
    cells = ["--student", "image", "--seed", "0", "--method", "kd", "--method", "dist", "--teacher", "mm"]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OUTPUT, "models/bench/image-s0/kd-mm.pt"],
        cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        first = mst(root, "bench", "accuracy", *cells, "--executor", "local", "--jobs", "2")
    finally:
        holder.communicate(timeout=30)
    assert first.returncode == 2, first.stdout + first.stderr
    assert first.stderr.strip().splitlines()[-1] == (
        "error: 1 of the matrix's jobs failed or were not run; the table lists them (compare.md)"
    )
    failed = json.loads((root / "results/bench/image-s0/kd-mm/failed.json").read_text())
    assert failed["job"] == "bench/dvc.yaml:baseline@kd-mm-image-0"
    assert failed["error"].startswith(f"error: models/bench/image-s0/kd-mm.pt is in use by pid {holder.pid}")
    assert set(accuracies(root)) == {"image-s0/mst-mm+cm", "image-s0/none", "image-s0/dist-mm"}  # the rest ran
    compare_md = (root / "results/compare.md").read_text()
    assert "Cells that failed (no result):" in compare_md
    assert "baseline@kd-mm-image-0: error: models/bench" in compare_md

    second = mst(root, "bench", "accuracy", *cells, "--executor", "local")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 jobs to run" in second.stdout  # only the failed cell: S1, S2 and the others are recorded
    assert not (root / "results/bench/image-s0/kd-mm/failed.json").exists()
    assert "image-s0/kd-mm" in accuracies(root)


@pytest.mark.e2e
def test_sweep_of_two_settings_over_two_seeds_shares_stage_one_and_ends_in_its_table(tmp_path):
    root = tiny_repo(tmp_path / "sweep")
    assert mst(root, "prepare").returncode == 0
    args = ["sweep", "-S", "distill.lr=0.001,0.01", "-S", "distill.temperature=2,4", "--seeds", "0,1",
            "--method", "kd", "--teacher", "cm", "--name", "lr", "--executor", "debug"]  # fmt: skip
    done = mst(root, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 cells (0 finished before), 10 jobs on the debug executor" in done.stdout  # 2 S1 (one per seed)
    rows = json.loads((root / "results/sweep/lr/sweep.json").read_text())
    assert [row["settings"] for row in rows] == [
        {"distill.lr": lr, "distill.temperature": t} for lr in ("0.001", "0.01") for t in ("2", "4")
    ]
    for row in rows:
        values = list(row["per_seed"].values())
        assert len(values) == 2 and row["mean"] == pytest.approx(sum(values) / 2)
        assert row["std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    best = max(rows, key=lambda r: r["mean"])
    assert best["best"] and sum(r["best"] for r in rows if r["mean"] < best["mean"]) == 0
    cell = json.loads((root / "results/sweep/lr/lr=0.01_temperature=4_seed1/metrics.json").read_text())
    assert cell["method"] == "kd" and cell["seed"] == 1
    assert 100 * cell["accuracy"] == pytest.approx(rows[3]["per_seed"]["1"])
    table = (root / "results/sweep/lr/sweep.md").read_text()
    assert "| distill.lr | distill.temperature | seed 0 | seed 1 | accuracy (%) mean ± std | best |" in table
    assert "★" in done.stdout  # the table on screen marks the best too
    again = mst(root, *args)
    assert again.returncode == 0 and "8 cells (8 finished before), 0 jobs" in again.stdout


def test_sweep_grid_shares_stage_one_per_seed_and_stage_two_per_masks_setting(tmp_path):
    axes = [Axis("distill.k", ("1", "2")), Axis("fit_masks.lr", ("0.001", "0.01"))]
    plan = plan_sweep("g", axes, [0, 1], "mst", None, True, None, False, tmp_path)
    kinds = [job.name.split("@")[0] for job in plan.jobs]
    assert kinds.count("train") == 2  # per seed: neither axis touches S1
    assert kinds.count("fit-masks") == 4  # per seed and fit_masks.lr
    assert len([j for j in plan.jobs if j.results is not None]) == 8
    by_name = {job.name: job for job in plan.jobs}
    cell = by_name["k=2_lr=0.01_seed1"]
    (masks,) = cell.after
    assert by_name[masks].after[0].startswith("train@sweep/g/s1-") and by_name[masks].after[0].endswith("-s1")
    assert "-S common.seed=1" in cell.commands[0] and "-S distill.k=2" in cell.commands[0]
    assert "--same-passes" not in cell.commands[0]  # MST-Distill continues its S1 student
    kd = plan_sweep("g", [Axis("train.lr", ("0.001", "0.01"))], [0], "kd", "mm", False, None, False, tmp_path)
    assert [j.name.split("@")[0] for j in kd.jobs].count("train") == 2  # train.lr: one S1 per value
    assert all("fit-masks" not in j.name for j in kd.jobs) and "--same-passes" in kd.jobs[-1].commands[0]


def test_values_split_at_top_level_commas():
    assert split_values("1,2, 3") == ["1", "2", "3"]
    assert split_values("[0,10],[5,20]") == ["[0,10]", "[5,20]"]
    cells = grid_cells([Axis("a.b", ("1", "2")), Axis("c.d", ("x",))], [0, 1])
    assert [c.name() for c in cells] == ["b=1_d=x_seed0", "b=1_d=x_seed1", "b=2_d=x_seed0", "b=2_d=x_seed1"]


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["-S", "distill.kk=1,2"], "unknown params key 'distill.kk'"),
        (["-S", "distill.k=1,two"], "distill.k"),
        (["-S", "distill.k="], "-S distill.k=: an empty grid"),
        ([], "no grid"),
        (["-S", "prepare.num_samples=10,20"], "not a sweep axis (prepare settings change the feature file"),
        (["-S", "common.seed=0,1"], "seeds are their own axis: --seeds"),
        (["-S", "distill.k=1", "--seeds", "a"], "--seeds a: expected integers"),
        (["-S", "distill.k=1", "--executor", "cloud"], "--executor cloud: unknown"),
        (["-S", "distill.k=1", "--executor", "dvc"], "sweeps are not DVC stages"),
        (["-S", "distill.k=1", "--name", "a/b"], "--name a/b: use letters"),
    ],
)
def test_bad_sweeps_are_one_line_and_write_nothing(tmp_path, monkeypatch, args, culprit):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["sweep", *args])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a UserError, not a crash
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_slurm_not_reachable_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no sinfo
    from mstcli.experiments.executors import ExecutorOptions, executor_for

    executor = executor_for(ExecutorOptions("slurm"))
    with pytest.raises(Exception, match="sbatch / sinfo not found: SLURM is not reachable") as caught:
        executor.run([Job("a", ("true",))], tmp_path, lambda outcome: None)
    assert type(caught.value).__name__ == "UserError"
    assert not (tmp_path / ".mst").exists()


@pytest.fixture(scope="module")
def slurm() -> None:
    """The one-node SLURM of scripts/slurm_local.sh (CI starts it before pytest; started here if it is not up)."""
    started = subprocess.run(
        ["bash", str(Path(__file__).resolve().parents[1] / "scripts" / "slurm_local.sh"), "start"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr


@pytest.mark.e2e
def test_slurm_gives_the_sequential_table(slurm, sequential, tmp_path):
    root = tiny_repo(tmp_path / "slurm")
    wrong = mst(root, "bench", "accuracy", *CELLS, "--executor", "slurm", "--slurm-partition", "nosuch")
    assert wrong.returncode == 2 and wrong.stderr.strip() == (
        "error: --slurm-partition nosuch: no such partition (known: debug)"
    ), wrong.stderr
    assert not (root / ".mst").exists() and not (root / "results").exists()  # nothing submitted, nothing written
    done = mst(root, "bench", "accuracy", *CELLS, "--executor", "slurm", "--slurm-partition", "debug",
               "--cpus-per-task", "1", "--jobs", "0")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert accuracies(root) == sequential  # cell for cell
    jobs = list((root / ".mst" / "jobs").glob("*/submitit/*_submitted.pkl"))
    assert len(jobs) == 6  # prepare, S1, S2 and three cells, each a SLURM job


def test_on_slurm_a_failed_job_cancels_what_waits_for_it_and_nothing_else(slurm, tmp_path):
    from mstcli.experiments.executors import ExecutorOptions, executor_for

    jobs = [
        Job("a", ("echo 'error: broken on purpose' >&2; exit 3",)),
        Job("b", ("touch b.ran",), ("a",)),
        Job("c", ("touch c.ran",)),
        Job("d", ("touch d.ran",), ("c",)),
    ]
    seen = []
    options = ExecutorOptions("slurm", 0, tmp_path / ".mst", "debug", 5, 1, 0)
    outcomes = {o.name: o for o in executor_for(options).run(jobs, tmp_path, seen.append)}
    assert sorted(o.name for o in seen) == ["a", "b", "c", "d"]  # each reported once, as it ended
    assert outcomes["a"].error.startswith("error: broken on purpose (exit code 3; log: ")
    assert outcomes["b"].skipped and outcomes["b"].error == "not run: a failed"
    assert outcomes["c"].ok and outcomes["d"].ok
    assert (tmp_path / "c.ran").exists() and (tmp_path / "d.ran").exists() and not (tmp_path / "b.ran").exists()
