"""VGGSound-50k from per-clip feature files, the metadata list and segment labels; errors named."""

from pathlib import Path

import numpy as np

from mstcli.data.store import FeatureFile
from source_pipeline import invoke, prepare_fails, run_all_stages, write_params


def write_vggsound(root: Path, clips: int = 20, classes: int = 3, seed: int = 0) -> Path:
    """Feature files split over two folders, segment labels in seg_labels/, metadata lines name&label."""
    rng = np.random.default_rng(seed)
    for folder in ("visual_features", "audio_features", "seg_labels"):
        (root / folder).mkdir(parents=True)
    lines = []
    for i in range(clips):
        name, label = f"clip{i:03d}_000{i % 7}", i % classes
        np.save(root / f"visual_features/{name}_vFeature.npy", rng.gamma(1.0, 2.0, (10, 7, 7, 512)).astype(np.float32))
        np.save(root / f"audio_features/{name}_aFeature.npy", rng.normal(label, 1.0, (10, 128)).astype(np.float32))
        np.save(root / f"seg_labels/{name}_sLabel.npy", rng.integers(0, 2, (1, 10)))
        lines.append(f"{name}&{label}")
    (root / "VGGS50k_metadata.txt").write_text("\n".join(lines) + "\n")
    return root


def test_vggsound_is_scaled_globally_and_runs(tmp_path, monkeypatch):
    source = write_vggsound(tmp_path / "vggs")
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, "vggsound", source)
    invoke("prepare")
    features = FeatureFile.open(tmp_path / "data/features/vggsound.h5")
    assert features.modalities == {"visual": (10, 7, 7, 512), "audio": (10, 128)}
    assert features.class_names == ["class_0", "class_1", "class_2"]
    assert features.labels().tolist() == [i % 3 for i in range(20)]
    names = [line.split("&")[0] for line in (source / "VGGS50k_metadata.txt").read_text().split()]
    audio = np.stack([np.load(source / f"audio_features/{n}_aFeature.npy") for n in names])
    np.testing.assert_allclose(features.read("audio"), (audio - audio.min()) / (audio.max() - audio.min()), atol=1e-6)
    visual = np.stack([np.load(source / f"visual_features/{n}_vFeature.npy") for n in names[:3]])
    top = max(np.load(source / f"visual_features/{n}_vFeature.npy").max() for n in names)
    np.testing.assert_allclose(features.read("visual", np.arange(3)), visual / top, rtol=1e-5, atol=1e-6)  # min is 0

    metrics = run_all_stages(tmp_path, "audio")
    assert metrics["n_test"] == 4


def test_vggsound_category_names_number_in_order_of_appearance(tmp_path, monkeypatch):
    source = write_vggsound(tmp_path / "vggs", clips=4)
    names = [line.split("&")[0] for line in (source / "VGGS50k_metadata.txt").read_text().split()]
    (source / "VGGS50k_metadata.txt").write_text(
        "\n".join(f"{n}&{c}" for n, c in zip(names, ["dog barking", "playing piano", "dog barking", "rain"]))
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
