"""Each comparison method runs through `mst distill --teacher cm` for one epoch, and eval records it."""

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


def test_mgdfr_keeps_its_student_from_the_kd_phase(tiny_runs, monkeypatch):
    """4 epochs: co-training in 0-1, KD in 2-3; the kept epoch is 2 or 3 whatever the validation CE of 0-1."""
    import re
    import shutil

    from conftest import invoke as run

    monkeypatch.chdir(tiny_runs)
    try:
        out = run("distill", "--method", "mgdfr", "--teacher", "mm", "-S", "common.run=img", "-S",
                  "common.student=image", "-S", "distill.epochs=4", "--out", "models/mg/mgdfr.pt",
                  "--results", "results/mg/mgdfr").output  # fmt: skip
        kept = int(re.search(r"best epoch (\d+)", out).group(1))
        assert kept in (2, 3), out
        curves = read_curves(tiny_runs / "results/mg/mgdfr/distill")
        ce = [row["val_ce"] for row in curves]
        assert ce[kept] == min(ce[2:])  # the lowest validation CE of the KD phase
    finally:
        shutil.rmtree(tiny_runs / "models" / "mg", ignore_errors=True)
        shutil.rmtree(tiny_runs / "results" / "mg", ignore_errors=True)


def test_only_mgdfrs_kd_phase_is_selectable_and_other_methods_select_every_epoch():
    from types import SimpleNamespace

    from mstcli.methods.baselines.kd import HintonKD
    from mstcli.methods.baselines.mgdfr import ModalityGeneralDecisiveFeatures

    phases = SimpleNamespace(cotrain_epochs=15)
    kept = [ModalityGeneralDecisiveFeatures.selectable(phases, e) for e in (0, 14, 15, 29)]
    assert kept == [False, False, True, True]
    assert HintonKD.selectable(SimpleNamespace(), 0)
