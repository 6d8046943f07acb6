"""NYU-Depth-V2: a tiny labelled .mat (MATLAB v7.3 = HDF5, arrays transposed as MATLAB writes them) through
prepare, S1, S2, S3 and eval in both student directions; the per-pixel metrics on a hand-checked case; the
per-pixel losses; malformed files refused in one line."""

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from source_pipeline import invoke, prepare_fails, reference_test_rows, run_all_stages, runner, write_params

from mstcli.cli import app
from mstcli.data.store import FeatureFile
from mstcli.engine.segmentation import confusion_counts, segmentation_metrics

FRAMES, HEIGHT, WIDTH = 10, 48, 64
TINY = ["-S", "train.width_divisor=16"]


def frames(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB (N x 3 x H x W, uint8), depth (N x H x W, metres) and 40-class labels (N x H x W): the top half of a
    frame is one class, the bottom another, a void band on the left; the red channel and the depth tell the class."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((FRAMES, HEIGHT, WIDTH), np.uint8)
    for i in range(FRAMES):
        labels[i, : HEIGHT // 2] = 1 + i % 3
        labels[i, HEIGHT // 2 :] = 4 + i % 2
        labels[i, :, :4] = 0
    images = rng.integers(0, 256, (FRAMES, 3, HEIGHT, WIDTH)).astype(np.uint8)
    images[:, 0] = labels * 40
    depths = (labels + rng.random((FRAMES, HEIGHT, WIDTH))).astype(np.float32)
    return images, depths, labels


def write_mat(path: Path, keys: dict[str, np.ndarray]) -> Path:
    """A v7.3 .mat as MATLAB writes it: h5py sees each array with its axes reversed per frame (N x ... x W x H)."""
    with h5py.File(path, "w") as f:
        for key, array in keys.items():
            f[key] = array.swapaxes(-1, -2)
    return path


@pytest.fixture(scope="module")
def mat(tmp_path_factory) -> Path:
    images, depths, labels = frames()
    root = tmp_path_factory.mktemp("nyu")
    return write_mat(root / "nyu_depth_v2_labeled.mat", {"images": images, "depths": depths, "labels40": labels})


def test_mat_is_read_untransposed_and_scaled_as_the_reference(tmp_path, monkeypatch, mat):
    images, depths, labels = frames()
    monkeypatch.chdir(tmp_path)
    invoke("prepare", "--dataset", "nyudepth", "--source", str(mat.parent))
    features = FeatureFile.open(tmp_path / "data/features/nyudepth.h5")
    assert features.modalities == {"rgb": (3, HEIGHT, WIDTH), "depth": (1, HEIGHT, WIDTH)}
    assert features.label_shape == (HEIGHT, WIDTH) and features.num_classes == 41
    assert features.class_names[0] == "void" and features.class_names[40] == "otherprop"
    np.testing.assert_array_equal(features.labels(), labels)
    rgb = images.astype(np.float32)
    lo, hi = rgb.min(axis=(0, 2, 3), keepdims=True), rgb.max(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(features.read("rgb"), (rgb - lo) / (hi - lo), atol=1e-6)  # per channel, all frames
    d = depths[:, None]
    lo, hi = d.min(axis=(1, 2, 3), keepdims=True), d.max(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(features.read("depth"), (d - lo) / (hi - lo), atol=1e-6)  # per frame
    assert features.split_indices(0)["train"].size == 6  # the reference's 60/20/20, as 869/290/290 of 1,449

    # the official file's 894-class labels, through a mapping file (raw class i -> table[i - 1])
    raw = labels.astype(np.uint16) + 100 * (labels > 0)  # raw ids 0, 101..105
    table = np.zeros(894, np.int64)
    table[100:105] = [1, 2, 3, 4, 5]
    np.save(tmp_path / "map.npy", table)
    official = write_mat(tmp_path / "official.mat", {"images": images, "depths": depths, "labels": raw})
    out = tmp_path / "mapped.h5"
    invoke("prepare", "--dataset", "nyudepth", "--source", str(official), "--out", str(out),
           "-S", f"prepare.label_map={tmp_path / 'map.npy'}")  # fmt: skip
    np.testing.assert_array_equal(FeatureFile.open(out).labels(), labels)
    from scipy.io import savemat  # Gupta et al.'s classMapping40.mat holds the table as mapClass, 1 x 894

    savemat(tmp_path / "classMapping40.mat", {"mapClass": table[None].astype(np.float64)})
    invoke("prepare", "--dataset", "nyudepth", "--source", str(official), "--out", str(out),
           "-S", f"prepare.label_map={tmp_path / 'classMapping40.mat'}")  # fmt: skip
    np.testing.assert_array_equal(FeatureFile.open(out).labels(), labels)


def test_both_student_directions_run_every_stage(tmp_path, monkeypatch, mat):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, "nyudepth", mat)
    invoke("prepare")
    path = tmp_path / "data/features/nyudepth.h5"
    labels = FeatureFile.open(path).labels()
    test = reference_test_rows(FRAMES)
    for student, bank in (("rgb", "true"), ("depth", "false")):  # the depth run recomputes the experts
        metrics = run_all_stages(tmp_path, student, *TINY, "-S", f"distill.bank={bank}")
        assert metrics["task"] == "segmentation" and metrics["student"] == student
        assert metrics["n_test"] == len(test) and metrics["n_pixels"] == int((labels[test] > 0).sum())
        with open(tmp_path / f"results/{student}/confusion.csv", newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0][1:] == FeatureFile.open(path).class_names and len(rows) == 41  # header + 40 labelled classes
        matrix = np.array([[int(v) for v in row[1:]] for row in rows[1:]])
        assert matrix.sum() == metrics["n_pixels"]
        assert metrics["accuracy"] == pytest.approx(np.trace(matrix[:, 1:]) / matrix.sum())
        assert 0.0 <= metrics["miou"] <= 1.0 and set(metrics["per_class_iou"]) == set(rows[0][2:])
        routing = json.loads((tmp_path / f"results/{student}/distill/plots/custom/routing.json").read_text())
        assert len(routing) == 4 and sum(r["share"] for r in routing) == pytest.approx(1.0)  # over the 4 experts
    masks = torch.load(tmp_path / "models/depth/masks.pt", weights_only=False)
    layers = [(m["teacher"], m["layer"]) for m in masks["masks"]]
    assert layers == [("mm", "after_fusion_identity"), ("mm", "CBR5_RGBD_DEC"),
                      ("cm", "CBR5_RGB_ENC"), ("cm", "CBR5_RGB_DEC")]  # fmt: skip
    assert all(m["spatial"] for m in masks["masks"])  # the 2-D MaskNet

    result = runner.invoke(app, ["compare", "results", "--out", "cmp"])
    assert result.exit_code == 0, result.output
    assert "Test mIoU (%)" in (tmp_path / "cmp/compare.md").read_text()
    mst = json.loads((tmp_path / "cmp/compare.json").read_text())["mst"]["mm+cm"]
    assert mst["rgb"][0] == pytest.approx(
        round(100 * json.loads((tmp_path / "results/rgb/metrics.json").read_text())["miou"], 2)
    )

    invoke("report", "-S", "common.run=rgb")
    assert "mIoU" in (tmp_path / "results/rgb/report.md").read_text()

    refused = runner.invoke(
        app, ["distill", "-S", "common.run=rgb", "-S", "common.student=rgb", "-S", "distill.method=kd", *TINY]
    )
    assert refused.exit_code == 2 and "does not support segmentation" in refused.output.strip().splitlines()[-1]


def test_metrics_on_a_hand_checked_case():
    names = ["void", "a", "b", "c"]
    actual = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 3]])
    predicted = torch.tensor([[2, 1, 1, 2], [2, 0, 1, 1]])
    confusion = confusion_counts(predicted, actual, 4).numpy()
    # labelled pixels: a->a, a->a, a->b, b->b, b->void, c->a  (the two void pixels are left out)
    assert confusion.tolist() == [[0, 0, 0, 0], [0, 2, 1, 0], [1, 0, 1, 0], [0, 1, 0, 0]]
    m = segmentation_metrics(confusion, names, frames=2)
    assert m["n_pixels"] == 6 and m["accuracy"] == pytest.approx(3 / 6)
    assert m["per_class_accuracy"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 0.0})
    # IoU = TP / (TP + FP + FN): a 2 / (2 + 1 + 1), b 1 / (1 + 1 + 1), c 0 / (0 + 0 + 1)
    assert m["per_class_iou"] == pytest.approx({"a": 0.5, "b": 1 / 3, "c": 0.0})
    assert m["miou"] == pytest.approx((0.5 + 1 / 3) / 3) and m["mean_class_accuracy"] == pytest.approx(7 / 18)
    absent = segmentation_metrics(np.diag([0, 4, 0, 0]), names, frames=1)
    assert absent["per_class_iou"] == {"a": 1.0, "b": None, "c": None} and absent["miou"] == 1.0  # nan-mean


