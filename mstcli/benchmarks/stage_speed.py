"""``mst bench stages``: seconds per epoch of S1, S2, S3 and the student alone, with the expert bank and with
recomputation.

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
``--json`` prints one JSON object (keys: device, n_train, s1_epoch_s, s2_epoch_s, s3_epoch_s, student_epoch_s,
s3_over_student, bank_speedup, ...).

    mst bench stages --n 70000 --spec-size 112 --batch-size 512            # AV-MNIST size, GPU
    mst bench stages --n 6000 --spec-size 32 --batch-size 128 --factor 16  # 2-core CPU
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mstcli.benchmarks.synthetic import synthetic_features


def epoch_seconds(log_dir: Path) -> float:
    """The median ``epoch_s`` of a stage's curves, the first epoch (a warm-up) left out when there are more."""
    from mstcli.engine.logbook import read_curves

    times = [row["epoch_s"] for row in read_curves(log_dir)]
    return statistics.median(times[1:] if len(times) > 1 else times)


def interleaved_rounds(mst_params, student_params, features: Path, stage1: Path, masks: Path,
                       rounds: int) -> list[tuple[float, float]]:  # fmt: skip
    """(S3 epoch s, student epoch s) of ``rounds`` rounds, each one epoch of either, alternated in this process."""
    from mstcli.engine.loop import LoopConfig, run_epochs
    from mstcli.stages.distill import setup_distillation

    if rounds <= 0:
        return []
    setups = [setup_distillation(p, features, stage1, masks) for p in (mst_params, student_params)]
    out = []
    for r in range(rounds):
        times = []
        for setup, p in zip(setups, (mst_params, student_params), strict=True):
            config = LoopConfig(1, p.distill.batch_size, setup.device, p.common.precision, order_seed=r, resume_every=0)
            started = time.perf_counter()
            run_epochs(setup.task, setup.train, config)
            times.append(time.perf_counter() - started)
        out.append((times[0], times[1]))
    return out


def _timed(label: str, fn: Callable[..., Any], *args: Any) -> float:
    """Run a stage; returns its whole wall time (set-up, caches and all epochs)."""
    from mstcli.ui import logger

    started = time.perf_counter()
    fn(*args)
    wall = time.perf_counter() - started
    logger().info(f"{label}: {wall:.2f} s in all")
    return wall


def measure(
    params_file: Path | None = None,
    overrides: list[str] | None = None,
    n: int = 6000,
    spec_size: int = 32,
    features: Path | None = None,
    epochs: int = 3,
    batch_size: int = 512,
    factor: int = 2,
    student: str = "image",
    s2_recompute: bool = False,
    workdir: Path | None = None,
    interleave: int = 5,
) -> dict[str, Any]:
    """The figures of ``mst bench stages`` as one JSON-ready dict."""
    import torch

    from mstcli.config import load_params
    from mstcli.data.store import FeatureFile
    from mstcli.stages.distill import distill
    from mstcli.stages.fit_masks import fit_masks
    from mstcli.stages.train import train

    workdir = workdir or Path(tempfile.mkdtemp(prefix="stage_speed-"))
    workdir.mkdir(parents=True, exist_ok=True)
    common = [f"common.student={student}", "common.run=speed"]
    keys = [f"{stage}.{key}" for stage in ("train", "fit_masks", "distill") for key in ("epochs", "batch_size")]
    values = [epochs, batch_size] * 3
    base = [*common, *(f"{k}={v}" for k, v in zip(keys, values, strict=True)), f"fit_masks.hidden_dim_factor={factor}"]
    base += list(overrides or [])

    def params(*extra: str):
        return load_params(params_file, [*base, *extra])

    p = params()  # a bad override stops here, before the feature file is written
    features = features or synthetic_features(workdir / "features.h5", n, spec_size)
    device = "cuda" if p.common.device == "auto" and torch.cuda.is_available() else p.common.device
    device = "cpu" if device == "auto" else device
    stage1, masks = workdir / "stage1.pt", workdir / "masks.pt"
    walls: dict[str, float] = {}
    walls["s1"] = _timed("S1", train, p, features, stage1, workdir / "s1")
    walls["s2"] = _timed("S2", fit_masks, p, features, stage1, masks, workdir / "s2")
    if s2_recompute:
        walls["s2_recompute"] = _timed("S2 recompute", fit_masks, params("fit_masks.cache_mb=0"), features, stage1,
                                       workdir / "masks-r.pt", workdir / "s2_recompute")  # fmt: skip
    for name, extra in {
        "s3": [],
        "s3_recompute": ["distill.bank=false"],
        "student": ["distill.method=none"],
    }.items():
        walls[name] = _timed(name, distill, params(*extra), features, stage1, masks, workdir / f"{name}.pt",
                             workdir / name)  # fmt: skip

    per_epoch = {name: epoch_seconds(workdir / name) for name in walls}
    rounds = interleaved_rounds(params(), params("distill.method=none"), features, stage1, masks, interleave)
    n_train = len(FeatureFile.open(features).split_indices(p.common.seed)["train"])
    device_name = (
        torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
    )
    summary: dict[str, Any] = {
        "device": device_name,
        "torch": torch.__version__,
        "precision": p.common.precision,
        "compile": p.common.compile,
        "n_train": n_train,
        "batch_size": batch_size,
        "hidden_dim_factor": factor,
        "student": student,
        **{f"{name}_epoch_s": round(seconds, 4) for name, seconds in per_epoch.items()},
        "s3_over_student": round(per_epoch["s3"] / per_epoch["student"], 3),
        "s3_over_student_interleaved": round(statistics.median(r[0] / r[1] for r in rounds), 3) if rounds else None,
        "interleaved_epoch_s": [[round(a, 4), round(b, 4)] for a, b in rounds],
        "bank_speedup": round(per_epoch["s3_recompute"] / per_epoch["s3"], 2),
        "s3_setup_s": round(walls["s3"] - epochs * per_epoch["s3"], 2),
        "wall_s": {name: round(wall, 2) for name, wall in walls.items()},
    }
    if "s2_recompute" in per_epoch:
        summary["cache_speedup"] = round(per_epoch["s2_recompute"] / per_epoch["s2"], 2)
    return summary
