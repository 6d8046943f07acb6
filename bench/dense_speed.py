"""Seconds and peak memory of one S3 epoch on NYU-Depth-V2-shaped data, with the float16 expert bank and without.

Random frames (``--frames`` RGB-D frames of ``--height`` x ``--width``, 41 classes, void included; time does not
depend on the values) go through the stages' own code: S1 and S2 for ``--epochs`` epochs each in this process,
then S3 twice, each in a fresh child process so that its peak resident memory (``ru_maxrss``) is its own:
``distill.bank=true`` (the 4 specialized teachers' per-pixel logits computed once, kept as float16) and
``distill.bank=false`` (recomputed every batch, as the reference). An S3 epoch's seconds are the ``epoch_s`` of
its curves (training and validation), the median of the epochs after the first. The last line is one JSON object.

    OMP_NUM_THREADS=1 python bench/dense_speed.py --height 96 --width 128 --frames 14   # 2-core CPU, real widths
    python bench/dense_speed.py --height 480 --width 640 --frames 40 --batch-size 6   # the real frame size, GPU
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mstcli.config import load_params
from mstcli.data.sources.nyudepth import CLASS_NAMES
from mstcli.data.store import FeatureFile, FeatureWriter
from mstcli.engine.logbook import read_curves
from mstcli.ui import setup_logging

EXPERTS = 4


def synthetic_features(path: Path, frames: int, height: int, width: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with FeatureWriter(
        path,
        dataset="nyudepth",
        modalities={"rgb": (3, height, width), "depth": (1, height, width)},
        num_samples=frames,
        class_names=CLASS_NAMES,
        params={"synthetic": True},
        label_shape=(height, width),
    ) as writer:
        writer.write("rgb", 0, rng.random((frames, 3, height, width), dtype=np.float32))
        writer.write("depth", 0, rng.random((frames, 1, height, width), dtype=np.float32))
        writer.write_label_rows(0, rng.integers(0, len(CLASS_NAMES), (frames, height, width)).astype(np.uint8))
    return path


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux carries that over from the parent
    through fork and exec, so a child would report the parent's S2 peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def epoch_seconds(log_dir: Path) -> float:
    times = [row["epoch_s"] for row in read_curves(log_dir)]
    return statistics.median(times[1:] if len(times) > 1 else times)


def overrides(args: argparse.Namespace) -> list[str]:
    # no resume states: writing S2's MaskNets and their Adam state (4.3 GB at VGG16 widths) is not what is timed
    sets = ["common.run=speed", "common.resume_every=0", f"common.student={args.student}"]
    sets += [f"train.width_divisor={args.divisor}"]
    for stage in ("train", "fit_masks", "distill"):
        sets += [f"{stage}.epochs={args.epochs}", f"{stage}.batch_size={args.batch_size}"]
    return sets + [f"fit_masks.hidden_dim_factor={args.factor}", *args.overrides]


def s3_child(args: argparse.Namespace) -> None:
    """One S3 run (``--child bank|recompute``); prints its epoch seconds and peak RSS as JSON."""
    from mstcli.stages.distill import distill

    workdir = args.workdir
    params = load_params(None, [*overrides(args), f"distill.bank={'true' if args.child == 'bank' else 'false'}"])
    started = time.perf_counter()
    distill(params, workdir / "features.h5", workdir / "stage1.pt", workdir / "masks.pt",
            workdir / f"{args.child}.pt", workdir / args.child)  # fmt: skip
    print(json.dumps({
        "epoch_s": round(epoch_seconds(workdir / args.child), 3),
        "wall_s": round(time.perf_counter() - started, 2),
        "peak_rss_mb": peak_rss_mb(),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=14, help="frames in all (60%% train)")
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--divisor", type=int, default=1, help="train.width_divisor (1: VGG16 widths)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per stage (S3: the first is a warm-up)")
    parser.add_argument("--batch-size", type=int, default=4, help="batch size (reference: 6)")
    parser.add_argument("--factor", type=int, default=2, help="MaskNet hidden_dim_factor (reference: 2)")
    parser.add_argument("--student", default="rgb")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], help="params override")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--reuse", action="store_true", help="keep --workdir's data, S1 and S2; time S3 only")
    parser.add_argument("--child", choices=("bank", "recompute"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup_logging(level=logging.WARNING)
    if args.child:
        return s3_child(args)

    from mstcli.stages.fit_masks import fit_masks
    from mstcli.stages.train import train

    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dense_speed-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    features = args.workdir / "features.h5"
    if not (args.reuse and features.exists()):
        synthetic_features(features, args.frames, args.height, args.width)
    params = load_params(None, overrides(args))
    walls: dict[str, float | None] = {"s1": None, "s2": None}  # None: reused from an earlier run
    reuse = args.reuse and (args.workdir / "masks.pt").exists()  # S1 and S2 of an earlier run of the same sizes
    for name, stage, paths in () if reuse else (
        ("s1", train, (features, args.workdir / "stage1.pt", args.workdir / "s1")),
        ("s2", fit_masks, (features, args.workdir / "stage1.pt", args.workdir / "masks.pt", args.workdir / "s2")),
    ):
        started = time.perf_counter()
        stage(params, *paths)
        walls[name] = time.perf_counter() - started
        print(f"{name}: {walls[name]:.1f} s", file=sys.stderr, flush=True)
    runs = {}
    for child in ("bank", "recompute"):
        command = [sys.executable, __file__, "--child", child, "--workdir", str(args.workdir)]
        for flag in ("frames", "height", "width", "divisor", "epochs", "batch_size", "factor", "student"):
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        command += [part for item in args.overrides for part in ("-S", item)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        runs[child] = json.loads(out.strip().splitlines()[-1])
        print(f"s3 {child}: {runs[child]}", file=sys.stderr, flush=True)
    n_train = len(FeatureFile.open(features).split_indices(0)["train"])
    bank_bytes = 2 * EXPERTS * n_train * len(CLASS_NAMES) * args.height * args.width
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(json.dumps({
        "device": device,
        "torch": torch.__version__,
        "frame": f"{args.height}x{args.width}",
        "width_divisor": args.divisor,
        "hidden_dim_factor": args.factor,
        "n_train": n_train,
        "batch_size": args.batch_size,
        **{f"{name}_wall_s": None if wall is None else round(wall, 1) for name, wall in walls.items()},
        "s3_bank_epoch_s": runs["bank"]["epoch_s"],
        "s3_recompute_epoch_s": runs["recompute"]["epoch_s"],
        "bank_speedup": round(runs["recompute"]["epoch_s"] / runs["bank"]["epoch_s"], 2),
        "s3_bank_wall_s": runs["bank"]["wall_s"],
        "s3_recompute_wall_s": runs["recompute"]["wall_s"],
        "s3_bank_peak_rss_mb": runs["bank"]["peak_rss_mb"],
        "s3_recompute_peak_rss_mb": runs["recompute"]["peak_rss_mb"],
        "s3_bank_peak_cuda_mb": runs["bank"]["peak_cuda_mb"],
        "s3_recompute_peak_cuda_mb": runs["recompute"]["peak_cuda_mb"],
        "bank_mb_float16": round(bank_bytes / 2**20, 1),
        "bank_mb_float16_per_frame": round(bank_bytes / n_train / 2**20, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
