"""``mst bench dense``: seconds and peak memory of one S3 epoch on NYU-Depth-V2-shaped data, with the float16
expert bank and without.

Random frames (``--frames`` RGB-D frames of ``--height`` x ``--width``, 41 classes, void included; time does not
depend on the values) go through the stages' own code: S1 and S2 for ``--epochs`` epochs each in this process,
then S3 twice, each in a fresh child process (``python -m mstcli bench dense --child ...``) so that its peak
resident memory is its own: ``distill.bank=true`` (the 4 specialized teachers' per-pixel logits computed once,
kept as float16) and ``distill.bank=false`` (recomputed every batch, as the reference). An S3 epoch's seconds are
the ``epoch_s`` of its curves (training and validation), the median of the epochs after the first. ``--json``
prints the figures as one JSON object.

    OMP_NUM_THREADS=1 mst bench dense --height 96 --width 128 --frames 14   # 2-core CPU, real widths
    mst bench dense --height 480 --width 640 --frames 40 --batch-size 6   # the real frame size, GPU
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

EXPERTS = 4
Child = Literal["bank", "recompute"]
CHILDREN: tuple[Child, ...] = ("bank", "recompute")


@dataclass(frozen=True)
class DenseSizes:
    """What ``mst bench dense`` measures at: the data's size and the stages' schedule."""

    frames: int = 14
    height: int = 96
    width: int = 128
    divisor: int = 1
    epochs: int = 2
    batch_size: int = 4
    factor: int = 2
    student: str = "rgb"
    overrides: list[str] = field(default_factory=list)

    def settings(self) -> list[str]:
        # no resume states: writing S2's MaskNets and their Adam state (4.3 GB at VGG16 widths) is not what is timed
        sets = ["common.run=speed", "common.resume_every=0", f"common.student={self.student}"]
        sets += [f"train.width_divisor={self.divisor}"]
        for stage in ("train", "fit_masks", "distill"):
            sets += [f"{stage}.epochs={self.epochs}", f"{stage}.batch_size={self.batch_size}"]
        return sets + [f"fit_masks.hidden_dim_factor={self.factor}", *self.overrides]

    def options(self) -> list[str]:
        """The same sizes as options of ``mst bench dense`` (for the child processes)."""
        out: list[str] = []
        for name in ("frames", "height", "width", "divisor", "epochs", "batch_size", "factor", "student"):
            out += [f"--{name.replace('_', '-')}", str(getattr(self, name))]
        return out + [part for item in self.overrides for part in ("-S", item)]


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux carries that over from the parent
    through fork and exec, so a child would report the parent's S2 peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def epoch_seconds(log_dir: Path) -> float:
    from mstcli.engine.logbook import read_curves

    times = [row["epoch_s"] for row in read_curves(log_dir)]
    return statistics.median(times[1:] if len(times) > 1 else times)


def s3_child(child: Child, sizes: DenseSizes, workdir: Path, params_file: Path | None = None) -> dict[str, Any]:
    """One S3 run (``--child bank|recompute``) on the S1 and S2 in ``workdir``: its epoch seconds and peaks."""
    import torch

    from mstcli.config import load_params
    from mstcli.stages.distill import distill

    params = load_params(params_file, [*sizes.settings(), f"distill.bank={'true' if child == 'bank' else 'false'}"])
    started = time.perf_counter()
    distill(params, workdir / "features.h5", workdir / "stage1.pt", workdir / "masks.pt",
            workdir / f"{child}.pt", workdir / child)  # fmt: skip
    return {
        "epoch_s": round(epoch_seconds(workdir / child), 3),
        "wall_s": round(time.perf_counter() - started, 2),
        "peak_rss_mb": peak_rss_mb(),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
    }


def _run_child(child: Child, sizes: DenseSizes, workdir: Path, params_file: Path | None) -> dict[str, Any]:
    from mstcli.errors import UserError

    command = [sys.executable, "-m", "mstcli", "bench", "dense", "--child", child, "--workdir", str(workdir)]
    command += sizes.options() + (["-p", str(params_file)] if params_file is not None else [])
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise UserError(f"S3 ({child}) failed in its child process (exit code {done.returncode}):\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(sizes: DenseSizes, workdir: Path | None = None, reuse: bool = False,
            params_file: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """The figures of ``mst bench dense`` as one JSON-ready dict. With ``reuse``, the data, S1 and S2 already in
    ``workdir`` (of an earlier run of the same sizes) are kept and S3 alone is timed."""
    import torch

    from mstcli.benchmarks.synthetic import synthetic_frames
    from mstcli.config import load_params
    from mstcli.data.sources.nyudepth import CLASS_NAMES
    from mstcli.data.store import FeatureFile
    from mstcli.stages.fit_masks import fit_masks
    from mstcli.stages.train import train
    from mstcli.ui import logger

    workdir = workdir or Path(tempfile.mkdtemp(prefix="dense_speed-"))
    workdir.mkdir(parents=True, exist_ok=True)
    params = load_params(params_file, sizes.settings())
    features = workdir / "features.h5"
    if not (reuse and features.exists()):
        synthetic_frames(features, sizes.frames, sizes.height, sizes.width)
    walls: dict[str, float | None] = {"s1": None, "s2": None}  # None: reused from an earlier run
    reused = reuse and (workdir / "masks.pt").exists()  # S1 and S2 of an earlier run of the same sizes
    for name, stage, paths in () if reused else (
        ("s1", train, (features, workdir / "stage1.pt", workdir / "s1")),
        ("s2", fit_masks, (features, workdir / "stage1.pt", workdir / "masks.pt", workdir / "s2")),
    ):
        started = time.perf_counter()
        stage(params, *paths)
        walls[name] = time.perf_counter() - started
        logger().info(f"{name}: {walls[name]:.1f} s")
    runs = {}
    for child in CHILDREN:
        runs[child] = _run_child(child, sizes, workdir, params_file)
        logger().info(f"s3 {child}: {runs[child]}")
    n_train = len(FeatureFile.open(features).split_indices(0)["train"])
    bank_bytes = 2 * EXPERTS * n_train * len(CLASS_NAMES) * sizes.height * sizes.width
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    return {
        "device": device,
        "torch": torch.__version__,
        "frame": f"{sizes.height}x{sizes.width}",
        "width_divisor": sizes.divisor,
        "hidden_dim_factor": sizes.factor,
        "n_train": n_train,
        "batch_size": sizes.batch_size,
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
    }
