"""``mst bench resume-cost``: what resume costs, the seconds to write one end-of-epoch resume state of S1, S2 and
S3, against the epoch itself.

Runs ``mst train``, ``mst fit-masks`` and ``mst distill`` (MST-Distill) for ``--epochs`` epochs each through the
stages' own code on random features with AV-MNIST's layout (``--n`` pairs of 1x28x28 images and 1xSxS
spectrograms; time does not depend on the values), timing every write of the resume state (engine/resume.py) and
reading each epoch's own time from the curves. The resume state's size does not depend on ``--n`` (it holds the
nets, the optimizer and the method's state), the epoch time grows with it: ``--scale-to ROWS`` adds the epoch time
scaled linearly to ROWS training rows (an extrapolation, reported as such).

    mst bench resume-cost                                   # AV-Digits' default size and settings
    mst bench resume-cost --n 3000 --spec-size 112 --batch-size 512 --factor 2 --scale-to 42000
                                                            # AV-MNIST size, the reference's MaskNets

The figures (``--json``: one JSON object): per stage, save_s (median), state_mb, epoch_s, share (save / epoch).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from mstcli.benchmarks.synthetic import synthetic_features


def measure(
    n: int = 6000,
    spec_size: int = 32,
    batch_size: int = 128,
    factor: int = 16,
    epochs: int = 2,
    device: str = "auto",
    scale_to: int = 0,
) -> dict[str, Any]:
    """The figures of ``mst bench resume-cost`` as one JSON-ready dict."""
    from mstcli.config import load_params
    from mstcli.engine import resume
    from mstcli.engine.logbook import read_curves
    from mstcli.stages.distill import distill
    from mstcli.stages.fit_masks import fit_masks
    from mstcli.stages.train import train
    from mstcli.ui import logger

    e, b = epochs, batch_size
    params = load_params(
        None,
        [
            f"common.device={device}",
            f"train.epochs={e}",
            f"train.batch_size={b}",
            f"fit_masks.epochs={e}",
            f"fit_masks.batch_size={b}",
            f"fit_masks.hidden_dim_factor={factor}",
            f"distill.epochs={e}",
            f"distill.batch_size={b}",
        ],
    )
    saves: list[tuple[str, float, int]] = []
    original = resume.ResumeStore.save

    def timed_save(store: resume.ResumeStore, state) -> None:
        started = time.perf_counter()
        original(store, state)
        saves.append((state.stage, time.perf_counter() - started, store.path.stat().st_size))

    resume.ResumeStore.save = timed_save  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            features = synthetic_features(root / "features.h5", n, spec_size)
            report: dict[str, Any] = {"n": n, "n_train": int(0.6 * n), "spec_size": spec_size, "batch_size": b}
            runs = {
                "s1": lambda: train(params, features, root / "stage1.pt", root / "s1"),
                "s2": lambda: fit_masks(params, features, root / "stage1.pt", root / "masks.pt", root / "s2"),
                "s3": lambda: distill(
                    params, features, root / "stage1.pt", root / "masks.pt", root / "student.pt", root / "s3"
                ),
            }
            for name, run in runs.items():
                saves.clear()
                run()
                epoch_s = statistics.median(row["epoch_s"] for row in read_curves(root / name))
                save_s = statistics.median(s for _, s, _ in saves)
                entry = {
                    "save_s": round(save_s, 3),
                    "state_mb": round(max(size for _, _, size in saves) / 2**20, 1),
                    "epoch_s": round(epoch_s, 2),
                    "share": round(save_s / epoch_s, 4),
                }
                if scale_to:
                    scaled = epoch_s * scale_to / report["n_train"]
                    entry.update({"epoch_s_scaled": round(scaled, 1), "share_scaled": round(save_s / scaled, 4)})
                report[name] = entry
                logger().info(f"{name}: {entry}")
    finally:
        resume.ResumeStore.save = original  # type: ignore[method-assign]
    return report
