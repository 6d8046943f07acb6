"""The benchmark matrix as DVC experiments, run several at a time by DVC's own queue.

One experiment per (student, seed) cell of bench/dvc.yaml: its S1 and S2 feed every student of the cell, so the
cells are independent and N of them train at once (`dvc queue start -j N`), each in its own temporary copy of the
repository. Each `mst` stage of a job takes cores // MST_JOBS CPU threads (common.threads: 0, see
engine/runtime.py), so N jobs share the cores instead of oversubscribing them.

    python bench/exp_queue.py queue [--seeds 0 1 2] [--directions image audio] [--methods kd ...] [--teachers mm cm]
        [-S train.epochs=6 ...]         # one `dvc exp run --queue` per cell
    MST_JOBS=2 dvc queue start -j 2     # two workers
    python bench/exp_queue.py wait          # until the queue is empty (or watch `dvc queue status`)
    python bench/exp_queue.py collect       # the experiments' metrics -> results/bench/**/metrics.json -> the table

`collect` writes each experiment's metrics files where the matrix pipeline would have written them and ends like
bench/baseline_table.py (which runs the same matrix in one process, for a machine without DVC): the table, then the
compare JSON as the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

MATRIX = Path(__file__).with_name("matrix.yaml")  # the matrix bench/dvc.yaml and bench/baseline_table.py read
PREFIX = "bench"


def cell_targets(student: str, seed: int, methods: list[str], teachers: list[str]) -> list[str]:
    """The bench/dvc.yaml stages of one cell (DVC adds their S1 and S2)."""
    cell = f"{student}-{seed}"
    stages = [f"mst@{cell}", f"alone@{cell}"] + [f"baseline@{m}-{t}-{cell}" for m in methods for t in teachers]
    return [f"bench/dvc.yaml:{stage}" for stage in stages]


def queue(args: argparse.Namespace) -> None:
    for student in args.directions:
        for seed in args.seeds:
            name = f"{PREFIX}-{student}-s{seed}-{int(time.time())}"
            command = ["dvc", "exp", "run", "--queue", "--name", name]
            for override in args.overrides:
                command += ["-S", override]
            command += cell_targets(student, seed, args.methods, args.teachers)
            subprocess.run(command, check=True)
            print(f"queued {name}", file=sys.stderr)


def wait(poll_s: float = 2.0) -> float:
    """Seconds until `dvc queue status` shows nothing queued or running."""
    started = time.perf_counter()
    while True:
        status = subprocess.run(["dvc", "queue", "status"], capture_output=True, text=True, check=True).stdout
        if not any(word in status for word in ("Queued", "Running")):
            return time.perf_counter() - started
        time.sleep(poll_s)


def experiment_metrics(shown: list) -> dict[str, dict[str, dict]]:
    """name -> metrics path -> metrics of every finished experiment in `dvc exp show --json`."""
    found: dict[str, dict[str, dict]] = {}

    def visit(node) -> None:
        if isinstance(node, dict):
            data = node.get("data")
            name = node.get("name")
            if isinstance(data, dict) and name and str(name).startswith(PREFIX + "-"):
                metrics = {path: m.get("data", {}) for path, m in (data.get("metrics") or {}).items()}
                found[str(name)] = {path: values for path, values in metrics.items() if values}
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(shown)
    return found


def collect(args: argparse.Namespace) -> dict:
    shown = json.loads(
        subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True, check=True).stdout
    )
    by_experiment = experiment_metrics(shown)
    written = 0
    for name in sorted(by_experiment):  # a later experiment of the same cell overwrites an earlier one
        for path, values in by_experiment[name].items():
            if path.startswith(str(args.results)):
                target = Path(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(values, indent=2) + "\n")
                written += 1
    print(f"{written} metrics files from {len(by_experiment)} experiments", file=sys.stderr)
    from baseline_table import print_comparison  # imports torch: only here

    return print_comparison(args.results, args.out)


def main(argv: list[str] | None = None) -> None:
    matrix = yaml.safe_load(MATRIX.read_text())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("queue", "wait", "collect"))
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--seeds", type=int, nargs="+", default=matrix["seeds"])
    parser.add_argument("--directions", nargs="+", default=matrix["students"])
    parser.add_argument("--methods", nargs="*", default=matrix["methods"])
    parser.add_argument("--teachers", nargs="+", default=matrix["teachers"])
    parser.add_argument("--results", type=Path, default=Path("results/bench"))
    parser.add_argument("--out", type=Path, default=Path("results"), help="folder of compare.md and compare.json")
    args = parser.parse_args(argv)
    if args.action == "queue":
        queue(args)
    elif args.action == "wait":
        print(f"queue empty after {wait():.0f} s", file=sys.stderr)
    else:
        collect(args)


if __name__ == "__main__":
    main()
