"""Seconds per epoch of S1, S2 and S3 (MST-Distill) with 1 process and under torchrun with N processes.

Each process count gets its own run (models/speed-n<N>/): `mst train`, `mst fit-masks`, `mst distill` with
--restart, one process as `mst ...`, N processes as `torchrun --nproc_per_node N -m mstcli ...` (gloo on the CPU,
NCCL on GPUs). common.threads stays 0, so each process takes cores // N threads. The figure is the median of the
stage's `epoch_s` (training plus validation) over its epochs after the first.

    python bench/torchrun_speed.py [--procs 1 2] [-S train.epochs=3 ...]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
from pathlib import Path

STAGES = (("S1", "train", "stage1.tsv"), ("S2", "fit-masks", "masks.tsv"), ("S3", "distill", "distill.tsv"))


def launcher(procs: int) -> list[str]:
    if procs == 1:
        return [sys.executable, "-m", "mstcli"]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "-m", "mstcli"]


def epoch_seconds(curves: Path) -> float:
    with curves.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    times = [float(r["epoch_s"]) for r in rows]
    return statistics.median(times[1:] if len(times) > 1 else times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    table = {}
    for procs in args.procs:
        run = f"speed-n{procs}"
        settings = [item for o in [*args.overrides, f"common.run={run}"] for item in ("-S", o)]
        for stage, command, curves in STAGES:
            subprocess.run([*launcher(procs), command, "--restart", *settings], check=True, stdout=subprocess.DEVNULL)
            table[(stage, procs)] = epoch_seconds(Path("results") / run / curves)
            print(f"{stage} with {procs} process(es): {table[(stage, procs)]:.2f} s per epoch", file=sys.stderr)
    print("| stage | " + " | ".join(f"{p} process{'es' if p > 1 else ''}" for p in args.procs) + " |")
    print("|---|" + "---:|" * len(args.procs))
    for stage, _, _ in STAGES:
        print(f"| {stage} | " + " | ".join(f"{table[(stage, p)]:.2f}" for p in args.procs) + " |")


if __name__ == "__main__":
    main()
