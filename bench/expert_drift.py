"""How far S2 moves the specialized teachers towards the student, on the runs of bench/distill_table.py.

For each run folder (``<direction>-s<seed>`` under ``--workdir``) it prints, on the validation split: the KL
(tau = 4, tau^2-scaled, as in S2) from the student to each raw S1 teacher and to each specialized teacher
(cumulative masks, as S3 uses them), and the accuracy of each. This is the evidence behind the README's
explanation of why MST-Distill trails plain KD on AV-Digits' audio student.

    python bench/expert_drift.py [--workdir bench/runs]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mstcli.data.store import FeatureFile
from mstcli.engine.splits import load_splits
from mstcli.methods.losses import kd_per_sample
from mstcli.engine.checkpoints import MasksCheckpoint, Stage1Checkpoint
from mstcli.methods.mst.experts import SpecializedTeachers, masks_from_entries
from mstcli.models.trio import Trio


@torch.no_grad()
def drift(run: Path, features: FeatureFile, seed: int) -> dict:
    trio = Trio.from_checkpoint(Stage1Checkpoint.load(run / "stage1.pt")).eval()
    masks = masks_from_entries(MasksCheckpoint.load(run / "masks.pt").masks)
    experts = SpecializedTeachers({"mm": trio.mm, "cm": trio.cm}, masks, "cumulative")
    val = load_splits(features, seed, list(trio.spec.modalities), torch.device("cpu"), names=("val",))["val"]
    student = trio.student(val.inputs)
    outputs = {f"raw {k}": trio.teacher(k)(val.inputs) for k in ("mm", "cm")}
    outputs.update(zip(experts.names, experts(val.inputs)))
    return {
        name: {
            "kl_to_student": round(float(kd_per_sample(z, student, 4.0).mean()), 4),
            "val_acc": round(float((z.argmax(1) == val.labels).float().mean()) * 100, 2),
        }
        for name, z in outputs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("bench/runs"))
    args = parser.parse_args()
    features = FeatureFile.open(args.workdir / "features.h5")
    report = {}
    for run in sorted(p for p in args.workdir.iterdir() if (p / "masks.pt").exists()):
        seed = int(run.name.rsplit("-s", 1)[1])
        report[run.name] = drift(run, features, seed)
        print(
            run.name,
            "  ".join(f"{k}: KL {v['kl_to_student']:.3f} acc {v['val_acc']:.1f}" for k, v in report[run.name].items()),
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
