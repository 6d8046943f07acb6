"""MST-Distill with three modalities: the embedded three-view set (avdigits3), S1 over four nets, S2 masks in every
teacher, S3 routing over all specialized teachers, the comparison methods' ``cm:<modality>`` and ``all`` teachers,
and the one-line errors for teachers and students a run does not have."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from cli_result import one_line_error
from conftest import write_raw_avdigits
from typer.testing import CliRunner

from mstcli.cli import app
from mstcli.engine.logbook import read_curves, routing_teachers

runner = CliRunner()


def scan_of(digit: int) -> np.ndarray:
    """An 8x8 count grid that is full (16) in the digit's own cell and empty elsewhere: a scan tells its digit."""
    counts = np.zeros(64, dtype=np.uint8)
    counts[3 + 6 * digit] = 16
    return counts.reshape(8, 8)


def write_raw_scans(path: Path, per_digit: int = 3) -> Path:
    """A tiny source in the layout of data/raw/optdigits.h5 (scripts/build_optdigits.py)."""
    labels = np.repeat(np.arange(10), per_digit)
    with h5py.File(path, "w") as f:
        f["images"] = np.stack([scan_of(int(d)) for d in labels])
        f["labels"] = labels
    return path


PARAMS = {
    "common": {"dataset": "avdigits3", "student": "image", "threads": 1, "run": "three"},
    "prepare": {
        "num_samples": 240,
        "spec_size": 16,
        "image_energy": 0.9,
        "snr_db": [10.0, 20.0],
        "scan_dropout": 0.0,
        "scan_noise": 0.0,
    },
    "train": {"epochs": 2, "batch_size": 32, "lr": 0.003},
    "fit_masks": {"epochs": 1, "batch_size": 32, "hidden_dim_factor": 16},
    "distill": {"epochs": 2, "batch_size": 32, "lr": 0.003},
}


