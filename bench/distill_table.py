"""Benchmark table of issue 3: does MST-Distill help on AV-Digits, in both student directions?

For each direction (image student, audio student) and each seed (= split group) it runs, with the settings
of params.yaml (the quick preset unless told otherwise):

- ``mst``: S1 -> S2 -> S3, the student continued from S1 (the pipeline of ``dvc repro``);
- ``none``, ``kd_mm``, ``kd_cm``: a fresh student trained alone / with Hinton KD from the S1 MM or CM net,
  for train.epochs + distill.epochs epochs, so every student gets the same number of passes over the data;
- ``mm_teacher``: the MM net trained alone on both modalities (CE only, same epoch budget);
- ``unimodal``: the other modality's net trained alone; that is exactly the other direction's ``none`` run, so it
  is taken from there (both directions must run);
- with ``--quirks``, S3 again with each of the reference code's quirks switched off, one at a time, on the
  same S1 and S2 (``--only-quirks`` skips the rest; S1 and S2 files already in ``--workdir`` are reused).

Every model is chosen by the lowest validation CE and tested on its test split. The last line printed is the
table as one JSON object: ``{"image": {"none": [mean, std], ...}, "audio": {...}}`` (accuracies in %).

    python bench/distill_table.py [--seeds 0 1 2] [--quirks] [--params params.yaml] [--workdir bench/runs]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mstcli.config import load_params
from mstcli.data.store import FeatureFile
from mstcli.engine.loop import EpochEnd, EpochTask, LoopConfig, run_epochs
from mstcli.engine.splits import load_splits
from mstcli.engine.evaluation import loss_and_accuracy, predict
from mstcli.engine.runtime import runtime_for
from mstcli.models.trio import RunSpec, Trio
from mstcli.stages.distill import distill
from mstcli.stages.evaluate import evaluate
from mstcli.stages.fit_masks import fit_masks
from mstcli.stages.prepare import prepare
from mstcli.stages.train import train
from mstcli.ui import setup_logging

# S3 variants on the same S1 and S2: each reference quirk switched off alone, and an ablation that continues
# the S1 student with CE only (what S3 adds beyond S1).
QUIRKS = {
    "mst_single": ["distill.compose=single"],
    "mst_weighted_gate": ["distill.gate_signal=weighted"],
    "mst_plain_lb": ["distill.lb_scale=plain"],
    "mst_shifted_decay": ["distill.decay=shifted"],
    "s1_then_ce": ["distill.method=none", "distill.student_init=stage1"],
}


def quiet(fn, *args, **kwargs):
    """Run a stage; its per-epoch lines are hidden by the log level set in main (warnings and errors show)."""
    return fn(*args, **kwargs)


def test_accuracy(params, features: Path, student: Path, results: Path) -> float:
    report = quiet(evaluate, params, features, student, results / "metrics.json", results / "confusion.csv")
    return 100.0 * report["accuracy"]


class CrossEntropyAlone(EpochTask):
    """One net of the trio trained alone with CE; the state with the lowest validation CE is kept."""

    name = "alone"

    def __init__(self, net, val, lr: float) -> None:
        self.net, self.val = net, val
        self.optimizer = torch.optim.Adam(net.parameters(), lr=lr)

    def modules(self):
        return {"net": self.net}

    def batch_loss(self, batch):
        ce = F.cross_entropy(self.net(batch.inputs), batch.labels)
        return ce, {}

    def end_epoch(self, epoch: int) -> EpochEnd:
        self.net.eval()
        val_loss, _ = loss_and_accuracy(predict(self.net, self.val, 1024), self.val.labels)
        return EpochEnd({"val_ce": val_loss}, score=val_loss)


def alone(params, features_path: Path, which: str, epochs: int) -> float:
    """Test accuracy (%) of one net of the trio trained alone with CE (best validation CE kept), on the engine's
    epoch loop like every stage."""
    features = FeatureFile.open(features_path)
    device = runtime_for(params.common)
    spec = RunSpec.from_features(features, params.common.student)
    net = getattr(Trio(spec), which).to(device)
    splits = load_splits(features, params.common.seed, list(spec.modalities), device)
    task = CrossEntropyAlone(net, splits["val"], params.distill.lr)
    config = LoopConfig(epochs, params.distill.batch_size, device, order_seed=params.common.seed + 1)
    result = quiet(run_epochs, task, splits["train"], config)
    net.load_state_dict(result.best_state["net"])
    net.eval()
    _, acc = loss_and_accuracy(predict(net, splits["test"], 1024), splits["test"].labels)
    return 100.0 * acc


MM_ALONE: dict[int, float] = {}


def run_direction(args, direction: str, seed: int, features: Path) -> dict[str, float]:
    base = [f"common.student={direction}", f"common.seed={seed}", f"common.run=bench-{direction}-s{seed}"]
    params = load_params(args.params, base)
    root = args.workdir / f"{direction}-s{seed}"
    stage1, masks = root / "stage1.pt", root / "masks.pt"
    acc: dict[str, float] = {}
    timings: dict[str, float] = {}

    if not stage1.exists():
        started = time.perf_counter()
        quiet(train, params, features, stage1, root / "train")
        timings["s1"] = time.perf_counter() - started
    if not masks.exists():
        started = time.perf_counter()
        quiet(fit_masks, params, features, stage1, masks, root / "fit_masks")
        timings["s2"] = time.perf_counter() - started

    def run_s3(name: str, extra: list[str], use_masks: bool) -> None:
        p = load_params(args.params, base + extra)
        out = root / name
        t0 = time.perf_counter()
        quiet(
            distill,
            p,
            features,
            stage1,
            masks if use_masks else None,
            out / "student.pt",
            out / "distill",
        )
        timings[name] = time.perf_counter() - t0
        acc[name] = test_accuracy(p, features, out / "student.pt", out)

    budget = params.train.epochs + params.distill.epochs
    if not args.only_quirks:
        run_s3("mst", [], True)
        same_budget = [f"distill.epochs={budget}", "distill.student_init=scratch"]
        run_s3("none", ["distill.method=none", *same_budget], False)
        run_s3("kd_mm", ["distill.method=kd", "distill.teacher=mm", *same_budget], False)
        run_s3("kd_cm", ["distill.method=kd", "distill.teacher=cm", *same_budget], False)
        if seed not in MM_ALONE:
            MM_ALONE[seed] = alone(params, features, "mm", budget)  # the same for both directions
        acc["mm_teacher"] = MM_ALONE[seed]
    if args.quirks or args.only_quirks:
        for name, overrides in QUIRKS.items():
            run_s3(name, overrides, name.startswith("mst"))
    print(
        f"# {direction} seed {seed}: "
        + ", ".join(f"{k} {v:.2f}" for k, v in acc.items())
        + "  | seconds: "
        + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
        flush=True,
    )
    return acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--directions", nargs="+", default=["image", "audio"])
    parser.add_argument("--workdir", type=Path, default=Path("bench/runs"))
    parser.add_argument("--quirks", action="store_true", help="also measure each reference quirk switched off")
    parser.add_argument("--only-quirks", action="store_true", help="only the quirk variants (reuses S1 and S2)")
    args = parser.parse_args()
    setup_logging(level=logging.WARNING)

    params = load_params(args.params)
    features = args.workdir / "features.h5"
    if not features.exists():
        quiet(prepare, params, features)
    runs = {d: [run_direction(args, d, seed, features) for seed in args.seeds] for d in args.directions}
    if not args.only_quirks and set(runs) == {"image", "audio"}:
        for direction, other in (("image", "audio"), ("audio", "image")):
            for mine, theirs in zip(runs[direction], runs[other]):
                mine["unimodal"] = theirs["none"]
    table = {
        direction: {
            name: [
                round(statistics.mean(r[name] for r in rs), 2),
                round(statistics.stdev(r[name] for r in rs), 2) if len(rs) > 1 else 0.0,
            ]
            for name in rs[0]
        }
        for direction, rs in runs.items()
    }
    print("| direction | " + " | ".join(table[args.directions[0]]) + " |")
    for direction, row in table.items():
        print(f"| {direction} | " + " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in row.values()) + " |")
    print(json.dumps(table))


if __name__ == "__main__":
    sys.exit(main())
