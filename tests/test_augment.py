"""``train.augment``: random resized crops (and mirrors) of the image modalities of training batches in S1 and S3,
with the teachers' output banks off while augmenting, and one-line refusals where there is no picture to crop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from own_network_fixtures import learnable_folder, write_params
from typer.testing import CliRunner

from mstcli.cli import app
from mstcli.engine.augment import ImageAugment
from mstcli.engine.checkpoints import Stage1Checkpoint
from mstcli.engine.splits import Split

runner = CliRunner()


def ramp_images(n: int, size: int = 16) -> torch.Tensor:
    """uint8 images whose value grows left to right (column * 15), the same in every row and channel."""
    columns = torch.arange(size, dtype=torch.float32) * 15
    return columns.expand(n, 3, size, size).round().to(torch.uint8).contiguous()


def generator(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_full_area_square_crop_without_flip_is_the_identity():
    images = torch.randint(0, 256, (6, 3, 12, 12), dtype=torch.uint8)
    out = ImageAugment(("image",), scale=(1.0, 1.0), flip=False, ratio=(1.0, 1.0)).crop(images, generator())
    assert out.dtype == torch.uint8 and torch.equal(out, images)


def test_flip_mirrors_about_half_the_samples_and_keeps_the_rest():
    images = ramp_images(64)
    augment = ImageAugment(("image",), scale=(1.0, 1.0), flip=True, ratio=(1.0, 1.0))
    out = augment.crop(images, generator(1))
    rising = (out[:, 0, 0, -1].int() > out[:, 0, 0, 0].int()).sum().item()
    falling = (out[:, 0, 0, -1].int() < out[:, 0, 0, 0].int()).sum().item()
    assert rising + falling == 64
    assert 16 <= falling <= 48, falling  # mirrored with probability 1/2
    assert rising >= 16


def test_a_crop_zooms_into_a_part_of_the_image():
    images = ramp_images(32)
    out = ImageAugment(("image",), scale=(0.2, 0.3), flip=False).crop(images, generator(2))
    span_in = images[:, 0, 0, -1].int() - images[:, 0, 0, 0].int()
    span_out = out[:, 0, 0, -1].int() - out[:, 0, 0, 0].int()
    # a crop of 20-30 % of the area covers well under the full width at a ratio within [3/4, 4/3]
    assert (span_out < span_in * 0.7).all(), span_out
    assert (span_out > 0).all()  # not mirrored, still rising
    assert len({tuple(row.tolist()) for row in out[:, 0, 0]}) > 20  # each sample its own crop


def test_the_same_generator_state_draws_the_same_crops_and_other_modalities_are_untouched():
    images = torch.randint(0, 256, (8, 1, 10, 10), dtype=torch.uint8)
    audio = torch.randn(8, 1, 10, 10)
    batch = Split({"image": images, "audio": audio}, torch.zeros(8, dtype=torch.int64), torch.arange(8))
    augment = ImageAugment(("image",), scale=(0.3, 0.8), flip=True)
    first, second = augment(batch, generator(5)), augment(batch, generator(5))
    assert torch.equal(first.inputs["image"], second.inputs["image"])
    assert not torch.equal(first.inputs["image"], images)
    assert first.inputs["audio"] is audio and torch.equal(first.rows, batch.rows)
    float_out = augment.crop(images.float() / 255, generator(5))
    assert float_out.dtype == torch.float32


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return learnable_folder(tmp_path_factory.mktemp("augment") / "data", per_class=8)


@pytest.fixture
def run_dir(folder, tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").symlink_to(folder)
    return tmp_path


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_augmented_stages_say_so_and_train_other_nets(run_dir):
    write_params(run_dir, {}, prepare={"source": "data", "image_size": 32, "image_mode": "rgb"})
    assert invoke("prepare").exit_code == 0
    assert invoke("train", "-S", "common.run=plain").exit_code == 0
    augmented = invoke("train", "-S", "common.run=crops", "-S", "train.augment=crop_flip")
    assert augmented.exit_code == 0, augmented.output
    assert "train.augment: image of every training batch randomly cropped" in augmented.output
    plain = Stage1Checkpoint.load(run_dir / "models/plain/stage1.pt")
    crops = Stage1Checkpoint.load(run_dir / "models/crops/stage1.pt")
    # same seed, same data, same order: only the crops can make the image nets' weights differ
    image_nets = [k for k in plain.state if k.endswith("weight") and ("student" in k or "image" in k)]
    audio_only = [k for k in plain.state if k.startswith("cms.audio.") and k.endswith("weight")]
    assert image_nets and audio_only
    assert any(not torch.equal(plain.state[k], crops.state[k]) for k in image_nets)
    assert invoke("fit-masks", "-S", "common.run=crops").exit_code == 0
    distilled = invoke("distill", "-S", "common.run=crops", "-S", "train.augment=crop_flip")
    assert distilled.exit_code == 0, distilled.output
    assert "distill.bank off while augmenting" in distilled.output
    assert invoke("eval", "-S", "common.run=crops").exit_code == 0
    metrics = json.loads((run_dir / "results/crops/metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0


def test_augment_without_pictures_is_one_line(tmp_path, monkeypatch):
    import numpy as np
    from folder_fixtures import NAMES, write_table, write_wav

    monkeypatch.chdir(tmp_path)
    rows = []
    for i in range(24):  # sound clips and sensor arrays: nothing to crop
        write_wav(tmp_path / "data" / "sounds" / f"{i:03d}.wav", i % len(NAMES))
        (tmp_path / "data" / "arrays").mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "data" / "arrays" / f"{i:03d}.npy", np.full((4,), i % len(NAMES), dtype=np.float32))
        rows.append({"audio_file_name": f"sounds/{i:03d}.wav", "sensor_file_name": f"arrays/{i:03d}.npy",
                     "label": NAMES[i % len(NAMES)]})  # fmt: skip
    write_table(tmp_path / "data" / "metadata.csv", rows)
    write_params(tmp_path, {}, common={"student": "sensor"})
    assert invoke("prepare").exit_code == 0
    result = invoke("train", "-S", "train.augment=crop")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "train.augment=crop: no image modality stored as pixels" in lines[0], lines
    assert not (tmp_path / "models/main/stage1.pt").exists()
