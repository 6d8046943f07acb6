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
    overview.add_column("made from")
    for name, shape in features.modalities.items():
        overview.add_row(name, " x ".join(map(str, shape)), features.dtype(name), _made_from(features.transform(name)))

    balance = Table(title=f"split group {group}: samples per class")
    balance.add_column("class")
    for split, rows in splits.items():
        balance.add_column(f"{split} ({len(rows)})", justify="right")
    counts = {s: np.bincount(labels[rows], minlength=features.num_classes) for s, rows in splits.items()}
    for c, name in enumerate(features.class_names):
        balance.add_row(name, *(str(counts[s][c]) for s in splits))
    return [overview, balance]


def _made_from(state: dict | None) -> str:
    """What the rows of a modality were made from, where prepare recorded it (a folder's modalities)."""
    if not state or "kind" not in state:
        return "-"
    kind = str(state["kind"])
    column = f" ({state['column']})" if "column" in state else ""
    if kind == "image" and state.get("backbone", "none") != "none":
        return f"image files through {state['backbone']}{column}"
    form = state.get("form", "features")
    made = f" as {form} for {', '.join(state.get('made_for', []))}" if form != "features" else ""
    return f"{kind}{' files' if kind != 'text' else ''}{column}{made}"