@pytest.fixture(scope="module")
def three_views(tmp_path_factory):
    """A prepared avdigits3 workdir (raw folder with both sources), trained through S1 and S2 once for the module."""
    root = tmp_path_factory.mktemp("three")
    raw = root / "raw"
    raw.mkdir()
    write_raw_avdigits(raw / "avdigits.h5", num_images=400)
    write_raw_scans(raw / "optdigits.h5")
    (root / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "prepare": {**PARAMS["prepare"], "source": str(raw)}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for command in (["prepare"], ["train"], ["fit-masks"]):
            result = runner.invoke(app, command)
            assert result.exit_code == 0, result.output
    return root


def run(root: Path, *args: str):
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return runner.invoke(app, list(args))
    finally:
        os.chdir(cwd)


def test_avdigits3_adds_a_scan_of_the_same_digit_to_the_avdigits_pairs(three_views, tmp_path):
    from mstcli.data.store import FeatureFile

    features = FeatureFile.open(three_views / "data/features/avdigits3.h5")
    assert features.modalities == {"image": (1, 28, 28), "audio": (1, 16, 16), "scan": (64,)}
    labels, scans = features.labels(), features.read("scan")
    assert (scans.argmax(axis=1) == 3 + 6 * labels).all() and np.allclose(scans.max(axis=1), 1.0)
    # the image and audio views are AV-Digits' own pairs for the same seed: the third view is added, not redrawn
    params = {**PARAMS, "common": {**PARAMS["common"], "dataset": "avdigits"}}
    params["prepare"] = {**params["prepare"], "source": str(three_views / "raw/avdigits.h5")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert run(tmp_path, "prepare").exit_code == 0
    pairs = FeatureFile.open(tmp_path / "data/features/avdigits.h5")
    assert np.array_equal(pairs.labels(), labels)
    for modality in ("image", "audio"):
        assert np.array_equal(pairs.read(modality), features.read(modality)), modality


def test_scan_degradation_blanks_its_share_of_cells_and_adds_noise():
    from mstcli.data.sources.avdigits3 import degrade_scans

    counts = np.full((400, 8, 8), 16, dtype=np.uint8)
    blanked = degrade_scans(counts, 0.5, 0.0, np.random.default_rng(0))
    assert blanked.shape == (400, 64) and set(np.unique(blanked)) == {0.0, 1.0}
    assert abs((blanked == 0).mean() - 0.5) < 0.02
    noisy = degrade_scans(counts, 0.0, 0.3, np.random.default_rng(0))
    assert abs(float((noisy - 1.0).std()) - 0.3) < 0.01 and abs(float(noisy.mean()) - 1.0) < 0.01


def test_s1_trains_every_net_and_s2_masks_every_teacher(three_views):
    stage1 = torch.load(three_views / "models/three/stage1.pt", weights_only=True)
    assert stage1["spec"]["cm_nets"] == {"audio": "three_layer_cnn_a", "scan": "folder_vector_net"}
    prefixes = {
        key.split(".")[0] + ("." + key.split(".")[1] if key.startswith("cms.") else "") for key in stage1["state"]
    }
    assert prefixes == {"mm", "student", "cms.audio", "cms.scan"}
    curves = read_curves(three_views / "results/three/train")
    assert {"val_mm_acc", "val_student_acc", "val_cm_audio_acc", "val_cm_scan_acc"} <= set(curves[-1])
    # the scan tells its digit (one full cell per digit, no dropout or noise here): its CM teacher must learn it
    assert max(c["val_cm_scan_acc"] for c in curves) >= 0.3, [c["val_cm_scan_acc"] for c in curves]  # chance: 0.1
    masks = torch.load(three_views / "models/three/masks.pt", weights_only=True)["masks"]
    assert [m["teacher"] for m in masks] == ["mm", "mm", "cm:audio", "cm:audio", "cm:scan", "cm:scan"]


@pytest.mark.parametrize(("weighting", "factor"), [("sum", 1.0), ("pairs", 0.5), (None, 0.5)])
def test_s1_weighs_its_kl_terms_as_train_align_weighting_says(three_views, monkeypatch, weighting, factor):
    """The setting reaches S1's loss: four nets, and the KL sum's factor is 1 (sum) or 6/12 (pairs, the default
    chosen by measurement, docs/own-data.md)."""
    import mstcli.stages.train as train_stage
    from mstcli.methods.mst.losses import align_weight

    seen = []

    def recording(logits, *args):
        total, terms = real(logits, *args)
        seen.append((len(logits), align_weight(len(logits), args[-1])))
        return total, terms

    real = train_stage.mutual_loss
    monkeypatch.setattr(train_stage, "mutual_loss", recording)
    chosen = [] if weighting is None else ["-S", f"train.align_weighting={weighting}"]
    result = run(three_views, "train", *chosen, "-S", "train.epochs=1", "-S", f"common.run=weights-{weighting}")
    assert result.exit_code == 0, result.output
    assert seen and set(seen) == {(4, factor)}


def test_s3_routes_over_every_specialized_teacher_or_a_chosen_group(three_views):
    result = run(three_views, "distill", "--out", "models/three/mst.pt", "--results", "results/three/mst")
    assert result.exit_code == 0, result.output
    experts = routing_teachers(three_views / "results/three/mst/distill")
    assert [e.split("@")[0] for e in experts] == ["mm", "mm", "cm:audio", "cm:audio", "cm:scan", "cm:scan"]
    last = read_curves(three_views / "results/three/mst/distill")[-1]
    assert abs(sum(last[e] for e in experts) - 1.0) < 1e-4
    result = run(three_views, "distill", "-S", "distill.experts=cm", "--out", "models/three/mst-cm.pt",
                 "--results", "results/three/mst-cm")  # fmt: skip
    assert result.exit_code == 0, result.output
    experts = routing_teachers(three_views / "results/three/mst-cm/distill")
    assert [e.split("@")[0] for e in experts] == ["cm:audio", "cm:audio", "cm:scan", "cm:scan"]
    # one named CM teacher: only its own specialized teachers, and the results file it as the teacher
    result = run(three_views, "distill", "-S", "distill.experts=cm:scan", "--out", "models/three/mst-scan.pt",
                 "--results", "results/three/mst-scan")  # fmt: skip
    assert result.exit_code == 0, result.output
    experts = routing_teachers(three_views / "results/three/mst-scan/distill")
    assert [e.split("@")[0] for e in experts] == ["cm:scan", "cm:scan"]
    assert torch.load(three_views / "models/three/mst-scan.pt", weights_only=True)["teacher"] == "cm:scan"
    assert run(three_views, "eval", "--student", "models/three/mst.pt", "--results", "results/three/mst").exit_code == 0
    metrics = json.loads((three_views / "results/three/mst/metrics.json").read_text())
    assert metrics["student"] == "image" and metrics["n_test"] == 48
    assert metrics["accuracy"] >= 0.25, metrics["accuracy"]  # ten digits: chance is 0.1


def test_comparison_methods_take_a_named_cm_teacher_or_all(three_views):
    for teacher in ("cm:scan", "all"):
        result = run(three_views, "distill", "--method", "kd", "--teacher", teacher,
                     "--out", f"models/three/kd-{teacher}.pt", "--results", f"results/three/kd-{teacher}")  # fmt: skip
        assert result.exit_code == 0, result.output
        saved = torch.load(three_views / f"models/three/kd-{teacher}.pt", weights_only=True)
        assert saved["teacher"] == teacher


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "kd", "--teacher", "cm"], "name one: cm:audio, cm:scan"),
        (["--method", "kd", "--teacher", "cm:depth"], "no such CM teacher; the run has cm:audio, cm:scan"),
        (["--method", "kd", "--teacher", "cm:image"], "no such CM teacher"),
        (["--method", "dkd", "--teacher", "all"], "only kd takes all"),
        (["--method", "kd", "--teacher", "audio"], "distill.teacher must be mm, cm, cm:<modality> or all"),
        (["--method", "kd", "-S", "common.student=depth"], "common.student must be one of image, audio, scan"),
        (
            ["-S", "distill.experts=cm:depth"],
            "distill.experts=cm:depth: no such CM teacher; the run has cm:audio, cm:scan",
        ),
        (["-S", "distill.experts=cm:image"], "distill.experts=cm:image: no such CM teacher"),
        (["-S", "distill.experts=scan"], "distill.experts must be all, mm, cm or cm:<modality>"),
    ],
)
def test_teachers_and_students_the_run_lacks_are_one_line_errors(three_views, args, message):
    result = run(three_views, "distill", *args, "--out", "models/three/bad.pt", "--results", "results/three/bad")
    one_line_error(result, message)
    assert not (three_views / "models/three/bad.pt").exists()


