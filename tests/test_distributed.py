"""Two CPU processes (gloo) compute what one process computes: S1, S2, S3 with MST-Distill and with CRD, and the
evaluation, on tiny data; only rank 0 writes; a killed rank ends a torchrun job in bounded time and the rerun
resumes from the last saved epoch."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch
from conftest import invoke, tensors, tiny_workdir

from mstcli.config import load_params
from mstcli.engine.checkpoints import read_checkpoint_file

# 144 train rows in batches of 27: shards of 14 and 13 rows, and a last batch of 9 (5 and 4): unequal on purpose
PARAMS = {
    "common": {"threads": 1},
    "prepare": {"num_samples": 240, "spec_size": 16, "image_energy": 0.9, "snr_db": [10.0, 20.0]},
    "train": {"epochs": 1, "batch_size": 27, "lr": 0.003},
    "fit_masks": {"epochs": 1, "batch_size": 27, "lr": 0.003, "hidden_dim_factor": 16},
    "distill": {"epochs": 1, "batch_size": 27, "lr": 0.003, "w_lb": 50.0, "lb_scale": "plain"},
}  # a strong load-balancing term, so that a router mean over each process's rows only shows in the student
STUDENTS = ("mst", "crd")


def run_pipeline(root: Path) -> None:
    """S1 -> S2 -> S3 (MST and CRD) -> eval of both, into ``root``; the same code in one process and in each rank."""
    from mstcli.stages.distill import distill
    from mstcli.stages.evaluate import evaluate
    from mstcli.stages.fit_masks import fit_masks
    from mstcli.stages.train import train

    features = Path("data/features/avdigits.h5")
    params = load_params(Path("params.yaml"), [])
    train(params, features, root / "stage1.pt", root / "train")
    fit_masks(params, features, root / "stage1.pt", root / "masks.pt", root / "fit_masks")
    for method in STUDENTS:
        p = load_params(Path("params.yaml"), [f"distill.method={method}"])
        out = root / f"{method}.pt"
        distill(p, features, root / "stage1.pt", root / "masks.pt", out, root / f"{method}-log")
        evaluate(p, features, out, root / f"{method}.json", root / f"{method}.csv")


def _rank_main(rank: int, port: int, root: Path) -> None:
    """One rank of a two-process job started by fork; records every file it writes."""
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
        | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "MST_DIST_TIMEOUT": "60"}
    )
    import mstcli.atomic_write as outputs

    written: list[str] = []
    replace = outputs.os.replace

    class Recording:  # os as seen by atomic_write.py: every completed atomic write goes through replace
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def replace(src, dst):
            written.append(str(dst))
            replace(src, dst)

    outputs.os = Recording()
    try:
        run_pipeline(root)
        (root.parent / f"written-{rank}.json").write_text(json.dumps(written))
    except BaseException:
        (root.parent / f"error-{rank}.txt").write_text(traceback.format_exc())
        os._exit(1)
    os._exit(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def differences(a: Path, b: Path) -> tuple[float, float]:
    """(the largest, the 99.9th percentile) absolute difference over every float tensor of two checkpoints.

    Adam turns a near-zero gradient into a step of about lr whatever its size, so the rounding of the two sums
    of one and two processes can flip the step of a handful of weights: one of 48,000 conv weights moved by
    2.4e-4 after an epoch at lr 3e-3 (fused Adam). A broken rule moves most weights; the percentile sees that."""
    left, right = dict(tensors(read_checkpoint_file(a, "x"))), dict(tensors(read_checkpoint_file(b, "x")))
    assert left.keys() == right.keys()
    floats = [k for k in left if left[k].is_floating_point()]
    assert floats

    diffs = torch.cat([(left[k] - right[k]).abs().flatten().double() for k in floats])
    return float(diffs.max()), float(diffs.quantile(0.999))


@pytest.fixture(scope="module")
def inside(tmp_path_factory):
    root = tiny_workdir(tmp_path_factory.mktemp("dist"), PARAMS)
    cwd = os.getcwd()
    os.chdir(root)
    invoke("prepare")
    yield root
    os.chdir(cwd)


def test_two_processes_compute_what_one_computes(inside):
    one, two = inside / "one", inside / "two"
    run_pipeline(one)
    port = free_port()
    pids = []
    for rank in (0, 1):
        pid = os.fork()
        if pid == 0:
            _rank_main(rank, port, two)
        pids.append(pid)
    deadline = time.monotonic() + 120
    codes = []
    for pid in pids:
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        codes.append(os.waitstatus_to_exitcode(done[1]) if done[0] else "timeout")
    errors = "".join(p.read_text() for p in inside.glob("error-*.txt"))
    assert codes == [0, 0], errors

    # every trained weight after one epoch (S1's three nets, S2's MaskNets incl. their BatchNorm, the MST student
    # and its GateNet's effect, the CRD student with its memory) as one process gives it
    for name in ("stage1.pt", "masks.pt", *(f"{m}.pt" for m in STUDENTS)):
        largest, percentile = differences(one / name, two / name)
        # rounding: largest up to 2.4e-4 (a few Adam steps flipped), 99.9 % of weights within 1e-5; rules broken:
        # 6e-3 and more
        assert largest < 2e-3 and percentile < 2e-5, (name, largest, percentile)
    for method in STUDENTS:
        single, double = (json.loads((root / f"{method}.json").read_text()) for root in (one, two))
        assert double["n_test"] == single["n_test"] == 48  # every test sample counted once
        assert double["accuracy"] == single["accuracy"]
        assert (two / f"{method}.csv").read_text() == (one / f"{method}.csv").read_text()
    from mstcli.engine.logbook import read_curves

    single, double = (read_curves(root / "mst-log")[0] for root in (one, two))
    assert set(single) == set(double) and any("@" in key for key in single)
    for key in single:
        if key != "epoch_s":  # the loss terms and routing shares are global means under both
            assert double[key] == pytest.approx(single[key], rel=1e-4, abs=1e-6), key
    # the dvclive logs: the same folders as one process leaves, none half-written (rank 1 logs nothing)
    assert sorted(p.name for p in two.iterdir() if p.is_dir()) == sorted(p.name for p in one.iterdir() if p.is_dir())
    assert not list(two.glob(".*live*"))

    # only rank 0 wrote, every output once
    written = [json.loads((inside / f"written-{r}.json").read_text()) for r in (0, 1)]
    assert written[1] == []
    finals = [p for p in written[0] if "/.resume/" not in p]
    expected = ["stage1.pt", "masks.pt"]
    for m in STUDENTS:
        expected += [f"{m}.pt", f"{m}.json", f"{m}.csv"]
    assert [Path(p).name for p in finals] == expected


@pytest.mark.e2e
def test_a_killed_rank_ends_the_job_and_the_rerun_resumes(inside):
    """torchrun, two gloo processes: SIGKILL rank 1 in S1's second epoch; the job ends with a message naming the
    killed rank in bounded time; the same command again resumes after the last finished epoch."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "MST_DIST_TIMEOUT": "20", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "--monitor_interval",
        "0.2",
        "-m",
        "mstcli",
        "train",
        "-S",
        "train.epochs=2",
        "-S",
        "common.run=killed",
        "-S",
        "train.batch_size=8",  # more steps per epoch, so that the kill lands inside one
    ]
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in job.stderr:
        lines.append(line)
        if line.startswith("S1 epoch 1/2"):
            break
    assert lines and lines[-1].startswith("S1 epoch 1/2"), "".join(lines)
    rank1 = [pid for pid in _children(job.pid) if _environ(pid).get("RANK") == "1"]
    assert len(rank1) == 1
    killed = time.monotonic()
    os.kill(rank1[0], signal.SIGKILL)
    _, rest = job.communicate(timeout=60)
    elapsed = time.monotonic() - killed
    assert job.returncode != 0
    assert elapsed < 30
    assert "error: process 0 of 2: lost the other processes of this torchrun job" in rest, rest
    assert re.search(r"rank\s*: 1 \(local_rank: 1\)\s*\n\s*exitcode\s*: -9", rest), rest  # torchrun names rank 1
    assert Path("models/killed/.resume/stage1.pt").exists()

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "S1: resuming after epoch 1/2" in again.stderr, again.stderr
    assert again.stdout.count("wrote models/killed/stage1.pt") == 1  # one summary line, from rank 0
    assert Path("models/killed/stage1.pt").exists() and not Path("models/killed/.resume/stage1.pt").exists()


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (torchrun's workers are children of its agent)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            path = task / "children"
            kids = [int(c) for c in path.read_text().split()] if path.exists() else []
            found += kids
            todo += kids
    return found


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def test_shards_cover_a_batch_once_in_order():
    from mstcli.engine.distributed import shard_range

    for n, parts in [(27, 2), (9, 2), (10, 4), (128, 8), (3, 3)]:
        ranges = [shard_range(n, r, parts) for r in range(parts)]
        assert [r[0] for r in ranges] == [0] + [r[1] for r in ranges[:-1]] and ranges[-1][1] == n  # contiguous
        sizes = [stop - start for start, stop in ranges]
        assert sizes == [n // parts + (1 if r < n % parts else 0) for r in range(parts)]
    assert shard_range(1, 1, 2) == (0, 1)  # fewer rows than processes: every process takes them all (no split)
