"""A run that shows and describes itself: dvclive logs, provenance, `mst report` figures, progress and verbosity."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke, tiny_workdir
from PIL import Image
from typer.testing import CliRunner

from mstcli.cli import app
from mstcli.engine.logbook import read_curves, routing_teachers
from mstcli.report.figures import pixel_size

REPO = Path(__file__).resolve().parents[1]
EPOCHS = {"train": 2, "fit_masks": 1, "distill": 2}
TINY = {
    "common": {"threads": 1},
    "prepare": {"num_samples": 200, "spec_size": 16, "image_energy": 0.9, "snr_db": [10.0, 20.0]},
    "train": {"epochs": EPOCHS["train"], "batch_size": 32, "lr": 0.003},
    "fit_masks": {"epochs": EPOCHS["fit_masks"], "batch_size": 32, "lr": 0.003, "hidden_dim_factor": 16},
    "distill": {"epochs": EPOCHS["distill"], "batch_size": 32, "lr": 0.003},
}
runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny pipeline, run once for this module: prepare, S1, S2, S3, eval."""
    root = tiny_workdir(tmp_path_factory.mktemp("report"), TINY)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for command in ("prepare", "train", "fit-masks", "distill", "eval"):
            invoke(command)
    return root


@pytest.fixture
def inside(run, monkeypatch):
    monkeypatch.chdir(run)
    return run


def git_head() -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def test_every_stage_logs_its_epochs_settings_and_final_figures_through_dvclive(inside):
    results = inside / "results/main"
    for stage, epochs in EPOCHS.items():
        rows = read_curves(results / stage)
        assert [r["epoch"] for r in rows] == list(range(epochs)), stage
        summary = json.loads((results / stage / "metrics.json").read_text())
        assert summary["loss"] == pytest.approx(rows[-1]["loss"]) and "best_epoch" in summary
        assert not any("@" in key for key in summary), "per-teacher terms stay in the curves"
        logged = (results / stage / "params.yaml").read_text()
        assert f"epochs: {epochs}" in logged and "dataset: avdigits" in logged
        assert not (results / f".{stage}.live").exists(), "the log is renamed into place when the stage ends"
    s1 = read_curves(results / "train")
    assert all(0 <= r[k] <= 1 for r in s1 for k in ("student_acc", "val_student_acc", "mm_acc", "cm_acc"))
    # the routing shares of the 4 specialized teachers: one share each per epoch, summing to 1
    teachers = routing_teachers(results / "distill")
    assert len(teachers) == 4
    for row in read_curves(results / "distill"):
        assert sum(row[t] for t in teachers) == pytest.approx(1.0, abs=1e-6)
    test = json.loads((results / "eval/metrics.json").read_text())
    metrics = json.loads((results / "metrics.json").read_text())
    assert test["accuracy"] == metrics["accuracy"] and test["per_class_accuracy"]["3"] == pytest.approx(
        metrics["per_class_accuracy"]["3"] or 0.0
    )


def test_metrics_and_checkpoints_carry_settings_commit_versions_and_device(inside):
    metrics = json.loads((inside / "results/main/metrics.json").read_text())
    for key in ("method", "teacher", "student", "seed", "accuracy", "macro_f1", "per_class_accuracy", "n_test"):
        assert key in metrics  # the keys mst compare and the bench scripts read stay
    origin = metrics["provenance"]
    assert origin["settings"]["distill"]["epochs"] == EPOCHS["distill"]
    assert origin["settings"]["train"]["lr"] == 0.003 and origin["settings"]["prepare"]["num_samples"] == 200
    assert origin["code"]["commit"] == git_head() and isinstance(origin["code"]["dirty"], bool)
    assert origin["versions"]["torch"] == torch.__version__ and origin["versions"]["python"].startswith("3.")
    assert origin["device"].startswith("cpu") and origin["data"]["split_group"] == 0
    assert origin["data"]["dataset"] == "avdigits" and len(origin["data"]["features"]) == 16
    assert origin["method"]["name"] == "mst" and origin["method"]["needs_masks"] is True
    for name, stage in (("stage1.pt", "train"), ("masks.pt", "fit_masks"), ("student.pt", "distill")):
        saved = torch.load(inside / "models/main" / name, weights_only=True)["provenance"]
        assert saved["settings"][stage]["epochs"] == EPOCHS[stage], name
        assert saved["code"]["commit"] == git_head() and saved["data"] == origin["data"], name
    s2 = torch.load(inside / "models/main/masks.pt", weights_only=True)["provenance"]["method"]
    assert s2["constants"]["teacher_order"] == ["mm", "cm"]


