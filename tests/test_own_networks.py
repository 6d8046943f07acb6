"""Nets a user chooses in ``models``: torchvision builders, Hugging Face folders and their own factories as
student and teachers, MaskNets and hints on named layers, frozen weights, and every refusal in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_result import one_line_error
from own_network_fixtures import learnable_folder, tiny_vit, write_factory, write_params
from typer.testing import CliRunner

from mstcli.cli import app
from mstcli.engine.checkpoints import MasksCheckpoint, Stage1Checkpoint, StudentCheckpoint

runner = CliRunner()

RESNET_TEACHERS = {
    "student": "torchvision:resnet18",
    "encoders": {"image": "torchvision:resnet18"},
    "mask_layers": {"mm": ["image.layer3", "image.layer4"]},
}


def ok(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return learnable_folder(tmp_path_factory.mktemp("own_nets") / "data", per_class=12)


@pytest.fixture
def run_dir(folder, tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").symlink_to(folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return tmp_path


def stages(*sets: str) -> None:
    for stage in ("prepare", "train", "fit-masks", "distill", "eval"):
        ok(stage, *sets)


def test_resnet18_student_under_resnet18_teachers_learns_and_predicts(run_dir):
    write_params(run_dir, RESNET_TEACHERS, train={"epochs": 3}, distill={"epochs": 6})
    stages()
    masks = MasksCheckpoint.load(run_dir / "models/main/masks.pt").masks
    assert [(m.teacher, m.layer, len(m.shape)) for m in masks] == [
        ("mm", "encoders.image.backbone.layer3", 3),
        ("mm", "encoders.image.backbone.layer4", 3),
        ("cm", "encoder.conv3", 3),  # the audio CM teacher is mst's own map net: its own pair
        ("cm", "encoder.fc1", 1),
    ]
    assert masks[0].shape[0] == 256 and masks[1].shape[0] == 512  # ResNet-18's layer3 / layer4 widths
    student = StudentCheckpoint.load(run_dir / "models/main/student.pt")
    assert student.spec["nets"]["models"]["student"] == "torchvision:resnet18"
    assert "encoder.backbone.layer4.1.bn2.running_var" in student.state  # a real ResNet-18, BatchNorm and all
    metrics = json.loads((run_dir / "results/main/metrics.json").read_text())
    assert metrics["accuracy"] >= 0.5, metrics  # three classes: a constant guess gets a third
    out = ok("predict", "data/pics/000.png", "--json").output
    assert json.loads(out)["predictions"][0]["class"] in ("apple", "banana", "cherry")
    ok("export")
    assert (run_dir / "models/main/export/student.onnx").is_file()


def test_a_changed_models_setting_is_refused_by_the_later_stages(run_dir):
    write_params(run_dir, RESNET_TEACHERS)
    ok("prepare")
    ok("train")
    line = one_line_error(
        runner.invoke(app, ["fit-masks", "-S", "models.student=torchvision:resnet34"]), "models.student", "resnet18"
    )
    assert "mst train" in line
    assert not (run_dir / "models/main/masks.pt").exists()


def test_factory_encoder_with_default_masks(run_dir):
    write_factory(run_dir)
    write_params(run_dir, {"encoders": {"audio": "mynets:make_encoder"}})
    ok("prepare")
    result = ok("train")
    assert "cm: MaskNets on 2, 6" in result.output  # the Sequential's last two layers with weights, logged
    stage1 = Stage1Checkpoint.load(run_dir / "models/main/stage1.pt")
    assert tuple(stage1.state["cms.audio.net.encoder.backbone.6.weight"].shape) == (48, 128)
    assert tuple(stage1.state["mm.net.encoders.audio.backbone.6.weight"].shape) == (48, 128)
    ok("fit-masks")
    ok("distill")
    masks = MasksCheckpoint.load(run_dir / "models/main/masks.pt").masks
    assert [(m.teacher, m.layer, m.shape) for m in masks] == [
        ("mm", "fc1", (256,)),  # the fusion head, as in mst's own MM nets
        ("mm", "fc2", (128,)),
        ("cm", "encoder.backbone.2", (32, 32, 32)),
        ("cm", "encoder.backbone.6", (48,)),
    ]


def test_freeze_keeps_weights_and_batchnorm_statistics(run_dir):
    from mstcli.config import load_params
    from mstcli.models.chosen import nets_record
    from mstcli.models.trio import ModalNet, RunSpec

    params = load_params(overrides=["models.student=torchvision:resnet18", "models.freeze.student=layer3"])
    spec = RunSpec(
        dataset="folder", modalities=("image", "audio"), student="image",
        shapes={"image": (3, 32, 32), "audio": (1, 32, 32)}, num_classes=3, class_names=("a", "b", "c"),
        multimodal_net="folder_fusion_net", student_net="folder_map_net", cm_nets={"audio": "folder_map_net"},
        nets=nets_record(params.models, {"image": "uint8"}, run_dir),
    )  # fmt: skip
    net = ModalNet(spec.build_student(load_weights=True), ("image",))
    named = dict(net.net.named_parameters())
    assert not named["encoder.backbone.layer3.1.conv2.weight"].requires_grad
    assert named["encoder.backbone.layer4.0.conv1.weight"].requires_grad and named["head.weight"].requires_grad
    frozen_bn = net.net.get_submodule("encoder.backbone.layer2.0.bn1")
    live_bn = net.net.get_submodule("encoder.backbone.layer4.0.bn1")
    before = frozen_bn.running_mean.clone(), live_bn.running_mean.clone()
    net.train()
    assert not frozen_bn.training and live_bn.training
    optimizer = torch.optim.Adam(net.parameters(), 1e-2)
    weight = named["encoder.backbone.conv1.weight"].detach().clone()
    loss = net({"image": torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)}).logsumexp(1).mean()
    loss.backward()
    optimizer.step()
    assert torch.equal(frozen_bn.running_mean, before[0])  # BatchNorm statistics of fixed layers untouched
    assert not torch.equal(live_bn.running_mean, before[1])
    assert torch.equal(named["encoder.backbone.conv1.weight"], weight)


def test_hint_layers_are_what_fitnet_taps(run_dir):
    models = {**RESNET_TEACHERS, "hint_layers": {"student": ["layer2"], "mm": ["image.layer3"]}}
    write_params(run_dir, models, distill={"method": "fitnet", "epochs": 2})
    ok("prepare")
    ok("train")
    result = ok("distill")
    assert "fitnet" in result.output
    from mstcli.config import load_params
    from mstcli.models.taps import FeatureTap, hint_layers
    from mstcli.models.trio import Trio

    stage1 = Stage1Checkpoint.load(run_dir / "models/main/stage1.pt")
    trio = Trio.from_checkpoint(stage1)
    assert load_params().models.hint_layers["student"] == ["layer2"]
    tap = FeatureTap(trio.student.net, hint_layers(trio.student.net), penultimate=False)
    trio.student({"image": torch.zeros(2, 3, 32, 32, dtype=torch.uint8)})
    assert tuple(tap["encoder.backbone.layer2"].shape) == (2, 128, 4, 4)  # ResNet-18's layer2 at 32 px
    assert hint_layers(trio.mm.net) == ("encoders.image.backbone.layer3",)


def test_hf_vit_student_with_token_masks(run_dir):
    tiny_vit(run_dir / "vit")
    models = {"student": "hf:vit", "encoders": {"image": "hf:vit"}, "mask_layers": {"mm": ["image.layers.1"]}}
    write_params(run_dir, models)
    stages()
    masks = MasksCheckpoint.load(run_dir / "models/main/masks.pt").masks
    mm = [m for m in masks if m.teacher == "mm"]
    assert [(m.layer, m.shape) for m in mm] == [("encoders.image.backbone.layers.1", (17, 32))]  # (T, D)
    ok("predict", "data/pics/001.png")
    ok("export")


# ---- the masks on token sequences --------------------------------------------------------------------------


def test_token_masknet_scales_each_channel_alike_for_every_token():
    from mstcli.methods.mst.masknet import masknet_for

    net = masknet_for((5, 12), heads=1, hidden_dim_factor=4)
    z = torch.randn(3, 5, 12)
    out = net(z)
    ratio = out / z
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)  # one mask over D, shared by tokens
    assert torch.allclose(ratio[:, 0], net.mask(z), atol=1e-5)
    assert not torch.allclose(ratio[0, 0], ratio[1, 0])  # the mask depends on the sample


# ---- bad input: exit 2, one line, nothing written ----------------------------------------------------------


def prepare_then_train(models: dict):
    """The first refusal of prepare (which reads what the nets need) or train (which builds them)."""
    result = runner.invoke(app, ["prepare"])
    return runner.invoke(app, ["train"]) if result.exit_code == 0 else result


def nothing_written(root: Path) -> None:
    written = [p for p in (root / "models").rglob("*.pt")] if (root / "models").exists() else []
    assert not written, written


@pytest.mark.parametrize(
    ("models", "culprits"),
    [
        ({"student": "torchvision:resnet81"}, ("resnet81", "nearest: resnet18")),
        ({"student": "hf:no_such_folder"}, ("no_such_folder", "folder")),
        ({"encoders": {"audio": "nonexistent_mod:make"}}, ("models.encoders.audio", "nonexistent_mod")),
        ({"encoders": {"audio": "mynets:raises"}}, ("mynets:raises", "no net for you")),
        ({"encoders": {"audio": "mynets:not_a_module"}}, ("not_a_module", "not a torch nn.Module")),
        ({"encoders": {"audio": "mynets:missing"}}, ("mynets", "no callable missing")),
        ({**RESNET_TEACHERS, "mask_layers": {"mm": ["image.layer5"]}}, ("image.layer5", "nearest", "image.layer4")),
        ({"student": "torchvision:resnet18", "hint_layers": {"student": ["layr2"]}}, ("layr2", "layer2")),
    ],
)
def test_bad_models_settings_are_one_line(run_dir, models, culprits):
    write_factory(run_dir)
    write_params(run_dir, models)
    one_line_error(prepare_then_train(models), *culprits)
    nothing_written(run_dir)


def test_hf_folder_without_weights(run_dir):
    from transformers import ViTConfig

    ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        run_dir / "config_only"
    )
    write_params(run_dir, {"student": "hf:config_only"})
    one_line_error(prepare_then_train({}), "config_only", "no weights")
    nothing_written(run_dir)


def test_weights_of_another_architecture(run_dir):
    import torchvision

    torch.save(torchvision.models.resnet34(weights=None).state_dict(), run_dir / "r34.pth")
    write_params(run_dir, {"student": "torchvision:resnet18", "weights": {"student": "r34.pth"}})
    line = one_line_error(prepare_then_train({}), "r34.pth", "unexpected", "layer1.2.")
    assert "missing" not in line  # ResNet-34 has every key of ResNet-18, and more blocks
    nothing_written(run_dir)


def test_right_weights_are_loaded(run_dir):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), run_dir / "r18.pth")
    from mstcli.config import NetChoice
    from mstcli.models.encoders.base import EncoderRequest
    from mstcli.models.encoders.registry import build_encoder

    request = EncoderRequest("image", (3, 32, 32), "uint8", weights=run_dir / "r18.pth")
    encoder = build_encoder(NetChoice("torchvision", "resnet18"), request, "models.student")
    assert torch.equal(encoder.backbone.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    pixels = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    reference.fc = torch.nn.Identity()
    reference.eval(), encoder.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = reference((pixels.float() / 255 - mean) / std)
    assert torch.allclose(encoder(pixels), expected, atol=1e-5)  # ImageNet normalization of stored pixels


def test_a_layer_of_unsupported_rank_is_refused_by_fit_masks(run_dir):
    write_factory(run_dir)
    write_params(run_dir, {"encoders": {"audio": "mynets:five_d"}, "mask_layers": {"cm": ["2"]}})
    ok("prepare")
    ok("train")
    one_line_error(runner.invoke(app, ["fit-masks"]), "cm layer encoder.backbone.2", "(B, 2, 8, 1, 1)")
    assert not (run_dir / "models/main/masks.pt").exists()


def test_last_blocks_of_common_nets():
    import torchvision

    from mstcli.models.layer_paths import last_blocks

    assert last_blocks(torchvision.models.resnet18(weights=None), skip=("fc",)) == ["layer4.0", "layer4.1"]
    mobilenet = torchvision.models.mobilenet_v3_small(weights=None)
    assert last_blocks(mobilenet, skip=("classifier",)) == ["features.11", "features.12"]
    vit = torchvision.models.vit_b_16(weights=None, image_size=32)
    assert last_blocks(vit, skip=("heads",)) == ["encoder.layers.encoder_layer_10", "encoder.layers.encoder_layer_11"]


def test_hf_text_student_and_wav2vec2_teacher_through_every_stage(run_dir):
    import csv

    import transformers as tf
    from folder_fixtures import NAMES, write_table

    rows = list(csv.DictReader(open(run_dir / "data" / "metadata.csv")))
    text_root = run_dir / "texts"
    text_root.mkdir()
    for sub in ("pics", "sounds"):
        (text_root / sub).symlink_to(run_dir / "data" / sub)
    for i, row in enumerate(rows):
        row["caption_text"] = f"a {row['label']} here" if i % 2 else f"ripe {row['label']}"
    write_table(text_root / "metadata.csv", rows)
    torch.manual_seed(0)
    vocab = run_dir / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "here", "ripe", *NAMES]) + "\n")
    tf.BertTokenizer(str(vocab)).save_pretrained(run_dir / "bert")
    bert = tf.BertConfig(vocab_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=64)  # fmt: skip
    tf.BertModel(bert).save_pretrained(run_dir / "bert")
    w2v = tf.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                            conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 4),
                            num_feat_extract_layers=2)  # fmt: skip
    tf.Wav2Vec2Model(w2v).save_pretrained(run_dir / "w2v")
    tf.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(run_dir / "w2v")
    models = {"student": "hf:bert", "encoders": {"audio": "hf:w2v", "caption": "hf:bert"}}
    write_params(run_dir, models, common={"student": "caption"},
                 prepare={"source": "texts", "clip_seconds": 0.25, "text_max_length": 8})  # fmt: skip
    ok("prepare")
    result = ok("train")
    assert "cm:audio: MaskNets on encoder.layers.0, encoder.layers.1" in result.output  # wav2vec2's last two layers
    for stage in ("fit-masks", "distill", "eval"):
        ok(stage)
    masks = MasksCheckpoint.load(run_dir / "models/main/masks.pt").masks
    audio = [m for m in masks if m.teacher == "cm:audio"]
    assert len(audio) == 2 and all(len(m.shape) == 2 and m.shape[1] == 32 for m in audio)  # (frames, 32) tokens
    out = json.loads(ok("predict", "--text", "ripe apple", "--json").output)
    assert len(out["predictions"][0]["probabilities"]) == 3