def test_dense_losses_are_per_pixel_means_and_the_ce_ignores_void():
    from mstcli.methods.losses import kd_per_sample
    from mstcli.methods.mst.dense_gate import DenseGateNet
    from mstcli.methods.tasks import SEGMENTATION

    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4)
    by_hand = torch.stack(
        [torch.stack([kd_per_sample(student[b, :, i, j], teacher[b, :, i, j], 4.0) for i in range(3) for j in range(4)])
         for b in range(2)]  # fmt: skip
    )
    assert torch.allclose(SEGMENTATION.kd_per_sample(student, teacher, 4.0), by_hand.mean(dim=1))
    labels = torch.randint(0, 5, (2, 3, 4))
    labels[0, 0] = 0
    valid = labels != 0
    picked = -torch.log_softmax(student, 1).gather(1, labels[:, None])[:, 0]
    assert torch.allclose(SEGMENTATION.ce(student, labels.to(torch.uint8)), picked[valid].mean())
    gate = DenseGateNet(5, 4)
    assert gate.depthwise.groups == 10 and gate.depthwise.stride == (2, 2)
    assert torch.allclose(gate(student).sum(dim=1), torch.ones(2))


def test_vgg16_weights_fill_the_encoders(tmp_path):
    from mstcli.models.nyudepth import VGG16_CONVS, FuseNetI, load_vgg16

    net = FuseNetI(((3, 32, 32), (1, 32, 32)), 41, width_divisor=16)
    rgb_convs, depth_convs = net.encoder_convs()
    state = {}
    for index, conv in zip(VGG16_CONVS, rgb_convs, strict=True):
        state[f"features.{index}.weight"] = torch.randn_like(conv.weight)
        state[f"features.{index}.bias"] = torch.randn_like(conv.bias)
    torch.save(state, tmp_path / "vgg16.pt")
    load_vgg16(net, tmp_path / "vgg16.pt")
    assert torch.equal(rgb_convs[5].weight, state["features.12.weight"])
    assert torch.equal(depth_convs[5].weight, state["features.12.weight"])
    assert torch.allclose(depth_convs[0].weight, state["features.0.weight"].mean(dim=1, keepdim=True))


