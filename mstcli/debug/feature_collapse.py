"""``mst debug collapse``: why a feature-based student sits at chance, from the scale of its penultimate features
and of its logits.

For each student checkpoint given, on the first 512 validation rows of its split group: the share of zero
penultimate units (after ReLU), the units that never fire, the mean feature norm and the mean over classes of
the logits' standard deviation across samples (near 0: the student predicts the same for every input, CE stays
at ln C). Used for the RKD findings of docs/benchmarks.md: RKD's relation terms do not change when the student's
features are scaled, so nothing stops them from shrinking while CE is drowned out.

    mst debug collapse models/dev/image-s0/rkd-cm.pt models/dev/image-s0/none.pt [--features F]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mstcli.errors import UserError

ROWS = 512  # validation rows looked at


def collapse(students: list[Path], features: Path) -> dict[str, Any]:
    """``{"features": path, "students": [one record per checkpoint]}``, each record: student, zero_units (share),
    dead_units, units, feature_norm, logit_std."""
    missing = [str(path) for path in students if not Path(path).is_file()]
    if missing:
        raise UserError(f"student checkpoint not found: {', '.join(missing)}")
    import torch

    from mstcli.data.store import FeatureFile
    from mstcli.engine.checkpoints import StudentCheckpoint
    from mstcli.engine.splits import load_splits
    from mstcli.models.taps import PENULTIMATE, FeatureTap
    from mstcli.models.trio import ModalNet, RunSpec

    torch.set_num_threads(1)
    feature_file = FeatureFile.open(features)
    records = []
    for path in students:
        checkpoint = StudentCheckpoint.load(path)
        spec = RunSpec.from_dict(checkpoint.spec)
        student = ModalNet(spec.build_student(), (spec.student,))
        student.net.load_state_dict(checkpoint.state)
        student.eval()
        group = checkpoint.inputs["split_group"]
        val = load_splits(feature_file, group, [spec.student], torch.device("cpu"), names=("val",))["val"]
        tap = FeatureTap(student.net)
        with torch.no_grad():
            batch = val.batch(torch.arange(min(ROWS, len(val))))
            logits = student(batch.inputs)
        x = tap[PENULTIMATE]
        tap.close()
        records.append(
            {
                "student": str(path),
                "zero_units": round(float((x == 0).float().mean()), 4),
                "dead_units": int(((x > 0).sum(0) == 0).sum()),
                "units": int(x.shape[1]),
                "feature_norm": float(x.norm(dim=1).mean()),
                "logit_std": float(logits.std(0).mean()),
            }
        )
    return {"features": str(features), "students": records}
