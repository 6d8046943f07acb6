"""Why a feature-based student sits at chance: the scale of its penultimate features and of its logits.

For each student checkpoint given, on the first 512 validation rows of its split group: the share of zero
penultimate units (after ReLU), the units that never fire, the mean feature norm and the mean over classes of
the logits' standard deviation across samples (near 0: the student predicts the same for every input, CE stays
at ln C). Used for the RKD rows of the README (issue 11): RKD's relation terms do not change when the student's
features are scaled, so nothing stops them from shrinking while CE is drowned out.

    python bench/feature_collapse.py models/dev/image-s0/rkd-cm.pt models/dev/image-s0/none.pt [--features F]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mstcli.data.store import FeatureFile
from mstcli.engine.checkpoints import StudentCheckpoint
from mstcli.engine.splits import load_splits
from mstcli.models.taps import PENULTIMATE, FeatureTap
from mstcli.models.trio import ModalNet, RunSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("students", type=Path, nargs="+")
    parser.add_argument("--features", type=Path, default=Path("data/features/avdigits.h5"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    features = FeatureFile.open(args.features)
    print("| student | zero units | dead units | feature norm | logit std across samples |")
    print("|---|---:|---:|---:|---:|")
    for path in args.students:
        checkpoint = StudentCheckpoint.load(path)
        spec = RunSpec.from_dict(checkpoint.spec)
        student = ModalNet(spec.build_student(), (spec.student,))
        student.net.load_state_dict(checkpoint.state)
        student.eval()
        group = checkpoint.inputs["split_group"]
        val = load_splits(features, group, [spec.student], torch.device("cpu"), names=("val",))["val"]
        tap = FeatureTap(student.net)
        with torch.no_grad():
            batch = val.batch(torch.arange(min(512, len(val))))
            logits = student(batch.inputs)
        x = tap[PENULTIMATE]
        dead = int(((x > 0).sum(0) == 0).sum())
        print(
            f"| {path} | {(x == 0).float().mean():.1%} | {dead}/{x.shape[1]} | {x.norm(dim=1).mean():.3g} |"
            f" {logits.std(0).mean():.3g} |"
        )


if __name__ == "__main__":
    main()
