"""VGGSound-50k from per-clip feature files, the metadata list and segment labels; errors named."""

from pathlib import Path

import numpy as np
from source_pipeline import check_eval_files, invoke, prepare_fails, run_all_stages, write_params

from mstcli.data.store import FeatureFile


def write_vggsound(root: Path, clips: int = 20, classes: int = 3, seed: int = 0) -> Path:
    """Feature files split over two folders, segment labels in seg_labels/, metadata lines name&label. Learnable:
    a clip of class c has its audio embedding raised in dimensions 40c to 40c + 39 of every segment."""
    rng = np.random.default_rng(seed)
    for folder in ("visual_features", "audio_features", "seg_labels"):
        (root / folder).mkdir(parents=True)
    lines = []
    for i in range(clips):
        name, label = f"clip{i:03d}_000{i % 7}", i % classes
        audio = rng.normal(0.0, 1.0, (10, 128))
        audio[:, 40 * label : 40 * label + 40] += 3.0
        np.save(root / f"visual_features/{name}_vFeature.npy", rng.gamma(1.0, 2.0, (10, 7, 7, 512)).astype(np.float32))
        np.save(root / f"audio_features/{name}_aFeature.npy", audio.astype(np.float32))
        np.save(root / f"seg_labels/{name}_sLabel.npy", rng.integers(0, 2, (1, 10)))
        lines.append(f"{name}&{label}")
    (root / "VGGS50k_metadata.txt").write_text("\n".join(lines) + "\n")
    return root


def test_vggsound_is_scaled_globally_and_runs(tmp_path, monkeypatch):
    source = write_vggsound(tmp_path / "vggs")
    # the metadata's order, not the file names' order, is the row order
    lines = (source / "VGGS50k_metadata.txt").read_text().split()
    lines = [lines[i] for i in np.random.default_rng(1).permutation(len(lines))]
    (source / "VGGS50k_metadata.txt").write_text("\n".join(lines) + "\n")
    names, labels = [line.split("&")[0] for line in lines], [int(line.split("&")[1]) for line in lines]
    assert names != sorted(names)

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, "vggsound", source)
    invoke("prepare")
    path = tmp_path / "data/features/vggsound.h5"
    features = FeatureFile.open(path)
    assert features.modalities == {"visual": (10, 7, 7, 512), "audio": (10, 128)}
    assert features.class_names == ["class_0", "class_1", "class_2"]
    assert features.labels().tolist() == labels

    # every row of both modalities is its metadata line's clip, scaled by one data-set-wide minimum and maximum
    audio = np.stack([np.load(source / f"audio_features/{n}_aFeature.npy") for n in names]).astype(np.float64)
    expected = (audio - audio.min()) / (audio.max() - audio.min())
    np.testing.assert_allclose(features.read("audio"), expected, rtol=1e-5, atol=1e-6)
    visual = np.stack([np.load(source / f"visual_features/{n}_vFeature.npy") for n in names]).astype(np.float64)
    expected = (visual - visual.min()) / (visual.max() - visual.min())
    np.testing.assert_allclose(features.read("visual"), expected, rtol=1e-5, atol=1e-6)
    del visual, expected

    # 20 short epochs of S3: over fixture seeds 0-7 the audio student got every one of the 4 test clips right
    run_all_stages(tmp_path, "audio", "-S", "distill.epochs=20")
    metrics = check_eval_files(tmp_path, "audio", path, "audio")
    assert metrics["n_test"] == 20 - int(0.8 * 20)
    assert metrics["correct"] >= 3, f"the audio student learned nothing: {metrics['correct']}/4 right (chance 1.3)"


def test_vggsound_category_names_number_in_order_of_appearance(tmp_path, monkeypatch):
    source = write_vggsound(tmp_path / "vggs", clips=4)
    names = [line.split("&")[0] for line in (source / "VGGS50k_metadata.txt").read_text().split()]
    (source / "VGGS50k_metadata.txt").write_text(
        "\n".join(
            f"{n}&{c}" for n, c in zip(names, ["dog barking", "playing piano", "dog barking", "rain"], strict=True)
        )
    )
    monkeypatch.chdir(tmp_path)
    invoke("prepare", "--dataset", "vggsound", "--source", str(source))
    features = FeatureFile.open(tmp_path / "data/features/vggsound.h5")
    assert features.class_names == ["dog barking", "playing piano", "rain"]
    assert features.labels().tolist() == [0, 1, 0, 2]


def test_vggsound_errors_name_the_file(tmp_path):
    source = write_vggsound(tmp_path / "a", clips=4)
    (source / "audio_features/clip002_0002_aFeature.npy").unlink()
    assert "clip002_0002_aFeature.npy: missing" in prepare_fails("--dataset", "vggsound", "--source", str(source))

    source = write_vggsound(tmp_path / "b", clips=4)
    np.save(source / "visual_features/clip001_0001_vFeature.npy", np.zeros((10, 7, 7, 256), dtype=np.float32))
    message = prepare_fails("--dataset", "vggsound", "--source", str(source))
    assert "clip001_0001_vFeature.npy: visual features must have shape 10x7x7x512, got 10x7x7x256" in message

    source = write_vggsound(tmp_path / "c", clips=4)
    (source / "VGGS50k_metadata.txt").write_text("clip000_0000&0\nclip001_0001 1\n")
    assert "line 2 is not name&label" in prepare_fails("--dataset", "vggsound", "--source", str(source))

    (source / "VGGS50k_metadata.txt").unlink()
    assert "VGGS50k_metadata.txt: missing" in prepare_fails("--dataset", "vggsound", "--source", str(source))
