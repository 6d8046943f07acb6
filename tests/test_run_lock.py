"""Two processes on one run do not collide: the stage that comes second stops at once with a one-line error naming
the holder, the first finishes normally, a lock left by a killed process is taken over, and the lock is let go on
every way out of a stage (engine/run_lock.py). Real processes throughout: a lock that only works inside one
process would pass tests that stay inside one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import invoke, tiny_workdir
from typer.testing import CliRunner

from mstcli.cli import app
from mstcli.engine.run_lock import LOCK_NAME, run_lock
from mstcli.errors import UserError

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

PARAMS = {
    "common": {"threads": 1},
    "prepare": {"num_samples": 240, "spec_size": 16, "image_energy": 0.9, "snr_db": [10.0, 20.0]},
    "train": {"epochs": 2, "batch_size": 32, "lr": 0.003},
}
HINT = "wait for it or use another common.run"

# holds the lock of models/<run> through the context manager until its stdin closes (or it is killed); argv:
# run, command; prints "held" once it holds it. Imports no torch, so it starts in a fraction of a second.
HOLDER = """
import sys
from pathlib import Path
from mstcli.engine.run_lock import run_lock
from mstcli.errors import UserError
run, command = sys.argv[1], sys.argv[2]
try:
    with run_lock(Path("models") / run, run, command):
        print("held", flush=True)
        sys.stdin.read()
except UserError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
"""

# the CLI with every stage waiting at its first training batch until the file argv[1] exists, so that a test
# decides when it may finish (no timing guesses); argv[2:] is the mst command line
GATED_CLI = """
import sys, time
from pathlib import Path
import mstcli.engine.loop as loop
gate = Path(sys.argv[1])
plain_batches = loop.batches
def gated_batches(*args):
    while not gate.exists():
        time.sleep(0.02)
    yield from plain_batches(*args)