def test_averaged_teachers_give_the_mean_of_the_soft_labels():
    from mstcli.methods.baselines.teachers import AveragedTeachers

    torch.manual_seed(0)
    logits = [torch.randn(5, 10) * 3 for _ in range(3)]
    nets = [lambda inputs, z=z: z for z in logits]
    tau = 4.0
    averaged = AveragedTeachers(nets, tau)({})
    expected = torch.stack([torch.softmax(z / tau, dim=1) for z in logits]).mean(0)
    assert torch.allclose(torch.softmax(averaged / tau, dim=1), expected, atol=1e-6)
    assert not torch.allclose(torch.softmax(averaged / tau, dim=1), torch.softmax(sum(logits) / 3 / tau, dim=1))


def test_two_modality_runs_keep_their_cm_teacher_in_the_one_mapping_under_the_name_cm():
    from conftest import tiny_trio

    trio = tiny_trio("image")
    assert trio.spec.teacher_keys == ("mm", "cm") and trio.spec.cm_nets == {"audio": "three_layer_cnn_a"}
    assert {".".join(k.split(".")[:2]) if k.startswith("cms.") else k.split(".")[0] for k in trio.state_dict()} == {
        "mm",
        "student",
        "cms.audio",
    }
    assert trio.teacher("cm") is trio.cms["audio"] and [key for key, _ in trio.members()] == ["mm", "student", "cm"]
    assert trio.spec.teacher_key("cm:audio") == "cm" and trio.spec.teacher_key("mm") == "mm"
    with pytest.raises(Exception, match="the student"):
        trio.spec.teacher_key("cm:image")
    with pytest.raises(KeyError):
        trio.teacher("cm:audio")  # the public key of a two-modality run's CM teacher is cm


def test_experts_name_a_two_modality_runs_one_cm_teacher_by_its_modality():
    from conftest import tiny_trio

    from mstcli.errors import UserError
    from mstcli.methods.mst.dynamic_distillation import expert_teachers

    spec = tiny_trio("image").spec
    assert [expert_teachers(spec, e) for e in ("all", "mm", "cm", "cm:audio")] == [["mm", "cm"], ["mm"], ["cm"], ["cm"]]
    with pytest.raises(UserError, match=r"^distill.experts=cm:image: the run's CM teacher reads audio \(image is the"):
        expert_teachers(spec, "cm:image")


