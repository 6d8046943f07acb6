"""Random feature files with AV-MNIST's shapes for the speed benchmarks: the time of a stage does not depend on
the values, so the benchmarks need no prepared data set (imported by the bench scripts, which run from bench/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mstcli.data.store import write_features


def synthetic_features(path: Path, n: int, spec_size: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    write_features(
        path,
        dataset="avdigits",
        arrays={
            "image": rng.random((n, 1, 28, 28), dtype=np.float32),
            "audio": rng.random((n, 1, spec_size, spec_size), dtype=np.float32),
        },
        labels=rng.integers(0, 10, n),
        class_names=[str(d) for d in range(10)],
        params={"synthetic": True},
    )
    return path
