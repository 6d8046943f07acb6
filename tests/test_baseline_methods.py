"""Each comparison method of issue 5 runs through `mst distill --teacher cm` for one epoch, and eval records it."""

import json
import math

import pytest
from test_stages import inside, invoke, workdir  # noqa: F401  (fixtures)

from mstcli.engine.logbook import read_curves

METHODS = ["dkd", "mlld", "dist", "dml", "c2kd", "mgdfr"]


@pytest.fixture
def stage1(inside):  # noqa: F811  (the fixture of test_stages)
    invoke("train", "-S", "common.run=base", "-S", "train.epochs=1")
    return inside


@pytest.mark.parametrize("method", METHODS)
def test_method_runs_one_epoch_from_the_cli(stage1, method):
    epochs = 2 if method == "mgdfr" else 1  # MGDFR: one epoch of co-training, one of KD
    run = ["-S", "common.run=base", "-S", f"distill.epochs={epochs}"]
    out, results = stage1 / f"models/base/{method}.pt", stage1 / f"results/base/{method}"
    invoke("distill", "--method", method, "--teacher", "cm", "--out", str(out), "--results", str(results), *run)
    curves = read_curves(results / "distill")
    assert len(curves) == epochs and all(math.isfinite(v) for row in curves for v in row.values())
    invoke("eval", "--student", str(out), "--results", str(results), *run)
    metrics = json.loads((results / "metrics.json").read_text())
    assert (metrics["method"], metrics["teacher"], metrics["student"], metrics["seed"]) == (method, "cm", "image", 0)
