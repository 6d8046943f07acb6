"""``mst bench torchrun``: seconds per epoch of S1, S2 and S3 (MST-Distill) with 1 process and under torchrun
with N processes.

Each process count gets its own run (models/speed-n<N>/): `mst train`, `mst fit-masks`, `mst distill` with
--restart, one process as `python -m mstcli ...`, N processes as `torchrun --nproc_per_node N -m mstcli ...` (gloo
on the CPU, NCCL on GPUs). common.threads stays 0, so each process takes cores // N threads. The figure is the
median of the stage's `epoch_s` (training plus validation) over its epochs after the first.

    mst bench torchrun [--procs 1 --procs 2] [-S train.epochs=3 ...]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

# (figure, command, the stage's log folder under results/<run>/)
STAGES = (("S1", "train", "train"), ("S2", "fit-masks", "fit_masks"), ("S3", "distill", "distill"))


def launcher(procs: int) -> list[str]:
    if procs == 1:
        return [sys.executable, "-m", "mstcli"]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "-m", "mstcli"]


def epoch_seconds(log_dir: Path) -> float:
    from mstcli.engine.logbook import read_curves
    from mstcli.errors import UserError

    times = [row["epoch_s"] for row in read_curves(log_dir)]
    if not times:
        raise UserError(f"no epoch times in {log_dir}")
    return statistics.median(times[1:] if len(times) > 1 else times)


def measure(procs: list[int], params_file: Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the three training stages for every process count in turn; ``{"procs": [...], "epoch_s": {stage:
    {procs: seconds}}}`` (the process counts as strings, JSON's keys)."""
    from mstcli.errors import UserError
    from mstcli.ui import logger

    if not procs or min(procs) < 1:
        raise UserError("--procs must be at least 1")
    epoch_s: dict[str, dict[str, float]] = {stage: {} for stage, _, _ in STAGES}
    for count in procs:
        run = f"speed-n{count}"
        settings = ["-p", str(params_file)] if params_file is not None else []
        settings += [item for o in [*(overrides or []), f"common.run={run}"] for item in ("-S", o)]
        for stage, command, log in STAGES:
            command_line = [*launcher(count), command, "--restart", *settings]
            done = subprocess.run(command_line, check=False, stdout=subprocess.DEVNULL)
            if done.returncode != 0:
                raise UserError(f"`{command}` with {count} process(es) failed (exit code {done.returncode})")
            epoch_s[stage][str(count)] = round(epoch_seconds(Path("results") / run / log), 4)
            logger().info(f"{stage} with {count} process(es): {epoch_s[stage][str(count)]:.2f} s per epoch")
    return {"procs": list(procs), "epoch_s": epoch_s}
