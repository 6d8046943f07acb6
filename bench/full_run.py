"""The whole pipeline, prepare -> S1 -> S2 -> S3 -> eval -> report, at a given size and schedule, timed per stage.

Issue 15's end-to-end figure: how long a full MST-Distill run takes, measured, not extrapolated from epoch times.
Two ways to run it, printed in the summary as ``mode``:

- ``--mode process`` (default): every stage's function is called in this one Python process, so the figures
  are the stages' own work (torch is imported once, before the clock starts);
- ``--mode cli``: every stage is run as the user runs it, ``python -m mstcli <stage> -p <params>``, one process
  per stage, so each figure also holds the start of Python, the import of torch and the reading of the inputs.

The data are the embedded AV-Digits source prepared at ``--n`` pairs and ``--spec-size`` (70000 and 112 are
AV-MNIST's size; the ``prepare`` stage is timed too) or, with ``--synthetic``, random features of those shapes
(no prepare; time does not depend on the values, accuracy then means nothing). The schedule is ``--params``'
(default: presets/full.yaml, the reference's 100/100/100 epochs, batch 512), changed by ``--epochs S1 S2 S3``
and ``-S key=value``.

``--scale-to S1 S2 S3`` adds an *extrapolation* to another schedule: each stage's fixed cost (its wall time minus
its epochs) plus the median epoch time times the new number of epochs. It is printed and stored under
``extrapolated``, apart from what was measured.

The last line is one JSON object: mode, device, torch, precision, sizes, epochs, per-stage wall seconds and
median epoch seconds, the total, and the student's test accuracy.

    python bench/full_run.py --n 70000 --spec-size 112 -S common.device=cuda              # the full run on a GPU
    python bench/full_run.py --n 70000 --spec-size 112 --epochs 20 20 20 --scale-to 100 100 100
    python bench/full_run.py --params params.yaml --n 6000 --mode cli                     # the default, as the CLI
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from mstcli.config import load_params
from mstcli.engine.logbook import read_curves
from mstcli.ui import setup_logging

from synthetic import synthetic_features

STAGES = ("prepare", "train", "fit_masks", "distill", "eval", "report")
TRAINING = {"train": "train", "fit_masks": "fit_masks", "distill": "distill"}  # stage -> its log folder
CLI_NAMES = {stage: stage.replace("_", "-") for stage in STAGES}  # the commands: mst fit-masks, ...


def settings_file(args: argparse.Namespace, workdir: Path) -> Path:
    """The run's params file: ``--params`` with this run's size, schedule and overrides written in, so that the
    in-process and CLI modes read the very same settings."""
    raw = yaml.safe_load(args.params.read_text()) or {}
    raw.setdefault("common", {}).update({"run": "full-run", "student": args.student})
    prepare = raw.setdefault("prepare", {})
    prepare.update({"num_samples": args.n, "spec_size": args.spec_size})
    if prepare.get("source") is None:  # the run works in its own folder: the embedded source by its full path
        prepare["source"] = str(Path("data/raw/avdigits.h5").resolve())
    if args.epochs:
        for stage, epochs in zip(("train", "fit_masks", "distill"), args.epochs):
            raw.setdefault(stage, {})["epochs"] = epochs
    path = workdir / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_params(path, args.overrides)  # refuse a bad override before anything runs
    return path


def run_in_process(stage: str, params_path: Path, overrides: list[str], features: Path) -> None:
    from mstcli.stages.distill import distill
    from mstcli.stages.evaluate import evaluate
    from mstcli.stages.fit_masks import fit_masks
    from mstcli.stages.paths import RunPaths
    from mstcli.stages.prepare import prepare
    from mstcli.stages.report import report
    from mstcli.stages.train import train

    params = load_params(params_path, overrides)
    paths = RunPaths(params.common.run)
    if stage == "prepare":
        prepare(params, features)
    elif stage == "train":
        train(params, features, paths.stage1, paths.results / "train")
    elif stage == "fit_masks":
        fit_masks(params, features, paths.stage1, paths.masks, paths.results / "fit_masks")
    elif stage == "distill":
        distill(params, features, paths.stage1, paths.masks, paths.student, paths.results / "distill")
    elif stage == "eval":
        evaluate(params, features, paths.student, paths.results / "metrics.json", paths.results / "confusion.csv")
    else:
        report(paths, features, params.eval.batch_size)


def run_as_cli(stage: str, params_path: Path, overrides: list[str], features: Path) -> None:
    command = [sys.executable, "-m", "mstcli", CLI_NAMES[stage], "-p", str(params_path), "--quiet"]
    for item in overrides:
        command += ["-S", item]
    subprocess.run(command, check=True)


def median_epoch(log_dir: Path) -> float | None:
    times = [row["epoch_s"] for row in read_curves(log_dir)]
    if not times:
        return None
    return statistics.median(times[1:] if len(times) > 1 else times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("presets/full.yaml"), help="the schedule's settings")
    parser.add_argument("--n", type=int, default=70000, help="pairs in all (70000 = AV-MNIST)")
    parser.add_argument("--spec-size", type=int, default=112, help="spectrogram side (112 = AV-MNIST)")
    parser.add_argument("--student", default="image")
    parser.add_argument("--epochs", type=int, nargs=3, metavar=("S1", "S2", "S3"), help="change the schedule")
    parser.add_argument("--scale-to", type=int, nargs=3, metavar=("S1", "S2", "S3"), help="also extrapolate")
    parser.add_argument("--synthetic", action="store_true", help="random features instead of prepare")
    parser.add_argument("--mode", choices=("process", "cli"), default="process")
    parser.add_argument("--no-report", action="store_true", help="leave out the report stage (figures)")
    parser.add_argument("--workdir", type=Path, help="where the run's files go (default: a new temporary folder)")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], help="params override")
    args = parser.parse_args()
    setup_logging(level=logging.WARNING)

    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="full_run-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    params_path = settings_file(args, workdir)
    dataset = load_params(params_path, args.overrides).common.dataset
    features = workdir / "data" / "features" / f"{dataset}.h5"  # where `mst train` etc. look for it
    features.parent.mkdir(parents=True, exist_ok=True)
    stages = [stage for stage in STAGES if not (args.no_report and stage == "report")]
    if args.synthetic:
        synthetic_features(features, args.n, args.spec_size)
        stages.remove("prepare")
    run = run_as_cli if args.mode == "cli" else run_in_process
    os.chdir(workdir)  # models/ and results/ of the run go under the work folder
    walls: dict[str, float] = {}
    started_all = time.perf_counter()
    for stage in stages:
        started = time.perf_counter()
        run(stage, params_path, args.overrides, features)
        walls[stage] = time.perf_counter() - started
        print(f"{stage}: {walls[stage]:.1f} s", file=sys.stderr, flush=True)
    total = time.perf_counter() - started_all

    params = load_params(params_path, args.overrides)
    results = workdir / "results" / params.common.run
    epoch_s = {stage: median_epoch(results / log) for stage, log in TRAINING.items()}
    epochs = {"train": params.train.epochs, "fit_masks": params.fit_masks.epochs, "distill": params.distill.epochs}
    metrics = json.loads((results / "metrics.json").read_text())
    accuracy = metrics["accuracy"]
    device = params.common.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device_name = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"

    print(f"\n{device_name}, torch {torch.__version__}, precision {params.common.precision}, mode {args.mode}")
    print(f"{'stage':<11}{'epochs':>7}{'s/epoch':>10}{'wall s':>10}")
    for stage in stages:
        per = epoch_s.get(stage)
        print(f"{stage:<11}{epochs.get(stage, ''):>7}{'' if per is None else f'{per:.3f}':>10}{walls[stage]:>10.1f}")
    print(f"{'total':<11}{'':>7}{'':>10}{total:>10.1f}   test accuracy {accuracy}")
    summary = {
        "mode": args.mode,
        "device": device_name,
        "torch": torch.__version__,
        "precision": params.common.precision,
        "compile": params.common.compile,
        "synthetic": args.synthetic,
        "n": args.n,
        "spec_size": args.spec_size,
        "student": args.student,
        "batch_size": {s: getattr(params, s).batch_size for s in TRAINING},
        "epochs": epochs,
        "wall_s": {s: round(w, 2) for s, w in walls.items()},
        "epoch_s": {s: None if v is None else round(v, 4) for s, v in epoch_s.items()},
        "total_s": round(total, 2),
        "test_accuracy": accuracy,
    }
    if args.scale_to:
        scaled = {}
        for stage, new in zip(TRAINING, args.scale_to):
            fixed = max(walls[stage] - epochs[stage] * (epoch_s[stage] or 0.0), 0.0)
            scaled[stage] = fixed + new * (epoch_s[stage] or 0.0)
        others = sum(w for s, w in walls.items() if s not in TRAINING)
        summary["extrapolated"] = {
            "epochs": dict(zip(TRAINING, args.scale_to)),
            "wall_s": {s: round(v, 1) for s, v in scaled.items()},
            "total_s": round(others + sum(scaled.values()), 1),
        }
        print(f"extrapolated to {args.scale_to} epochs (not measured): {summary['extrapolated']['total_s']} s")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
