"""``mst bench full-run``: the whole pipeline, prepare -> S1 -> S2 -> S3 -> eval -> report, at a given size and
schedule, timed per stage.

The end-to-end figure: how long a full MST-Distill run takes, measured, not extrapolated from epoch times. Two ways
to run it, reported in the summary as ``mode``:

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
its epochs) plus the median epoch time times the new number of epochs. It is shown and stored under
``extrapolated``, apart from what was measured.

The summary (``--json``: one JSON object) holds mode, device, torch, precision, sizes, epochs, per-stage wall
seconds and median epoch seconds, the total, and the student's test accuracy.

    mst bench full-run --n 70000 --spec-size 112 -S common.device=cuda              # the full run on a GPU
    mst bench full-run --n 70000 --spec-size 112 --epochs 20 20 20 --scale-to 100 100 100
    mst bench full-run --params params.yaml --n 6000 --mode cli                     # the default, as the CLI
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

STAGES = ("prepare", "train", "fit_masks", "distill", "eval", "report")
TRAINING = {"train": "train", "fit_masks": "fit_masks", "distill": "distill"}  # stage -> its log folder
CLI_NAMES = {stage: stage.replace("_", "-") for stage in STAGES}  # the commands: mst fit-masks, ...
RAW_SOURCE = Path("data/raw/avdigits.h5")  # the embedded source, relative to the repository's root

Mode = Literal["process", "cli"]


def run_settings(params: Path, n: int, spec_size: int, student: str, epochs: tuple[int, int, int] | None,
                 overrides: list[str]) -> dict[str, Any]:  # fmt: skip
    """The run's settings: ``params`` with this run's size, schedule and student written in, checked with the
    overrides before anything is written (a bad setting leaves no work folder behind)."""
    import yaml

    from mstcli.config import params_with_overrides
    from mstcli.errors import UserError

    try:
        raw = yaml.safe_load(params.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{params}: not valid YAML ({str(exc).splitlines()[0]})") from None
    raw.setdefault("common", {}).update({"run": "full-run", "student": student})
    prepare = raw.setdefault("prepare", {})
    prepare.update({"num_samples": n, "spec_size": spec_size})
    if prepare.get("source") is None:  # the run works in its own folder: the embedded source by its full path
        prepare["source"] = str(RAW_SOURCE.resolve())
    if epochs:
        for stage, count in zip(TRAINING, epochs, strict=True):
            raw.setdefault(stage, {})["epochs"] = count
    params_with_overrides(raw, overrides)
    return raw


def settings_file(raw: dict[str, Any], workdir: Path) -> Path:
    """The run's params file, so that the in-process and CLI modes read the very same settings."""
    import yaml

    path = workdir / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_in_process(stage: str, params_path: Path, overrides: list[str], features: Path) -> None:
    from mstcli.config import load_params
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
    from mstcli.engine.logbook import read_curves

    times = [row["epoch_s"] for row in read_curves(log_dir)]
    if not times:
        return None
    return statistics.median(times[1:] if len(times) > 1 else times)


def measure(
    params: Path = Path("presets/full.yaml"),
    overrides: list[str] | None = None,
    n: int = 70000,
    spec_size: int = 112,
    student: str = "image",
    epochs: tuple[int, int, int] | None = None,
    scale_to: tuple[int, int, int] | None = None,
    synthetic: bool = False,
    mode: Mode = "process",
    with_report: bool = True,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Run the pipeline in ``workdir`` (default: a new temporary folder) and return the summary of
    ``mst bench full-run`` as one JSON-ready dict. The working directory is the work folder while the stages run
    (their models/ and results/ go there) and is restored afterwards."""
    from mstcli.errors import UserError

    if mode not in ("process", "cli"):
        raise UserError(f"--mode must be process or cli, got '{mode}'")
    if not params.is_file():
        raise UserError(f"settings file not found: {params}")
    import torch  # before the clock starts

    from mstcli.benchmarks.synthetic import synthetic_features
    from mstcli.config import load_params
    from mstcli.ui import logger

    overrides = list(overrides or [])
    raw = run_settings(params, n, spec_size, student, epochs, overrides)  # refuse a bad setting before writing
    workdir = (workdir or Path(tempfile.mkdtemp(prefix="full_run-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    params_path = settings_file(raw, workdir)
    dataset = load_params(params_path, overrides).common.dataset
    features = workdir / "data" / "features" / f"{dataset}.h5"  # where `mst train` etc. look for it
    features.parent.mkdir(parents=True, exist_ok=True)
    stages = [stage for stage in STAGES if with_report or stage != "report"]
    if synthetic:
        synthetic_features(features, n, spec_size)
        stages.remove("prepare")
    run = run_as_cli if mode == "cli" else run_in_process
    here = Path.cwd()
    os.chdir(workdir)  # models/ and results/ of the run go under the work folder
    try:
        walls: dict[str, float] = {}
        started_all = time.perf_counter()
        for stage in stages:
            started = time.perf_counter()
            run(stage, params_path, overrides, features)
            walls[stage] = time.perf_counter() - started
            logger().info(f"{stage}: {walls[stage]:.1f} s")
        total = time.perf_counter() - started_all
    finally:
        os.chdir(here)

    settings = load_params(params_path, overrides)
    results = workdir / "results" / settings.common.run
    epoch_s = {stage: median_epoch(results / log) for stage, log in TRAINING.items()}
    counts = {stage: getattr(settings, stage).epochs for stage in TRAINING}
    accuracy = json.loads((results / "metrics.json").read_text())["accuracy"]
    device = settings.common.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device_name = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"
    summary: dict[str, Any] = {
        "mode": mode,
        "device": device_name,
        "torch": torch.__version__,
        "precision": settings.common.precision,
        "compile": settings.common.compile,
        "synthetic": synthetic,
        "n": n,
        "spec_size": spec_size,
        "student": student,
        "batch_size": {s: getattr(settings, s).batch_size for s in TRAINING},
        "epochs": counts,
        "wall_s": {s: round(w, 2) for s, w in walls.items()},
        "epoch_s": {s: None if v is None else round(v, 4) for s, v in epoch_s.items()},
        "total_s": round(total, 2),
        "test_accuracy": accuracy,
        "workdir": str(workdir),
    }
    if scale_to:
        scaled = {}
        for stage, new in zip(TRAINING, scale_to, strict=True):
            fixed = max(walls[stage] - counts[stage] * (epoch_s[stage] or 0.0), 0.0)
            scaled[stage] = fixed + new * (epoch_s[stage] or 0.0)
        others = sum(w for s, w in walls.items() if s not in TRAINING)
        summary["extrapolated"] = {
            "epochs": dict(zip(TRAINING, scale_to, strict=True)),
            "wall_s": {s: round(v, 1) for s, v in scaled.items()},
            "total_s": round(others + sum(scaled.values()), 1),
        }
    return summary
