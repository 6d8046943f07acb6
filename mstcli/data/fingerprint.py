"""A short digest that tells two feature files apart without reading them whole.

Checkpoints and resume states record the fingerprint of the feature file they were made from, so that a stage
given other data refuses to continue. Hashing every byte of an AV-MNIST-size file (3.5 GB) would cost seconds per
stage, so the digest covers what identifies a prepared file: its data set, the settings that prepared it, the
modalities and their shapes, the class names, every label, and 16 rows of each modality spread over the file.
"""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np

from mstcli.data.store import FeatureFile

SAMPLED_ROWS = 16


def feature_fingerprint(features: FeatureFile) -> str:
    cached = getattr(features, "_fingerprint", None)
    if cached is not None:
        return cached
    digest = hashlib.sha1()
    header = {
        "dataset": features.dataset,
        "params": features.params,
        "modalities": {m: list(s) for m, s in features.modalities.items()},
        "class_names": list(features.class_names),
        "num_samples": features.num_samples,
    }
    other_types = {m: t for m, t in features.dtypes.items() if t != "float32"}
    if other_types:  # only then, so that a float32-only file keeps the fingerprint it always had
        header["dtypes"] = other_types
    digest.update(json.dumps(header, sort_keys=True).encode())
    with h5py.File(features.path, "r") as f:
        labels = f["labels"]
        if labels.ndim == 1:
            digest.update(np.ascontiguousarray(labels[:], dtype=np.int64).tobytes())
        else:  # per-pixel labels (NYU: 445 MB as uint8), hashed frame block by frame block in their own dtype
            for start in range(0, labels.shape[0], 64):
                digest.update(np.ascontiguousarray(labels[start : start + 64]).tobytes())
        rows = np.unique(np.linspace(0, max(features.num_samples - 1, 0), SAMPLED_ROWS).round().astype(np.int64))
        for modality in features.modalities:  # in the stored type: token ids beyond 2**24 stay distinct
            sampled = f["modalities"][modality][rows]
            digest.update(np.ascontiguousarray(sampled, dtype=features.dtype(modality)).tobytes())
    value = digest.hexdigest()[:16]
    object.__setattr__(features, "_fingerprint", value)
    return value
