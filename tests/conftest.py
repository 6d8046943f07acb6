"""Shared fixtures: tiny sources in the real on-disk formats, made by the tests themselves."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

RATE = 8000


def tone_hz(digit: int) -> float:
    """Each digit's test clip is a pure tone at its own frequency, so a spectrogram tells the digit."""
    return 300.0 + 300.0 * digit


def digit_image(digit: int) -> np.ndarray:
    """A 28x28 image that is bright in the digit's own row band, so an image tells the digit."""
    image = np.zeros((28, 28), dtype=np.uint8)
    image[2 + 2 * digit : 4 + 2 * digit, 4:24] = 255
    return image


def write_raw_avdigits(path: Path, num_images: int = 400, clips_per_digit: int = 2, seed: int = 0) -> Path:
    """A tiny source in the layout of data/raw/avdigits.h5 (the layout scripts/build_avdigits.py writes)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, num_images).astype(np.uint8)
    images = np.stack([digit_image(int(d)) for d in labels])
    t = np.arange(int(0.4 * RATE)) / RATE
    clips, clip_labels = [], []
    for digit in range(10):
        for k in range(clips_per_digit):
            clips.append(np.sin(2 * np.pi * tone_hz(digit) * t) * (0.5 + 0.2 * k))
            clip_labels.append(digit)
    waves = np.round(np.stack(clips) * 32767 * 0.9).astype(np.int16)
    with h5py.File(path, "w") as f:
        f.attrs["sample_rate"] = RATE
        f["images"] = images
        f["image_labels"] = labels
        f["audio"] = waves
        f["audio_lengths"] = np.full(len(waves), waves.shape[1], dtype=np.int32)
        f["audio_labels"] = np.array(clip_labels, dtype=np.uint8)
    return path


TINY_SHAPES = {"image": (1, 28, 28), "audio": (1, 16, 16)}


def tiny_trio(student: str = "audio"):
    """AV-Digits' nets at small input sizes, frozen, with their stage-1 fingerprint (no training needed)."""
    import torch

    from mstcli.engine.checkpoints import state_fingerprint
    from mstcli.models.trio import RunSpec, Trio

    torch.manual_seed(0)
    spec = RunSpec(
        dataset="avdigits",
        modalities=("image", "audio"),
        student=student,
        shapes=TINY_SHAPES,
        num_classes=10,
        class_names=tuple(str(d) for d in range(10)),
        multimodal_net="cnn_i",
        student_net={"image": "lenet5", "audio": "three_layer_cnn_a"}[student],
        cm_nets={"image": {"audio": "three_layer_cnn_a"}, "audio": {"image": "lenet5"}}[student],
    )
    trio = Trio(spec).eval()
    trio.requires_grad_(False)
    trio.fingerprint = state_fingerprint(trio.state_dict())
    return trio


def random_split(n: int, seed: int = 1):
    """A split of random inputs in TINY_SHAPES and random labels."""
    import torch

    from mstcli.engine.splits import Split

    g = torch.Generator().manual_seed(seed)
    return Split(
        {m: torch.rand(n, *s, generator=g) for m, s in TINY_SHAPES.items()}, torch.randint(0, 10, (n,), generator=g)
    )


def invoke(*args: str):
    """Run the CLI in this process; a failing command fails the test with its output."""
    from typer.testing import CliRunner

    from mstcli.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def tiny_workdir(root: Path, params: dict, num_images: int = 400) -> Path:
    """``root`` with a tiny raw AV-Digits source and a params.yaml of ``params`` reading it."""
    import yaml

    raw = write_raw_avdigits(root / "raw.h5", num_images=num_images)
    (root / "params.yaml").write_text(yaml.safe_dump(dict(params, prepare={**params["prepare"], "source": str(raw)})))
    return root


# tiny runs of both directions that learn the test's digits (test_predict.py, test_export.py)
TINY_RUN_PARAMS = {
    "common": {"threads": 1},
    "prepare": {"num_samples": 300, "spec_size": 16, "image_energy": 0.9, "snr_db": [10.0, 20.0]},
    "train": {"epochs": 3, "batch_size": 32, "lr": 0.003},
    "distill": {"epochs": 12, "batch_size": 32, "lr": 0.005, "method": "none"},
}


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """A prepared tiny workdir with a trained image student (run img) and audio student (run aud), trained once
    for the whole session because training is the dear part of the predict and export tests."""
    root = tiny_workdir(tmp_path_factory.mktemp("runs"), TINY_RUN_PARAMS)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        invoke("prepare")
        for student, run in (("image", "img"), ("audio", "aud")):
            overrides = ["-S", f"common.student={student}", "-S", f"common.run={run}"]
            invoke("train", *overrides)
            invoke("distill", *overrides)
    return root


@pytest.fixture
def raw_avdigits(tmp_path: Path) -> Path:
    return write_raw_avdigits(tmp_path / "raw.h5")


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(1)
    yield


def tensors(value, prefix=""):
    """(path, tensor) for every tensor inside a checkpoint's nested dicts and lists, in a fixed order."""
    import torch

    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for k in sorted(value):
            yield from tensors(value[k], f"{prefix}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from tensors(v, f"{prefix}[{i}]")