def old_format(checkpoint_dict: dict, cm_nets: dict | None) -> dict:
    """A stage-1 checkpoint dict as mst wrote it before the CM teachers were kept one way: the first CM teacher in
    the spec's ``cm``/``cm_net``, ``cm_nets`` empty (``None``: the field missing, as in older files still), and a
    two-modality CM teacher's weights under ``cm.``."""
    spec = dict(checkpoint_dict["spec"])
    (cm, cm_net), *_ = spec.pop("cm_nets").items()
    spec.update(cm=cm, cm_net=cm_net, **({} if cm_nets is None else {"cm_nets": cm_nets}))
    state = {k.replace(f"cms.{cm}.", "cm.", 1): v for k, v in checkpoint_dict["state"].items()}
    return {**checkpoint_dict, "spec": spec, "state": state}


@pytest.mark.parametrize("cm_nets", [{}, None], ids=["cm_nets-empty", "cm_nets-missing"])
def test_a_two_modality_checkpoint_of_the_old_format_loads(tmp_path, cm_nets):
    from conftest import random_split, tiny_trio

    from mstcli.engine.checkpoints import Stage1Checkpoint
    from mstcli.models.trio import RunSpec, Trio

    trio = tiny_trio("image")
    new = trio.checkpoint({"dataset": "avdigits", "features": "x", "split_group": 0}, {}).to_dict()
    old = old_format(new, cm_nets)
    assert any(k.startswith("cm.") for k in old["state"]) and "cm_net" in old["spec"]
    torch.save(old, tmp_path / "stage1.pt")
    loaded = Trio.from_checkpoint(Stage1Checkpoint.load(tmp_path / "stage1.pt")).eval()
    assert loaded.spec == trio.spec == RunSpec.from_dict(old["spec"])
    assert loaded.state_dict().keys() == trio.state_dict().keys()
    inputs = random_split(8).inputs
    for key in ("mm", "cm"):
        assert torch.equal(loaded.teacher(key)(inputs), trio.teacher(key)(inputs)), key
    # an S1 resume state of that time (the trio's state_dict alone) loads into today's trio as well
    fresh = tiny_trio("image")
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(old["state"])
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trio.state_dict().values(), strict=True))


def test_a_three_modality_spec_of_the_old_format_keeps_its_mapping():
    """Three-modality files of before held ``cm``/``cm_net`` (the first CM teacher) besides the full ``cm_nets``."""
    from mstcli.models.trio import RunSpec

    nets = {"audio": "three_layer_cnn_a", "scan": "folder_vector_net"}
    spec = RunSpec.from_dict({
        "dataset": "avdigits3", "modalities": ["image", "audio", "scan"], "student": "image", "cm": "audio",
        "shapes": {"image": [1, 28, 28], "audio": [1, 16, 16], "scan": [64]}, "num_classes": 10,
        "class_names": [str(d) for d in range(10)], "multimodal_net": "three_view_cnn_i", "student_net": "lenet5",
        "cm_net": "three_layer_cnn_a", "cm_nets": nets,
    })  # fmt: skip
    assert spec.cm_nets == nets and spec.teacher_keys == ("mm", "cm:audio", "cm:scan")
    assert "cm" not in spec.to_dict() and "cm_net" not in spec.to_dict()


@pytest.mark.parametrize("modality", ["values", "type", "scan.v2", "50%"])
def test_a_cm_modality_with_any_column_prefix_gets_its_own_entry(modality):
    """Torch refuses '.' and the container's own attribute names as module names: such a modality is escaped."""
    from mstcli.models.trio import RunSpec, Trio, cm_slot

    spec = RunSpec(
        "avdigits", ("image", modality), "image", {"image": (1, 28, 28), modality: (1, 16, 16)}, 10,
        tuple("0123456789"), "cnn_i", "lenet5", {modality: "three_layer_cnn_a"},
    )  # fmt: skip
    trio = Trio(spec)
    assert trio.teacher("cm") is trio.cms[cm_slot(modality)] and trio.teacher("cm").reads == (modality,)
    assert len({cm_slot(m) for m in ("values", "%values", "%25values", "a.b", "a%2Eb")}) == 5  # no two collide
