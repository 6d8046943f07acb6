"""What `mst info` shows about a feature file: modalities, shapes, classes, splits and class balance."""

from __future__ import annotations

import numpy as np
from rich.table import Table

from mstcli.data.store import FeatureFile


def feature_tables(features: FeatureFile, group: int) -> list[Table]:
    labels = features.labels()
    splits = features.split_indices(group)

    overview = Table(title=f"{features.dataset}: {features.num_samples} samples", caption=str(features.path))
    overview.add_column("modality")
    overview.add_column("shape per sample")
    overview.add_column("dtype")
    for name, shape in features.modalities.items():
        overview.add_row(name, " x ".join(map(str, shape)), "float32")

    balance = Table(title=f"split group {group}: samples per class")
    balance.add_column("class")
    for split, rows in splits.items():
        balance.add_column(f"{split} ({len(rows)})", justify="right")
    counts = {s: np.bincount(labels[rows], minlength=features.num_classes) for s, rows in splits.items()}
    for c, name in enumerate(features.class_names):
        balance.add_row(name, *(str(counts[s][c]) for s in splits))
    return [overview, balance]
