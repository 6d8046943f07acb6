"""``mst bench folder``: how fast ``mst prepare`` reads a user's folder, and that its memory does not grow with it.

For each size, an example folder of PNG + WAV pairs (``mst example-folder``) is written, then ``mst prepare`` runs
on it in a child process while its memory is sampled every 50 ms: the proportional set size (PSS, so libraries
shared by the parent, the forkserver and the workers count once) summed over the whole process tree, and the
parent's own peak resident size (VmHWM). Decoding speed is pairs per second of prepare's wall time, process start
and worker start included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mstcli.stages.example_folder import write_example_folder

SAMPLE_S = 0.05


@dataclass(frozen=True)
class PrepareFigures:
    pairs: int
    workers: int
    seconds: float
    pairs_per_second: float
    peak_tree_pss_mb: float  # the whole process tree (parent, forkserver, workers), sampled
    peak_parent_rss_mb: float  # the parent's VmHWM (the kernel's own peak, not sampled)
    write_seconds: float  # writing the example folder (not part of prepare)
    feature_mb: float
    # what prepare bounds by design: decoded rows in flight stay under 2 x workers x prepare.chunk_mb; the rest of
    # the tree's peak is each process's libraries and the parent's output buffers
    rows_in_flight_bound_mb: float

    def to_dict(self) -> dict:
        return asdict(self)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _kib(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree_pss_kib(pid: int) -> int:
    return sum(_kib(Path(f"/proc/{p}/smaps_rollup"), "Pss:") for p in _tree(pid))


def measure_prepare(
    pairs: int,
    workdir: Path,
    workers: int = 0,
    raw: Path | None = None,
    overrides: list[str] | None = None,
    chunk_mb: float = 16.0,
) -> PrepareFigures:
    """Write ``pairs`` example pairs under ``workdir``, prepare them in a child process with the ``overrides``
    (``section.key=value``, e.g. prepare.image_size=224), and remove both. ``chunk_mb``: the run's
    ``prepare.chunk_mb``, for the stated bound on decoded rows in flight."""
    folder, out = workdir / f"pairs_{pairs}", workdir / f"pairs_{pairs}.h5"
    started = time.perf_counter()
    kwargs = {"raw_path": raw} if raw is not None else {}
    write_example_folder(folder, pairs, progress=False, **kwargs)
    written = time.perf_counter() - started
    command = [sys.executable, "-m", "mstcli", "prepare", "--dataset", "folder", "--source", str(folder),
               "--out", str(out), "-S", f"prepare.workers={workers}", "--quiet"]  # fmt: skip
    for item in overrides or []:
        command += ["-S", item]
    peak_pss, parent_hwm = 0, 0
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while process.poll() is None:
        peak_pss = max(peak_pss, _tree_pss_kib(process.pid))
        parent_hwm = max(parent_hwm, _kib(Path(f"/proc/{process.pid}/status"), "VmHWM:"))
        time.sleep(SAMPLE_S)
    seconds = time.perf_counter() - started
    _, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"mst prepare failed on {pairs} pairs: {err.strip()}")
    workers = workers or (os.cpu_count() or 1)
    figures = PrepareFigures(
        pairs=pairs,
        workers=workers,
        seconds=round(seconds, 2),
        pairs_per_second=round(pairs / seconds, 1),
        peak_tree_pss_mb=round(peak_pss / 1024, 1),
        peak_parent_rss_mb=round(parent_hwm / 1024, 1),
        write_seconds=round(written, 2),
        feature_mb=round(out.stat().st_size / 2**20, 1),
        rows_in_flight_bound_mb=round(2 * workers * chunk_mb, 1),
    )
    shutil.rmtree(folder, ignore_errors=True)
    out.unlink(missing_ok=True)
    return figures


def run(
    counts: list[int],
    workers: int = 0,
    workdir: Path | None = None,
    overrides: list[str] | None = None,
    chunk_mb: float = 16.0,
) -> list[PrepareFigures]:
    with tempfile.TemporaryDirectory(prefix="mst-bench-folder-", dir=workdir) as tmp:
        return [measure_prepare(n, Path(tmp), workers, overrides=overrides, chunk_mb=chunk_mb) for n in counts]