@pytest.mark.parametrize(
    "keys, message",
    [
        (lambda i, d, y: {"images": i, "labels40": y}, "missing key 'depths'"),
        (lambda i, d, y: {"images": i, "depths": d[:, :40], "labels40": y}, "depths must be 10 x 64 x 48"),
        (lambda i, d, y: {"images": i[:, :2], "depths": d, "labels40": y}, "images must be N x 3 x W x H"),
        (lambda i, d, y: {"images": i, "depths": d, "labels40": y + 41}, "labels40 holds"),
        (lambda i, d, y: {"images": i, "depths": d, "labels": y}, "set prepare.label_map"),
    ],
)
def test_malformed_mat_is_refused_in_one_line(tmp_path, keys, message):
    path = write_mat(tmp_path / "bad.mat", keys(*frames()))
    assert message in prepare_fails("--dataset", "nyudepth", "--source", str(path), "--out", str(tmp_path / "x.h5"))
    assert not (tmp_path / "x.h5").exists()


def test_not_an_hdf5_mat_is_refused(tmp_path):
    (tmp_path / "old.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    assert "not a MATLAB v7.3 (HDF5)" in prepare_fails("--dataset", "nyudepth", "--source", str(tmp_path / "old.mat"))


def test_dense_bank_is_float16_where_it_fits_else_recomputed():
    from mstcli.engine.splits import Split
    from mstcli.methods.tasks import SEGMENTATION

    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 5, 1)
    split = Split({"rgb": torch.randn(7, 3, 4, 6)}, torch.zeros(7, 4, 6, dtype=torch.uint8))
    experts = lambda inputs: torch.stack([net(inputs["rgb"]), 2 * net(inputs["rgb"])])  # noqa: E731  E x B x C x H x W
    bank = SEGMENTATION.frozen_outputs(experts, split, 3, memory_mb=1, outputs=2, per_row=(5, 4, 6))
    assert bank.data.dtype == torch.float16 and bank.nbytes == 2 * 2 * 7 * 5 * 4 * 6
    rows = torch.tensor([6, 0, 3])
    with torch.no_grad():
        exact = experts({"rgb": split.inputs["rgb"][rows]})
    got = bank[:, rows]
    assert got.dtype == torch.float32 and torch.allclose(got, exact, atol=2e-3, rtol=1e-3)
    assert SEGMENTATION.frozen_outputs(experts, split, 3, memory_mb=0, outputs=2, per_row=(5, 4, 6)) is None