def test_provenance_outside_a_git_checkout_says_unknown(tmp_path):
    from mstcli.engine.provenance import code_version

    assert code_version(str(tmp_path)) == {"commit": "unknown", "dirty": "unknown"}


def test_report_writes_every_figure_and_a_page_embedding_them(inside):
    import time

    from mstcli.stages.paths import RunPaths
    from mstcli.stages.report import report

    started = time.perf_counter()
    done = report(RunPaths("main"), inside / "data/features/avdigits.h5")
    elapsed = time.perf_counter() - started
    assert set(done.figures) == {"curves", "routing", "confusion", "masks"} and not done.skipped
    for kind, path in done.figures.items():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == pixel_size(kind), kind
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert pixels.var() > 0, f"{kind} is blank"
    teachers = routing_teachers(inside / "results/main/distill")
    assert done.drawn["routing"] == teachers  # one line per specialized teacher, no more
    assert done.drawn["curves"]["train/accuracy"] == [
        "MM teacher train", "MM teacher val", "student train", "student val", "CM teacher train", "CM teacher val"
    ]  # fmt: skip
    assert set(done.drawn["curves"]) == {f"{s}/{p}" for s in EPOCHS for p in ("loss", "accuracy")}
    confusion = done.drawn["confusion"]
    assert confusion.shape == (10, 10) and np.allclose(confusion.sum(1)[confusion.sum(1) > 0], 1.0)
    assert len(done.drawn["masks"]) == 4
    page = (inside / "results/main/report.md").read_text()
    metrics = json.loads((inside / "results/main/metrics.json").read_text())
    assert f"{metrics['accuracy']:.2%}" in page and git_head() in page and "| `distill.epochs` | 2 |" in page
    for kind in done.figures:
        assert f"](figures/{kind}.png)" in page
    print(f"mst report on the tiny run: {elapsed:.2f} s")


def test_mean_masks_match_one_pass_over_the_whole_split(inside):
    from mstcli.data.store import FeatureFile
    from mstcli.engine.checkpoints import MasksCheckpoint
    from mstcli.engine.splits import load_splits
    from mstcli.methods.mst.experts import masks_from_records
    from mstcli.methods.mst.mask_stats import mean_masks
    from mstcli.models.trio import load_frozen_trio

    features = FeatureFile.open(inside / "data/features/avdigits.h5")
    trio = load_frozen_trio(inside / "models/main/stage1.pt", features, 0, torch.device("cpu"))
    masks = masks_from_records(MasksCheckpoint.load(inside / "models/main/masks.pt").masks)
    val = load_splits(features, 0, list(trio.spec.modalities), torch.device("cpu"), names=("val",))["val"]
    means = mean_masks(trio, masks, val, batch_size=7)  # batches of 7: the sum must be over every row once
    for (slot, net), (_, mean) in zip(masks, means, strict=True):
        seen = []
        layer = dict(trio.teacher(slot.teacher).net.named_modules())[slot.layer]
        handle = layer.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out))
        with torch.no_grad():
            trio.teacher(slot.teacher)(val.inputs)
            z = seen[0].flatten(1) if seen[0].dim() == 4 and seen[0].shape[-2:] == (1, 1) else seen[0]
            direct = net.mask(z).mean(0)
        handle.remove()
        assert mean.shape == (net.dim,) and torch.allclose(mean, direct, atol=1e-5), slot