loop.batches = gated_batches
from mstcli.cli import main
sys.argv = ["mst", *sys.argv[2:]]
main()
"""


def environment(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    return {**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **more}


def hold(root: Path, run: str, command: str = "mst train", **env: str) -> subprocess.Popen:
    """A process holding the lock of ``run`` in ``root`` (it holds it when this returns)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, run, command],
        cwd=root,
        env=environment(**env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    assert line == "held\n", process.communicate()[1]
    return process


def let_go(process: subprocess.Popen) -> None:
    process.communicate(timeout=30)  # closes stdin: the holder leaves its with block
    assert process.returncode == 0


def try_lock(root: Path, run: str, **env: str) -> subprocess.CompletedProcess:
    """Another process taking the lock of ``run`` and letting it go at once: exit 0 if it got it, 2 if refused."""
    return subprocess.run(
        [sys.executable, "-c", HOLDER, run, "mst eval"],
        cwd=root,
        env=environment(**env),
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )


def refusal(pid: int, run: str, command: str = "mst train") -> re.Pattern:
    since = r"since (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d"  # a date only if it started before midnight
    return re.compile(rf"error: run '{re.escape(run)}' is in use by pid {pid} \({command}, {since}\); {HINT}")


def recorded(root: Path, run: str) -> dict:
    return json.loads((root / "models" / run / LOCK_NAME).read_text())


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A tiny prepared workdir shared by the tests of this module; every test uses its own run names."""
    root = tiny_workdir(tmp_path_factory.mktemp("lock"), PARAMS)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        invoke("prepare")
    return root


@pytest.fixture
def inside(workdir: Path, monkeypatch) -> Path:
    monkeypatch.chdir(workdir)
    return workdir


def test_a_second_mst_on_the_run_gets_one_line_naming_the_holder(inside):
    holder = hold(inside, "busy")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "mstcli", "train", "-S", "common.run=busy"],
            cwd=inside,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr  # no traceback, nothing else
        assert refusal(holder.pid, "busy").fullmatch(second.stderr.strip()), second.stderr
        assert second.stdout == ""
        assert recorded(inside, "busy")["pid"] == holder.pid  # the refused process left the holder's lock alone
        assert not (inside / "results/busy").exists()  # and wrote nothing
    finally:
        let_go(holder)
    assert not (inside / "models/busy").exists()  # the holder made the folder for its lock and removed it


@pytest.mark.parametrize(
    "command",
    [
        ["train"],
        ["fit-masks"],
        ["distill"],
        ["eval"],
        ["report", "shared"],
        ["export", "shared"],
    ],
    ids=lambda c: c[0],
)
def test_every_stage_that_writes_a_run_takes_its_lock(inside, command):
    """In this process, while another holds run 'shared': refused before any work (only train has its inputs here;
    the others would fail on theirs instead). Another run is not refused: it fails on its own missing inputs (no
    feature file of AV-MNIST, no student, no metrics)."""
    holder = hold(inside, "shared", "mst fit-masks")
    try:
        refused = runner.invoke(app, [*command, "-S", "common.run=shared"])
        assert refused.exit_code == 2, refused.output
        assert refusal(holder.pid, "shared", "mst fit-masks").fullmatch(refused.output.strip()), refused.output
        other = runner.invoke(app, [*command[:1], "-S", "common.run=other", "-S", "common.dataset=avmnist"])
        assert other.exit_code == 2 and "in use" not in other.output, other.output  # its own error: no inputs
    finally:
        let_go(holder)
    assert not (inside / "models/other").exists() and not (inside / "results/shared").exists()


def test_the_first_process_finishes_normally(inside, tmp_path):
    """A real `mst train` waits inside its lock (at its first batch) while a second one is refused, then finishes
    with its checkpoint; the lock is gone after it."""
    gate = tmp_path / "gate"
    first = subprocess.Popen(
        [sys.executable, "-c", GATED_CLI, str(gate), "train", "-S", "common.run=first"],
        cwd=inside,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock = inside / "models/first" / LOCK_NAME
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text()):
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < deadline, "the first train took no lock within a minute"
            time.sleep(0.05)
        assert recorded(inside, "first")["pid"] == first.pid
        second = subprocess.run(
            [sys.executable, "-m", "mstcli", "train", "-S", "common.run=first"],
            cwd=inside,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2 and refusal(first.pid, "first").fullmatch(second.stderr.strip()), second.stderr
        assert first.poll() is None, "the first train did not wait at its gate"
    finally:
        gate.touch()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert "wrote models/first/stage1.pt" in out
    assert (inside / "models/first/stage1.pt").exists() and not (inside / "models/first/.resume").exists()
    assert not lock.exists()
    assert try_lock(inside, "first").returncode == 0


def test_a_lock_left_by_a_killed_process_is_taken_over(inside, caplog):
    holder = hold(inside, "killed")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    for pipe in (holder.stdin, holder.stdout, holder.stderr):
        pipe.close()
    assert recorded(inside, "killed")["pid"] == holder.pid  # its file stays: only the kernel's flock went away

    log = logging.getLogger("mstcli")
    log.addHandler(caplog.handler)
    level = log.level
    log.setLevel(logging.DEBUG)
    try:
        with run_lock(Path("models/killed"), "killed", "mst distill"):
            mine = recorded(inside, "killed")
            assert (mine["pid"], mine["command"]) == (os.getpid(), "mst distill")
            refused = try_lock(inside, "killed")
            assert refused.returncode == 2 and f"in use by pid {os.getpid()} (mst distill" in refused.stderr
    finally:
        log.removeHandler(caplog.handler)
        log.setLevel(level)
    assert f"taking over models/killed/{LOCK_NAME} from pid {holder.pid} (mst train" in caplog.text
    assert not (inside / "models/killed" / LOCK_NAME).exists()


@pytest.mark.parametrize("pid", ["dead", "alive"])
def test_a_lock_file_that_no_process_locks_is_free_whatever_pid_it_names(inside, pid):
    """The kernel's flock decides, not the pid in the file: a file naming an ended pid is taken over, and so is
    one naming a running process that does not hold the lock (a reused pid)."""
    folder = inside / "models" / f"stale-{pid}"
    folder.mkdir(parents=True)
    named = dead_pid() if pid == "dead" else os.getppid()
    since = "2001-02-03T04:05:06+00:00"
    record = {"pid": named, "host": socket.gethostname(), "command": "mst train", "since": since, "argv": []}
    (folder / LOCK_NAME).write_text(json.dumps(record))
    taken = try_lock(inside, f"stale-{pid}")
    assert taken.returncode == 0, taken.stderr
    assert not (folder / LOCK_NAME).exists()
    assert folder.exists()  # not made by the lock: stays


class Failure(Exception):
    pass


@pytest.mark.parametrize("way_out", [None, UserError, KeyboardInterrupt, Failure])
def test_the_lock_is_let_go_on_every_way_out(inside, way_out):
    run = f"out-{way_out.__name__ if way_out else 'success'}"
    with pytest.raises(way_out) if way_out else contextlib.nullcontext():
        with run_lock(inside / "models" / run, run, "mst train"):
            assert try_lock(inside, run).returncode == 2  # held inside
            if way_out:
                raise way_out("stop")
    assert not (inside / "models" / run).exists()
    assert try_lock(inside, run).returncode == 0  # another process gets it at once


def test_a_stage_that_fails_lets_the_lock_go(inside, monkeypatch):
    """A real stage ending in a UserError (a NaN loss in its first epoch) and in a bug (an exception from the loss):
    another process gets the run's lock right after."""
    import mstcli.stages.train as train_stage

    def nan_loss(*args, **kwargs):
        loss, terms = real(*args, **kwargs)
        return loss * float("nan"), terms

    def broken_loss(*args, **kwargs):
        raise Failure("a bug in a loss")

    real = train_stage.mutual_loss
    monkeypatch.setattr(train_stage, "mutual_loss", nan_loss)
    result = runner.invoke(app, ["train", "-S", "common.run=failing"])
    assert result.exit_code == 2 and "error:" in result.output and "in use" not in result.output, result.output
    assert try_lock(inside, "failing").returncode == 0

    monkeypatch.setattr(train_stage, "mutual_loss", broken_loss)
    result = runner.invoke(app, ["train", "-S", "common.run=failing"])
    assert isinstance(result.exception, Failure)
    assert try_lock(inside, "failing").returncode == 0
    assert not (inside / "models/failing" / LOCK_NAME).exists()


def test_under_torchrun_rank_0_holds_the_lock_for_the_job(inside):
    """The lock is taken before the process group exists, by the environment's RANK: rank 0 takes it (and is
    refused like any process), the other ranks of the job run inside rank 0's lock without touching it."""
    holder = hold(inside, "job")
    try:
        rank0 = try_lock(inside, "job", RANK="0", WORLD_SIZE="2")
        assert rank0.returncode == 2 and refusal(holder.pid, "job").search(rank0.stderr), rank0.stderr
        rank1 = try_lock(inside, "job", RANK="1", WORLD_SIZE="2")
        assert rank1.returncode == 0, rank1.stderr
        assert recorded(inside, "job")["pid"] == holder.pid
    finally:
        let_go(holder)
    rank1 = hold(inside, "job", RANK="1", WORLD_SIZE="2")
    try:
        assert not (inside / "models/job" / LOCK_NAME).exists()  # rank 1 alone takes nothing
        assert try_lock(inside, "job").returncode == 0
    finally:
        let_go(rank1)


@pytest.mark.e2e
def test_a_torchrun_job_holds_the_lock_once_and_finishes(inside, tmp_path):
    """torchrun, two gloo processes of a gated `mst train`: rank 0's pid is in the lock, a second `mst train` on the
    run is refused naming it, and once let through the job finishes as before and lets the lock go."""
    script = tmp_path / "gated.py"
    script.write_text(GATED_CLI)
    gate = tmp_path / "gate"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    job = subprocess.Popen(
        [*command, str(script), str(gate), "train", "-S", "common.run=job2", "-S", "train.batch_size=16"],
        cwd=inside,
        env=environment(MST_DIST_TIMEOUT="60"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock = inside / "models/job2" / LOCK_NAME
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text()):
            assert job.poll() is None, job.communicate()[1]
            assert time.monotonic() < deadline, "the job took no lock within two minutes"
            time.sleep(0.05)
        pid = recorded(inside, "job2")["pid"]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"RANK=0" in environ and pid != job.pid  # a worker, rank 0, not the launcher
        second = runner.invoke(app, ["train", "-S", "common.run=job2"])
        assert second.exit_code == 2 and refusal(pid, "job2").fullmatch(second.output.strip()), second.output
    finally:
        gate.touch()
    out, err = job.communicate(timeout=180)
    assert job.returncode == 0, err
    assert out.count("wrote models/job2/stage1.pt") == 1
    assert not lock.exists() and (inside / "models/job2/stage1.pt").exists()


def test_the_message_names_another_host_and_an_older_day():
    from mstcli.engine.run_lock import Holder

    holder = Holder(1234, "elsewhere", "mst distill", "2001-02-03T04:05:06+00:00")
    assert holder.describe() == "pid 1234 on elsewhere (mst distill, since 2001-02-03 04:05:06)"
    assert holder.running()  # another host's pid cannot be asked: taken as running
    assert Holder.parse(holder.to_json()) == holder
    assert Holder.parse("") is None and Holder.parse('{"pid": 1') is None


def test_a_stage_inside_a_stage_of_the_same_run_is_a_bug(inside):
    """One process taking its own run's lock twice would refuse itself with its own pid: a traceback instead."""
    with run_lock(Path("models/nested"), "nested", "mst report"):
        with pytest.raises(RuntimeError, match="this process already holds the lock of run 'nested'"):
            with run_lock(Path("models/nested"), "nested", "mst export"):
                pass
        assert recorded(inside, "nested")["pid"] == os.getpid()  # the outer lock is untouched
    assert not (inside / "models/nested").exists()


def no_flock(monkeypatch) -> None:
    """A file system without flock (ENOLCK, as some network file systems answer)."""
    import errno

    import mstcli.engine.run_lock as module

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(module.fcntl, "flock", no_locks)


def test_without_flock_lock_files_with_host_and_pid_take_over(inside, monkeypatch, caplog):
    """ENOLCK: the stage says so once (not once per lock) and holds ``.lock.held`` with its pid; another holder of
    this host is refused while it runs; a file naming an ended pid is taken over."""
    no_flock(monkeypatch)
    log = logging.getLogger("mstcli")
    log.addHandler(caplog.handler)
    folder = Path("models/nolocks")
    try:
        with run_lock(folder, "nolocks", "mst distill", shared=True, outputs=[Path("results/nolocks/kd.pt")]):
            assert caplog.text.count("file locks (flock) do not work") == 1, caplog.text
            readers = list((inside / folder / f"{LOCK_NAME}.readers").iterdir())
            assert [json.loads(r.read_text())["pid"] for r in readers] == [os.getpid()]
            held = inside / "results/nolocks/.kd.pt.lock.held"
            assert json.loads(held.read_text())["pid"] == os.getpid()
            with pytest.raises(UserError, match=r"run 'nolocks' is being read by other mst stages \(pid"):
                with run_lock(folder, "nolocks", "mst train"):
                    pass
            with pytest.raises(UserError, match=r"results/nolocks/kd.pt is in use by pid \d+ \(mst distill"):
                with run_lock(folder, "nolocks", "mst eval", shared=True, outputs=[Path("results/nolocks/kd.pt")]):
                    pass
        assert not held.exists() and not (inside / folder / f"{LOCK_NAME}.readers").exists()
        stale = inside / folder / f"{LOCK_NAME}.held"
        stale.parent.mkdir(parents=True, exist_ok=True)
        since = "2001-02-03T04:05:06+00:00"
        record = {"pid": dead_pid(), "host": socket.gethostname(), "command": "mst train", "since": since}
        stale.write_text(json.dumps(record))
        with run_lock(folder, "nolocks", "mst train"):
            assert json.loads(stale.read_text())["pid"] == os.getpid()  # taken over from the ended pid
        elsewhere = {**record, "host": "another-host", "pid": 1}
        stale.write_text(json.dumps(elsewhere))
        with pytest.raises(UserError, match=r"in use by pid 1 on another-host .*; if that process has ended, remove"):
            with run_lock(folder, "nolocks", "mst train"):
                pass
    finally:
        log.removeHandler(caplog.handler)


# holds run argv[1] as argv[2] ("shared" or "exclusive") with exclusive locks on the outputs argv[3:], until its
# stdin closes; prints "held" once it holds them
SHARED_HOLDER = """
import sys
from pathlib import Path
from mstcli.engine.run_lock import run_lock
from mstcli.errors import UserError
run, mode, outputs = sys.argv[1], sys.argv[2], [Path(p) for p in sys.argv[3:]]
try:
    with run_lock(Path("models") / run, run, "mst distill", shared=mode == "shared", outputs=outputs):
        print("held", flush=True)
        sys.stdin.read()
except UserError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
"""


def hold_shared(root: Path, run: str, *outputs: str, mode: str = "shared") -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", SHARED_HOLDER, run, mode, *outputs],
        cwd=root,
        env=environment(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    assert line == "held\n", process.communicate()[1]
    return process


def test_stages_that_read_a_run_share_it_and_each_output_has_one_writer(inside):
    """Two cells of one run (shared lock, different students) hold it at once; a writer of the run (mst train) is
    refused while they read, naming them; a third cell writing a student that is being written is refused naming
    that student; after the last reader the lock file is gone."""
    first = hold_shared(inside, "cells", "models/cells/kd.pt")
    second = hold_shared(inside, "cells", "models/cells/fitnet.pt")  # would hang at readline if refused
    try:
        writer = subprocess.run(
            [sys.executable, "-m", "mstcli", "train", "-S", "common.run=cells"],
            cwd=inside, env=environment(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert writer.returncode == 2, writer.stderr
        line = writer.stderr.strip()
        assert re.fullmatch(
            rf"error: run 'cells' is being read by other mst stages \(pid ({first.pid}|{second.pid}) \(mst distill,"
            rf" since \d\d:\d\d:\d\d\) among them\); {HINT}",
            line,
        ), line
        same_out = subprocess.run(
            [sys.executable, "-c", SHARED_HOLDER, "cells", "shared", "models/cells/kd.pt"],
            cwd=inside, env=environment(), input="", capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert same_out.returncode == 2
        assert f"models/cells/kd.pt is in use by pid {first.pid} (mst distill" in same_out.stderr
        let_go(first)
        assert (inside / "models/cells" / LOCK_NAME).exists()  # the second reader still holds it
    finally:
        for process in (first, second):
            if process.returncode is None:
                let_go(process)
    # the last reader removed the lock file (the folder stays: the first reader made it and could not remove it then)
    assert list((inside / "models/cells").iterdir()) == []


def test_a_writer_of_the_run_keeps_readers_out(inside):
    holder = hold_shared(inside, "writing", mode="exclusive")
    try:
        reader = subprocess.run(
            [sys.executable, "-c", SHARED_HOLDER, "writing", "shared", "models/writing/kd.pt"],
            cwd=inside, env=environment(), input="", capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert reader.returncode == 2
        assert f"run 'writing' is in use by pid {holder.pid} (mst distill" in reader.stderr
        assert not (inside / "models/writing/.kd.pt.lock").exists()  # refused before its outputs' locks
    finally:
        let_go(holder)
