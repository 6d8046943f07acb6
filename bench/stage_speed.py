"""Seconds per epoch of S1, S2, S3 and the student alone, with the expert bank and with recomputation.

Every figure comes from the stages' own code (the ``epoch_s`` column of their curves, which covers one epoch's
training and its validation pass); the first epoch of each stage is a warm-up and is left out (median of the
rest). All runs happen in this one process, one after the other, on the same device, so the ratios compare like
with like:

- ``s1``: ``mst train``;  ``s2``: ``mst fit-masks`` (all MaskNets, layer cache on as configured);
- ``s3``: ``mst distill`` with the expert bank; ``s3_recompute``: the same with ``distill.bank=false`` (every
  batch reruns the frozen teachers and MaskNets, as the reference does);
- ``student``: ``mst distill --method none`` (the student alone, the floor for S3);
- ``s2_recompute`` (``--s2-recompute``): S2 with ``fit_masks.cache_mb=0``.

The ratio S3 / student from whole stage runs compares epochs that ran minutes apart, which a busy machine makes
noisy; ``s3_over_student_interleaved`` (``--interleave R``, default 5) sets up both S3 tasks once
(``stages.distill.setup_distillation``) and alternates one epoch of each, R times, on the engine
(``run_epochs``): the median of the R per-round ratios is the figure to compare with the target.

The data are random features with AV-MNIST's shapes (``--n`` pairs of 1x28x28 images and 1xSxS spectrograms,
60/20/20 split): time does not depend on the values. ``--features`` times a real prepared file instead.
The last line is one JSON object (keys: device, n_train, s1_epoch_s, s2_epoch_s, s3_epoch_s, student_epoch_s,
s3_over_student, bank_speedup, ...).

    python bench/stage_speed.py --n 70000 --spec-size 112 --batch-size 512            # AV-MNIST size, GPU
    python bench/stage_speed.py --n 6000 --spec-size 32 --batch-size 128 --factor 16  # 2-core CPU
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mstcli.config import load_params
from mstcli.data.store import FeatureFile
from mstcli.engine.loop import LoopConfig, run_epochs
from mstcli.stages.distill import distill, setup_distillation
from mstcli.stages.fit_masks import fit_masks
from mstcli.stages.train import train
from mstcli.engine.logbook import read_curves
from mstcli.ui import setup_logging

from synthetic import synthetic_features


def epoch_seconds(log_dir: Path) -> float:
    times = [row["epoch_s"] for row in read_curves(log_dir)]
    return statistics.median(times[1:] if len(times) > 1 else times)


def interleaved_rounds(mst_params, student_params, features, stage1, masks, rounds: int) -> list[tuple[float, float]]:
    """(S3 epoch s, student epoch s) of ``rounds`` rounds, each one epoch of either, alternated in this process."""
    if rounds <= 0:
        return []
    setups = [setup_distillation(p, features, stage1, masks) for p in (mst_params, student_params)]
    out = []
    for r in range(rounds):
        times = []
        for setup, p in zip(setups, (mst_params, student_params)):
            config = LoopConfig(1, p.distill.batch_size, setup.device, p.common.precision, order_seed=r, resume_every=0)
            started = time.perf_counter()
            run_epochs(setup.task, setup.train, config)
            times.append(time.perf_counter() - started)
        out.append((times[0], times[1]))
    return out


def timed(label: str, fn, *args) -> float:
    """Run a stage quietly; returns its whole wall time (set-up, caches and all epochs)."""
    started = time.perf_counter()
    fn(*args)
    wall = time.perf_counter() - started
    print(f"{label}: {wall:.2f} s in all", file=sys.stderr, flush=True)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=6000, help="pairs in all (70000 = AV-MNIST; 60%% train)")
    parser.add_argument("--spec-size", type=int, default=32, help="spectrogram side (112 = AV-MNIST)")
    parser.add_argument("--features", type=Path, help="a prepared feature file instead of random features")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per stage (the first is a warm-up)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--factor", type=int, default=2, help="MaskNet hidden_dim_factor (reference: 2)")
    parser.add_argument("--student", default="image")
    parser.add_argument("--s2-recompute", action="store_true", help="also time S2 without the layer cache")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], help="params override")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--interleave", type=int, default=5, help="rounds of alternating S3 and student epochs")
    args = parser.parse_args()
    setup_logging(level=logging.WARNING)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stage_speed-"))
    workdir.mkdir(parents=True, exist_ok=True)
    features = args.features or synthetic_features(workdir / "features.h5", args.n, args.spec_size)
    common = [f"common.student={args.student}", "common.run=speed"]
    epochs = [f"{stage}.{key}" for stage in ("train", "fit_masks", "distill") for key in ("epochs", "batch_size")]
    values = [args.epochs, args.batch_size] * 3
    base = [*common, *(f"{k}={v}" for k, v in zip(epochs, values)), f"fit_masks.hidden_dim_factor={args.factor}"]
    base += args.overrides

    def params(*extra: str):
        return load_params(None, [*base, *extra])

    p = params()
    device = "cuda" if p.common.device == "auto" and torch.cuda.is_available() else p.common.device
    device = "cpu" if device == "auto" else device
    stage1, masks = workdir / "stage1.pt", workdir / "masks.pt"
    walls = {}
    walls["s1"] = timed("S1", train, p, features, stage1, workdir / "s1")
    walls["s2"] = timed("S2", fit_masks, p, features, stage1, masks, workdir / "s2")
    if args.s2_recompute:
        walls["s2_recompute"] = timed(
            "S2 recompute",
            fit_masks,
            params("fit_masks.cache_mb=0"),
            features,
            stage1,
            workdir / "masks-r.pt",
            workdir / "s2_recompute",
        )
    for name, extra in {
        "s3": [],
        "s3_recompute": ["distill.bank=false"],
        "student": ["distill.method=none"],
    }.items():
        walls[name] = timed(
            name,
            distill,
            params(*extra),
            features,
            stage1,
            masks,
            workdir / f"{name}.pt",
            workdir / name,
        )

    per_epoch = {name: epoch_seconds(workdir / name) for name in walls}
    rounds = interleaved_rounds(params(), params("distill.method=none"), features, stage1, masks, args.interleave)
    n_train = len(FeatureFile.open(features).split_indices(p.common.seed)["train"])
    device_name = (
        torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(f"\n{device_name}, torch {torch.__version__}, precision {p.common.precision}, n_train {n_train}")
    print(f"{'stage':<14}{'s/epoch':>10}{'samples/s':>12}{'wall s':>9}")
    for name, seconds in per_epoch.items():
        print(f"{name:<14}{seconds:>10.3f}{n_train / seconds:>12.0f}{walls[name]:>9.1f}")
    summary = {
        "device": device_name,
        "torch": torch.__version__,
        "precision": p.common.precision,
        "compile": p.common.compile,
        "n_train": n_train,
        "batch_size": args.batch_size,
        "hidden_dim_factor": args.factor,
        "student": args.student,
        **{f"{name}_epoch_s": round(seconds, 4) for name, seconds in per_epoch.items()},
        "s3_over_student": round(per_epoch["s3"] / per_epoch["student"], 3),
        "s3_over_student_interleaved": round(statistics.median(r[0] / r[1] for r in rounds), 3) if rounds else None,
        "interleaved_epoch_s": [[round(a, 4), round(b, 4)] for a, b in rounds],
        "bank_speedup": round(per_epoch["s3_recompute"] / per_epoch["s3"], 2),
        "s3_setup_s": round(walls["s3"] - args.epochs * per_epoch["s3"], 2),
    }
    if "s2_recompute" in per_epoch:
        summary["cache_speedup"] = round(per_epoch["s2_recompute"] / per_epoch["s2"], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