def test_the_log_has_one_line_per_epoch_when_stderr_is_not_a_terminal(inside):
    done = subprocess.run(
        [sys.executable, "-m", "mstcli", "train", "-S", "common.run=plain"],
        cwd=inside,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines == [line for line in lines if line.startswith("S1 epoch ")], done.stderr
    assert len(lines) == EPOCHS["train"] and "\r" not in done.stderr and "\x1b" not in done.stderr
    assert done.stdout.startswith("wrote models/plain/stage1.pt")


def test_quiet_prints_nothing_but_errors_and_verbose_is_everywhere(inside):
    quiet = runner.invoke(app, ["distill", "--quiet", "-S", "common.run=main", "-S", "distill.epochs=1",
                                "--out", "models/main/quiet.pt", "--results", "results/quiet"])  # fmt: skip
    assert quiet.exit_code == 0 and quiet.output == "", quiet.output
    failed = runner.invoke(app, ["eval", "--quiet", "--student", "models/main/none.pt"])
    assert failed.exit_code == 2 and failed.output.strip().splitlines() == [failed.output.strip()]
    assert failed.output.startswith("error: student checkpoint not found")
    talkative = runner.invoke(app, ["train", "-S", "common.run=talk", "-S", "train.epochs=1"])
    assert talkative.exit_code == 0 and "S1 epoch 1/1" in talkative.output
    for command in ("prepare", "train", "fit-masks", "distill", "eval", "predict", "compare", "report", "info",
                    "datasets", "methods", "params"):  # fmt: skip
        help_text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        assert "--quiet" in help_text and "--verbose" in help_text, command


def test_eval_json_is_one_object_equal_to_metrics_json(inside):
    result = runner.invoke(app, ["eval", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads((inside / "results/main/metrics.json").read_text())


def test_report_command_and_compare_figure(inside):
    result = invoke("report")
    assert "wrote results/main/report.md with 4 figures" in result.output
    shutil_out = inside / "cmp"
    result = runner.invoke(app, ["compare", "results", "--out", str(shutil_out), "--json"])
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)
    assert list(table) == ["mst"], "the stages' dvclive summaries are not read as test results"
    with Image.open(shutil_out / "compare.png") as image:
        assert image.size == pixel_size("compare")
        assert np.asarray(image.convert("L"), dtype=float).var() > 0


def test_compare_figure_draws_one_bar_per_cell(tmp_path):
    from mstcli.report.figures import compare_figure

    rows = [("A", [(80.0, 1.0, 3), None]), ("B", [(70.0, 2.0, 3), (60.0, 0.0, 1)])]
    assert compare_figure(["MM image", "CM image"], rows, tmp_path / "c.png") == 3


def test_progress_shows_epoch_and_batch_bars_with_loss_and_accuracy_on_a_terminal(monkeypatch):
    import io

    from conftest import random_split
    from rich.console import Console

    import mstcli.ui as ui
    from mstcli.engine.loop import EpochEnd, EpochTask, LoopConfig, run_epochs

    class Tiny(EpochTask):
        name = "T"

        def __init__(self):
            self.net = torch.nn.Linear(16, 10)
            self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.1)

        def modules(self):
            return {"net": self.net}

        def batch_loss(self, batch):
            logits = self.net(batch.inputs["audio"].flatten(1)[:, :16])
            acc = (logits.argmax(1) == batch.labels).float().mean()
            return torch.nn.functional.cross_entropy(logits, batch.labels), {"acc": acc}

        def end_epoch(self, epoch):
            return EpochEnd({})

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160)
    monkeypatch.setattr(ui, "_console", console)
    ui.setup_logging()
    run_epochs(Tiny(), random_split(64), LoopConfig(2, 8, torch.device("cpu")))
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    assert "T epochs" in shown and "T batches" in shown and "loss " in shown and "acc " in shown
    assert "T epoch 2/2" in shown  # the epoch lines print above the bars
    assert not ui._live, "the bars are closed when the stage ends"
