"""``mst bench speed``: every distillation method's epoch time next to the student alone's, in one run, on the
same data, so the ratios compare like with like.

S1 and S2 are trained once (``--s1-epochs``, ``--s2-epochs``; their epoch times are reported too) into a temporary
folder: a method's epoch costs the same whether its teachers are good or not. Then every method is set up as
``mst distill`` sets it up (its banks and caches are built there: ``setup_s``) and the methods take turns, one
epoch each per round, so that a machine that slows down mid-run slows every method alike. The first round is a
warm-up; a method's figure is the median of its epochs in the other rounds.

Peak memory is the process's resident-set peak on the CPU (it includes S1 and S2, which run first, so it is an
upper bound for every method) and, on a GPU, each method's own peak of allocated memory.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from mstcli.config import Params
from mstcli.errors import UserError


def _with(params: Params, section: str, **changes: Any) -> Params:
    return dataclasses.replace(params, **{section: dataclasses.replace(getattr(params, section), **changes)})


def _median_epoch_s(log_dir: Path) -> float:
    from mstcli.engine.logbook import read_curves

    times = [row["epoch_s"] for row in read_curves(log_dir)]
    return statistics.median(times[1:] if len(times) > 1 else times)


def _peak_rss_mb() -> float:
    """The process's resident-set peak so far (Linux reports kilobytes, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def measure(
    params: Params,
    features: Path,
    rounds: int = 3,
    s1_epochs: int = 1,
    s2_epochs: int = 1,
    methods: list[str] | None = None,
) -> dict:
    """The figures of ``mst bench speed`` as one JSON-ready dict; ``methods`` narrows the methods timed (the
    student alone, ``none``, is always timed: every ratio is against it)."""
    import torch

    from mstcli.engine.loop import LoopConfig, run_epochs
    from mstcli.methods.registry import ENTRIES
    from mstcli.stages.distill import setup_distillation
    from mstcli.stages.fit_masks import fit_masks
    from mstcli.stages.train import train
    from mstcli.ui import progress_bar

    if not features.is_file():
        raise UserError(f"feature file not found: {features} (run `mst prepare` first)")
    if rounds < 2:
        raise UserError("--rounds must be at least 2 (the first is a warm-up)")
    known = [entry.name for entry in ENTRIES]
    unknown = [name for name in methods or [] if name not in known]
    if unknown:
        raise UserError(f"--method: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    timed = [entry for entry in ENTRIES if not methods or entry.name in methods or entry.name == "none"]
    params = _with(params, "common", run="bench/speed")
    params = _with(params, "train", epochs=s1_epochs)
    params = _with(params, "fit_masks", epochs=s2_epochs)
    with tempfile.TemporaryDirectory(prefix="mst-bench-speed-") as tmp:
        work = Path(tmp)
        stage1, masks = work / "stage1.pt", work / "masks.pt"
        train(params, features, stage1, work / "s1", restart=True)
        fit_masks(params, features, stage1, masks, work / "s2", restart=True)
        stage_epochs = {"s1_epoch_s": _median_epoch_s(work / "s1"), "s2_epoch_s": _median_epoch_s(work / "s2")}

        setups, setup_s = {}, {}
        for entry in timed:
            started = time.perf_counter()
            setups[entry.name] = setup_distillation(
                _with(params, "distill", method=entry.name), features, stage1, masks
            )
            setup_s[entry.name] = time.perf_counter() - started
        epochs: dict[str, list[float]] = {name: [] for name in setups}
        gpu_peak_mb: dict[str, float] = {}
        batch_size = params.distill.batch_size
        with progress_bar("timing method epochs", rounds * len(setups), transient=True) as advance:
            for r in range(rounds):
                for name, setup in setups.items():
                    config = LoopConfig(
                        1, batch_size, setup.device, params.common.precision, order_seed=r, resume_every=0
                    )
                    if setup.device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(setup.device)
                    started = time.perf_counter()
                    run_epochs(setup.task, setup.train, config)
                    epochs[name].append(time.perf_counter() - started)
                    if setup.device.type == "cuda":
                        peak = torch.cuda.max_memory_allocated(setup.device) / 2**20
                        gpu_peak_mb[name] = round(max(peak, gpu_peak_mb.get(name, 0.0)), 1)
                    advance(1)
        n_train = len(setups["none"].train.labels)
        device = setups["none"].device

    per_epoch = {name: statistics.median(times[1:]) for name, times in epochs.items()}
    alone = per_epoch["none"]
    kinds = {entry.name: entry.teacher_training for entry in ENTRIES}
    figures = {
        name: {
            "seconds_per_epoch": round(seconds, 6),
            "over_student": round(seconds / alone, 3),
            "teacher": kinds[name],
            "setup_s": round(setup_s[name], 3),
            **({"gpu_peak_mb": gpu_peak_mb[name]} if name in gpu_peak_mb else {}),
        }
        for name, seconds in per_epoch.items()
    }
    frozen = [m["over_student"] for name, m in figures.items() if m["teacher"] == "frozen" and name != "mst"]
    return {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "dataset": params.common.dataset,
        "student": params.common.student,
        "teacher": params.distill.teacher,
        "n_train": n_train,
        "batch_size": batch_size,
        "rounds": rounds,
        "student_epoch_s": round(alone, 6),
        **{key: round(value, 4) for key, value in stage_epochs.items()},
        "models": None if params.models.all_auto else dataclasses.asdict(params.models),
        "peak_rss_mb": _peak_rss_mb(),
        "s3_over_student": figures["mst"]["over_student"] if "mst" in figures else None,
        "frozen_teacher_median_over_student": round(statistics.median(frozen), 3) if frozen else None,
        "frozen_teacher_max_over_student": round(max(frozen), 3) if frozen else None,
        "methods": figures,
    }
