"""Helpers for the per-data-set source tests: prepare a fixture through the CLI and run every stage once."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_result import one_line_error
from typer.testing import CliRunner

from mstcli.cli import app
from mstcli.data.store import FeatureFile

runner = CliRunner()

ONE_EPOCH = {
    "common": {"threads": 1},
    "train": {"epochs": 1, "batch_size": 8},
    "fit_masks": {"epochs": 1, "batch_size": 8, "hidden_dim_factor": 32, "heads": 1},
    "distill": {"epochs": 1, "batch_size": 8},
    "eval": {"batch_size": 16},
}


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def write_params(root: Path, dataset: str, source: Path, prepare: dict | None = None) -> None:
    params = dict(ONE_EPOCH, common={**ONE_EPOCH["common"], "dataset": dataset})
    params["prepare"] = {"source": str(source), **(prepare or {})}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def run_all_stages(root: Path, student: str, *sets: str) -> dict:
    """train, fit-masks, distill and eval for one student; returns the eval metrics."""
    run = ["-S", f"common.student={student}", "-S", f"common.run={student}", *sets]
    for stage in ("train", "fit-masks", "distill", "eval"):
        invoke(stage, *run)
    return json.loads((root / f"results/{student}/metrics.json").read_text())


def reference_test_rows(n: int, group: int = 0) -> np.ndarray:
    """The test rows of split group ``group`` by the reference protocol, written out here: the reference seeds
    numpy's global generator with 19980427 and draws 20 permutations of N; group g is the g-th, its last 20 %
    (after int(0.6 N) train and int(0.8 N) - int(0.6 N) val rows) is the test split."""
    state = np.random.get_state()
    try:
        np.random.seed(19980427)
        permutation = [np.random.permutation(n) for _ in range(group + 1)][group]
    finally:
        np.random.set_state(state)
    return permutation[int(0.8 * n) :]


def check_eval_files(root: Path, run: str, features_path: Path, student: str, group: int = 0) -> dict:
    """What `mst eval` wrote for ``run``, checked against the feature file and recomputed by hand.

    metrics.json and confusion.csv must describe the same predictions; those predictions must be of the test split
    of ``group`` (its size, and its labels as a multiset); accuracy, per-class accuracy and macro-F1 must be what
    the confusion rows give. Returns the metrics with ``correct`` (the number of right predictions) added.
    """
    metrics = json.loads((root / f"results/{run}/metrics.json").read_text())
    with open(root / f"results/{run}/confusion.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    features = FeatureFile.open(features_path)
    test = reference_test_rows(features.num_samples, group)
    np.testing.assert_array_equal(features.split_indices(group)["test"], test)
    names = features.class_names
    assert (metrics["student"], metrics["split_group"]) == (student, group)
    assert metrics["n_test"] == len(test) == len(rows)

    actual, predicted = [r["actual"] for r in rows], [r["predicted"] for r in rows]
    assert Counter(actual) == Counter(names[y] for y in features.labels()[test]), "eval must judge the test rows"
    assert set(predicted) <= set(names)
    correct = sum(a == p for a, p in zip(actual, predicted, strict=True))
    assert metrics["accuracy"] == pytest.approx(correct / len(rows), abs=1e-12)

    per_class, f1 = {}, []
    for name in names:
        support = actual.count(name)
        hits = sum(a == p == name for a, p in zip(actual, predicted, strict=True))
        per_class[name] = None if support == 0 else hits / support
        if support:
            called = predicted.count(name)
            precision, recall = (hits / called if called else 0.0), hits / support
            f1.append(2 * precision * recall / (precision + recall) if hits else 0.0)
    assert metrics["per_class_accuracy"] == pytest.approx(per_class, abs=1e-12)
    assert metrics["macro_f1"] == pytest.approx(sum(f1) / len(f1), abs=1e-12)
    return {**metrics, "correct": correct}


def prepare_fails(*args: str) -> str:
    """The one-line error of a failing prepare (exit code 2)."""
    return one_line_error(runner.invoke(app, ["prepare", *args]))
