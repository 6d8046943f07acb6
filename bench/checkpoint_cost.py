"""What resume costs: seconds to write one end-of-epoch resume state of S1, S2 and S3, against the epoch itself.

Runs ``mst train``, ``mst fit-masks`` and ``mst distill`` (MST-Distill) for ``--epochs`` epochs each through the
stages' own code on random features with AV-MNIST's layout (``--n`` pairs of 1x28x28 images and 1xSxS
spectrograms; time does not depend on the values), timing every write of the resume state (engine/resume.py) and
reading each epoch's own time from the curves. The resume state's size does not depend on ``--n`` (it holds the
nets, the optimizer and the method's state), the epoch time grows with it: ``--scale-to ROWS`` adds the epoch time
scaled linearly to ROWS training rows (an extrapolation, reported as such).

    python bench/checkpoint_cost.py                                   # AV-Digits' default size and settings
    python bench/checkpoint_cost.py --n 3000 --spec-size 112 --batch-size 512 --factor 2 --scale-to 42000
                                                                      # AV-MNIST size, the reference's MaskNets

The last line is one JSON object: per stage, save_s (median), state_mb, epoch_s, share (save / epoch).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stage_speed import synthetic_features  # noqa: E402

from mstcli.config import load_params  # noqa: E402
from mstcli.engine import resume  # noqa: E402
from mstcli.stages.distill import distill  # noqa: E402
from mstcli.stages.fit_masks import fit_masks  # noqa: E402
from mstcli.stages.train import train  # noqa: E402
from mstcli.engine.logbook import read_curves  # noqa: E402
from mstcli.ui import setup_logging  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--spec-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--factor", type=int, default=16, help="fit_masks.hidden_dim_factor")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--scale-to", type=int, default=0, help="also report the epoch scaled to this many train rows")
    args = parser.parse_args()
    setup_logging(level=logging.WARNING)

    saves: list[tuple[str, float, int]] = []
    original = resume.ResumeStore.save

    def timed_save(store: resume.ResumeStore, state) -> None:
        started = time.perf_counter()
        original(store, state)
        saves.append((state.stage, time.perf_counter() - started, store.path.stat().st_size))

    resume.ResumeStore.save = timed_save
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        features = synthetic_features(root / "features.h5", args.n, args.spec_size)
        e, b = args.epochs, args.batch_size
        params = load_params(
            None,
            [
                f"common.device={args.device}",
                f"train.epochs={e}",
                f"train.batch_size={b}",
                f"fit_masks.epochs={e}",
                f"fit_masks.batch_size={b}",
                f"fit_masks.hidden_dim_factor={args.factor}",
                f"distill.epochs={e}",
                f"distill.batch_size={b}",
            ],
        )
        report = {"n": args.n, "n_train": int(0.6 * args.n), "spec_size": args.spec_size, "batch_size": b}
        runs = {
            "s1": lambda: train(params, features, root / "stage1.pt", root / "s1"),
            "s2": lambda: fit_masks(params, features, root / "stage1.pt", root / "masks.pt", root / "s2"),
            "s3": lambda: distill(
                params,
                features,
                root / "stage1.pt",
                root / "masks.pt",
                root / "student.pt",
                root / "s3",
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
            if args.scale_to:
                scaled = epoch_s * args.scale_to / report["n_train"]
                entry.update({"epoch_s_scaled": round(scaled, 1), "share_scaled": round(save_s / scaled, 4)})
            report[name] = entry
            print(f"# {name}: {entry}", file=sys.stderr, flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
