"""The comparison benchmark of bench/dvc.yaml in ONE Python process (no DVC, one torch import): for a machine
without DVC (the GPU target has none) or where a process start costs too much. With DVC, bench/exp_queue.py runs the
same matrix as experiments, several at a time.

For each student direction and seed it runs, with the settings of params.yaml plus any ``-S`` overrides:
S1 (``mst train``) -> S2 (``mst fit-masks``) -> S3 MST-Distill -> eval, the student alone and every method x
teacher of the matrix from scratch for train.epochs + distill.epochs epochs -> eval, writing the same files as the
DVC matrix (``models/bench/<student>-s<seed>/...``, ``results/bench/<student>-s<seed>/<method>-<teacher>/
metrics.json``). Then ``mst compare`` over the results: the Rich table on stdout, ``results/compare.md`` and
``results/compare.json``; the LAST stdout line is the compare JSON (method -> teacher -> direction -> [mean, std]).

The methods are the registry's comparison methods (mstcli/methods/registry.py); teachers, directions and seeds
come from bench/matrix.yaml. Progress, one line per model,
goes to stderr.

    python bench/baseline_table.py [--seeds 0 1 2] [--directions image audio] [--methods kd dkd ...]
        [--teachers mm cm] [--device cuda] [-S train.epochs=30 ...] [--skip-done]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import yaml

from mstcli.config import Params, load_params
from mstcli.methods.registry import comparison_methods
from mstcli.stages.compare import compare
from mstcli.stages.distill import distill, with_baseline_budget
from mstcli.stages.evaluate import evaluate
from mstcli.stages.fit_masks import fit_masks
from mstcli.stages.prepare import feature_path, prepare
from mstcli.stages.train import train
from mstcli.ui import logger, setup_logging

MATRIX = Path(__file__).with_name("matrix.yaml")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    matrix = yaml.safe_load(MATRIX.read_text())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=None, help="settings file (default ./params.yaml)")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--seeds", type=int, nargs="+", default=matrix["seeds"])
    parser.add_argument("--directions", nargs="+", default=matrix["students"], help="student modalities")
    parser.add_argument(
        "--methods",
        nargs="*",
        default=list(comparison_methods()),
        help="comparison methods (default: all; not mst, none)",
    )
    parser.add_argument("--teachers", nargs="+", default=matrix["teachers"])
    parser.add_argument("--device", default=None, help="common.device (auto, cpu, cuda, cuda:N)")
    parser.add_argument("--models", type=Path, default=Path("models/bench"))
    parser.add_argument("--results", type=Path, default=Path("results/bench"))
    parser.add_argument("--out", type=Path, default=Path("results"), help="folder of compare.md and compare.json")
    parser.add_argument("--skip-done", action="store_true", help="keep S1/S2 files and models whose metrics.json exist")
    parser.add_argument("--verbose", action="store_true", help="show the stages' per-epoch lines")
    return parser.parse_args(argv)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = list(args.overrides) + ([f"common.device={args.device}"] if args.device else [])

    def params(self, student: str, seed: int, *extra: str) -> Params:
        cell = [f"common.student={student}", f"common.seed={seed}", f"common.run=bench/{student}-s{seed}"]
        return load_params(self.args.params, [*self.base, *cell, *extra])

    def stage(self, fn, *args):
        """Run a stage function (its per-epoch lines are logged at INFO: shown with --verbose)."""
        return fn(*args)

    def features(self) -> Path:
        params = load_params(self.args.params, self.base)
        path = feature_path(params.common.dataset)
        if not path.exists():
            self.stage(prepare, params, path)
        return path

    def cell(self, features: Path, student: str, seed: int) -> None:
        name = f"{student}-s{seed}"
        models, results = self.args.models / name, self.args.results / name
        params = self.params(student, seed)
        stage1, masks = models / "stage1.pt", models / "masks.pt"
        started = time.perf_counter()
        keep = self.args.skip_done
        if not (keep and stage1.exists()):
            self.stage(train, params, features, stage1, results / "train")
        if not (keep and masks.exists()):
            self.stage(fit_masks, params, features, stage1, masks, results / "fit_masks")
        log(f"{name}: S1 + S2 in {time.perf_counter() - started:.0f} s")
        self.student(features, stage1, masks, models / "mst.pt", results / "mst-mm+cm", params)
        alone = with_baseline_budget(self.params(student, seed, "distill.method=none"))
        self.student(features, stage1, None, models / "none.pt", results / "none", alone)
        for method in self.args.methods:
            for teacher in self.args.teachers:
                p = with_baseline_budget(
                    self.params(student, seed, f"distill.method={method}", f"distill.teacher={teacher}")
                )
                self.student(
                    features, stage1, None, models / f"{method}-{teacher}.pt", results / f"{method}-{teacher}", p
                )

    def student(
        self, features: Path, stage1: Path, masks: Path | None, out: Path, results: Path, params: Params
    ) -> None:
        """S3 with one method, then eval; the metrics land in ``results/metrics.json``."""
        if self.args.skip_done and (results / "metrics.json").exists():
            return
        started = time.perf_counter()
        self.stage(distill, params, features, stage1, masks, out, results / "distill")
        report = self.stage(evaluate, params, features, out, results / "metrics.json", results / "confusion.csv")
        log(f"  {out.stem:<10} {100 * report['accuracy']:6.2f} %  ({time.perf_counter() - started:.0f} s)")


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def print_comparison(results: Path, out: Path) -> dict:
    """`mst compare` over ``results``: the Rich table, then the compare JSON as the last stdout line (shared with
    bench/exp_queue.py, which collects the same files from DVC experiments)."""
    from rich.console import Console

    from mstcli.reports import compare_table

    table, grid, warnings = compare(results, out)
    for warning in warnings:
        logger().warning(warning)
    Console().print(compare_table(grid))
    print(json.dumps(table), flush=True)
    return table


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging(level=logging.INFO if args.verbose else logging.WARNING)  # warnings and errors always show
    bench = Bench(args)
    features = bench.features()
    for student in args.directions:
        for seed in args.seeds:
            bench.cell(features, student, seed)
    return print_comparison(args.results, args.out)


if __name__ == "__main__":
    main()
