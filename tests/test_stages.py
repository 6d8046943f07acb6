"""S1, S2, S3 and eval on tiny data, through the CLI, in both student directions."""

import csv
import json
from pathlib import Path

import pytest
from cli_result import one_line_error
from conftest import invoke, tiny_workdir
from typer.testing import CliRunner

from mstcli.cli import app

runner = CliRunner()

TINY = {
    "common": {"threads": 1},
    "prepare": {"num_samples": 240, "spec_size": 16, "image_energy": 0.9, "snr_db": [10.0, 20.0]},
    "train": {"epochs": 4, "batch_size": 32, "lr": 0.003},
    "fit_masks": {"epochs": 3, "batch_size": 32, "lr": 0.003, "hidden_dim_factor": 16},
    "distill": {"epochs": 3, "batch_size": 32, "lr": 0.003},
}


def read_tsv(path: Path) -> list[dict]:
    """The per-epoch rows of a stage's dvclive log folder (the name is older than the folders)."""
    from mstcli.engine.logbook import read_curves

    return read_curves(path)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with params.yaml and a tiny raw source, shared by the tests of this module."""
    return tiny_workdir(tmp_path_factory.mktemp("run"), TINY)


@pytest.fixture
def inside(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    invoke("prepare")
    return workdir


@pytest.mark.parametrize("student", ["image", "audio"])
def test_all_stages_lower_their_loss_and_eval_reports(inside, student, monkeypatch):
    run = ["-S", f"common.student={student}", "-S", f"common.run={student}"]
    invoke("train", *run)
    s1 = read_tsv(inside / f"results/{student}/train")
    assert s1[-1]["loss"] < s1[0]["loss"]

    invoke("fit-masks", *run)
    s2 = read_tsv(inside / f"results/{student}/fit_masks")
    train_kl = [k for k in s2[0] if k.startswith("train_kl_")]
    assert len(train_kl) == 4
    assert sum(s2[-1][k] for k in train_kl) < sum(s2[0][k] for k in train_kl)

    invoke("distill", *run)
    s3 = read_tsv(inside / f"results/{student}/distill")
    # the total loss falls by the weight decay alone (w_kl halves after epoch 0): judge the student by its CE
    assert s3[-1]["ce"] < s3[0]["ce"] and min(r["val_ce"] for r in s3[1:]) < s3[0]["val_ce"], s3
    assert [r["w_kl"] for r in s3] == [1.0, 0.5, 0.5]  # every per-epoch statistic reaches the curves
    routing = s3  # the routing shares are part of the S3 rows (the log's routing plot)
    experts = [k for k in routing[0] if "@" in k]
    assert len(experts) == 4 and all(abs(sum(r[k] for k in experts) - 1) < 1e-6 for r in routing)

    import mstcli.data.store as store

    read_modalities = []
    original = store.FeatureFile.read
    monkeypatch.setattr(
        store.FeatureFile, "read", lambda self, m, i=None: read_modalities.append(m) or original(self, m, i)
    )
    result = invoke("eval", *run)
    assert read_modalities == [student], "eval must use the student's modality only"
    metrics = json.loads((inside / f"results/{student}/metrics.json").read_text())
    assert metrics["student"] == student and metrics["method"] == "mst"
    with open(inside / f"results/{student}/confusion.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == metrics["n_test"] == 48
    assert metrics["accuracy"] == pytest.approx(sum(r["actual"] == r["predicted"] for r in rows) / len(rows))
    assert f"{metrics['accuracy']:.2%}" in result.output


def test_comparison_methods_write_their_own_student(inside):
    invoke("train", "-S", "common.run=cmp")
    for method, teacher in (("none", "mm"), ("kd", "mm"), ("kd", "cm")):
        out = inside / f"models/cmp/{method}-{teacher}.pt"
        invoke(
            "distill",
            "--method",
            method,
            "--teacher",
            teacher,
            "--out",
            str(out),
            "--results",
            str(inside / f"results/cmp/{method}-{teacher}"),
            "-S",
            "common.run=cmp",
        )
        assert out.exists()
        result = invoke(
            "eval",
            "--student",
            str(out),
            "--results",
            str(inside / f"results/cmp/{method}-{teacher}"),
            "-S",
            "common.run=cmp",
        )
        metrics = json.loads((inside / f"results/cmp/{method}-{teacher}/metrics.json").read_text())
        assert metrics["method"] == method and (metrics["teacher"] == teacher if method == "kd" else True)
        assert "test accuracy" in result.output


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["train", "-S", "common.student=video"], "common.student"),
        (["train", "-S", "common.dataset=nosuch"], "nosuch"),
        (["fit-masks", "-S", "common.run=nothing-here"], "stage-1 checkpoint not found"),
        (["distill", "-S", "common.run=nothing-here"], "not found"),
        (["eval", "-S", "common.run=nothing-here"], "student checkpoint not found"),
        (["distill", "--method", "bogus"], "distill.method"),
        (["distill", "-S", "distill.k=0"], "distill.k"),
    ],
)
def test_stage_errors_are_one_line(inside, args, culprit):
    one_line_error(runner.invoke(app, args), culprit)


def test_too_many_layers_or_k_is_named(inside):
    invoke("train", "-S", "common.run=errs", "-S", "train.epochs=1")
    result = runner.invoke(app, ["fit-masks", "-S", "common.run=errs", "-S", "fit_masks.layers=3"])
    assert result.exit_code == 2 and "fit_masks.layers" in result.output
    invoke("fit-masks", "-S", "common.run=errs", "-S", "fit_masks.epochs=1")
    result = runner.invoke(app, ["distill", "-S", "common.run=errs", "-S", "distill.k=5"])
    assert result.exit_code == 2 and "distill.k" in result.output
    assert not (inside / "models/errs/student.pt").exists()


def test_later_stages_refuse_mismatched_inputs(inside):
    run = ["-S", "common.run=guard"]
    invoke("train", *run, "-S", "train.epochs=1")
    result = runner.invoke(app, ["fit-masks", *run, "-S", "common.seed=3"])
    assert result.exit_code == 2 and "split group 0" in result.output, result.output
    invoke("fit-masks", *run, "-S", "fit_masks.epochs=1")
    invoke("train", *run, "-S", "train.epochs=2")  # new stage-1 nets; the MaskNets belong to the old ones
    result = runner.invoke(app, ["distill", *run])
    assert result.exit_code == 2 and "another stage-1 run" in result.output, result.output
