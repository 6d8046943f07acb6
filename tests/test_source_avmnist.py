"""AV-MNIST from MultiBench-style .npy files: prepared, run through every stage, and its errors."""

from pathlib import Path

import numpy as np
import pytest
from source_pipeline import check_eval_files, invoke, prepare_fails, run_all_stages, write_params

from mstcli.data.store import FeatureFile

SIDE = 16  # spectrogram side (112 in the real files)


def write_avmnist(root: Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> Path:
    """The MultiBench layout: flat 784-pixel images, square spectrograms, label files per part. Learnable: the digit
    marks its own pixel of the image (and sets its maximum) and raises its own row (3 + digit) of the spectrogram."""
    rng = np.random.default_rng(seed)
    (root / "image").mkdir(parents=True)
    (root / "audio").mkdir()
    for part, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 256, (n, 784)).astype(np.float32)
        images[np.arange(n), labels * 70] = 300.0  # the digit marks its own pixel (and sets the max)
        audio = rng.normal(size=(n, SIDE, SIDE)).astype(np.float32) * 5 + 2
        audio[np.arange(n), 3 + labels, :] += 20.0
        np.save(root / "image" / f"{part}_data.npy", images)
        np.save(root / "audio" / f"{part}_data.npy", audio)
        np.save(root / f"{part}_labels.npy", labels)
    return root


def scaled_per_sample(x: np.ndarray) -> np.ndarray:
    """Each row to [0, 1] by its own minimum and maximum, in float64."""
    x = x.reshape(len(x), -1).astype(np.float64)
    lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    return (x - lo) / (hi - lo)


def test_avmnist_is_concatenated_scaled_per_sample_and_runs(tmp_path, monkeypatch):
    source = write_avmnist(tmp_path / "avmnist", n_train=60, n_test=20)
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, "avmnist", source)
    invoke("prepare")
    path = tmp_path / "data/features/avmnist.h5"
    features = FeatureFile.open(path)
    assert features.modalities == {"image": (1, 28, 28), "audio": (1, SIDE, SIDE)}
    assert features.class_names == [str(d) for d in range(10)]

    # every row: train rows first, then test rows; both modalities and the label of row i from the same sample
    images = np.concatenate([np.load(source / f"image/{p}_data.npy") for p in ("train", "test")])
    audio = np.concatenate([np.load(source / f"audio/{p}_data.npy") for p in ("train", "test")])
    labels = np.concatenate([np.load(source / f"{p}_labels.npy") for p in ("train", "test")])
    assert features.labels().tolist() == labels.tolist()
    got_image, got_audio = features.read("image"), features.read("audio")
    np.testing.assert_allclose(got_image.reshape(80, -1), scaled_per_sample(images), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_audio.reshape(80, -1), scaled_per_sample(audio), rtol=1e-5, atol=1e-6)
    assert got_image.reshape(80, -1).argmax(axis=1).tolist() == (labels * 70).tolist()  # the pairing, visibly

    # 20 short epochs of S3 on the audio rows: over fixture seeds 0-7 the student got 15 or 16 of 16 test rows
    run_all_stages(tmp_path, "audio", "-S", "distill.epochs=20")
    metrics = check_eval_files(tmp_path, "audio", path, "audio")
    assert metrics["n_test"] == 80 - int(0.8 * 80)
    assert metrics["correct"] >= 8, f"the audio student learned nothing: {metrics['correct']}/16 right (chance 1.6)"


def test_avmnist_errors_name_the_file(tmp_path):
    source = write_avmnist(tmp_path / "a")
    (source / "audio/test_data.npy").unlink()
    assert "audio/test_data.npy: missing" in prepare_fails("--dataset", "avmnist", "--source", str(source))

    source = write_avmnist(tmp_path / "b")
    np.save(source / "test_labels.npy", np.zeros(3, dtype=np.int64))
    message = prepare_fails("--dataset", "avmnist", "--source", str(source))
    assert "image/test_data.npy" in message and "3 labels" in message

    source = write_avmnist(tmp_path / "c")
    np.save(source / "image/train_data.npy", np.zeros((30, 5, 7), dtype=np.float32))
    assert "image/train_data.npy: expected" in prepare_fails("--dataset", "avmnist", "--source", str(source))

    source = write_avmnist(tmp_path / "d")
    np.save(source / "train_labels.npy", np.full(30, 12))
    assert "train_labels.npy: label 12" in prepare_fails("--dataset", "avmnist", "--source", str(source))


@pytest.mark.parametrize("student", ["image"])
def test_avmnist_lazy_splits_give_the_same_batches(tmp_path, monkeypatch, student):
    """With common.memory_mb=0 every split is read lazily; the whole pipeline still runs."""
    source = write_avmnist(tmp_path / "avmnist")
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, "avmnist", source)
    invoke("prepare")
    import torch

    from mstcli.engine.splits import LazySplit, Split, load_splits

    features = FeatureFile.open(tmp_path / "data/features/avmnist.h5")
    eager = load_splits(features, 0, ["image", "audio"], torch.device("cpu"))
    lazily = load_splits(features, 0, ["image", "audio"], torch.device("cpu"), memory_mb=0)
    assert isinstance(lazily["train"], LazySplit) and isinstance(eager["train"], Split)
    rows = torch.tensor([5, 0, 17, 5])
    a, b = eager["train"].batch(rows), lazily["train"].batch(rows)
    assert torch.equal(a.inputs["audio"], b.inputs["audio"]) and torch.equal(a.labels, b.labels)
    assert torch.equal(b.rows, rows) and len(lazily["val"]) == len(eager["val"])
    run_all_stages(tmp_path, student, "-S", "common.memory_mb=0")
    check_eval_files(tmp_path, student, tmp_path / "data/features/avmnist.h5", student)  # lazily read test rows
