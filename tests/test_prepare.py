from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_result import one_line_error
from conftest import digit_image
from typer.testing import CliRunner

from mstcli.cli import app
from mstcli.data.store import FeatureFile

runner = CliRunner()

CLEAN = [
    "-S",
    "prepare.num_samples=200",
    "-S",
    "prepare.image_energy=1.0",
    "-S",
    "prepare.image_noise=0.0",
    "-S",
    "prepare.snr_db=[60,60]",
    "-S",
    "prepare.speed=[1.0,1.0]",
    "-S",
    "prepare.gain_db=[0,0]",
    "-S",
    "prepare.shift_seconds=0.0",
    "-S",
    "prepare.spec_size=16",
]


def run_prepare(raw: Path, out: Path, *extra: str):
    return runner.invoke(app, ["prepare", "--source", str(raw), "--out", str(out), *extra])


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the built-in defaults apply


def test_prepare_writes_paired_features(raw_avdigits, tmp_path):
    out = tmp_path / "f.h5"
    result = run_prepare(raw_avdigits, out, *CLEAN)
    assert result.exit_code == 0, result.output
    features = FeatureFile.open(out)
    assert features.modalities == {"image": (1, 28, 28), "audio": (1, 16, 16)}
    assert features.class_names == [str(d) for d in range(10)]
    labels = features.labels()
    images, spectrograms = features.read("image"), features.read("audio")
    assert images.dtype == np.float32 and len(images) == len(spectrograms) == len(labels) == 200
    # images: the bright band sits in the label's rows
    for image, label in zip(images[:50], labels[:50], strict=True):
        rows = image[0].mean(axis=1)
        assert abs(int(np.argmax(rows)) - int(np.argmax(digit_image(int(label)).mean(axis=1)))) <= 1
    # audio: the loudest mel band rises with the digit (each digit's tone is higher), no overlap between digits
    peak_band = spectrograms[:, 0].mean(axis=2).argmax(axis=1)
    bands = [peak_band[labels == d] for d in range(10)]
    assert all(bands[d].max() < bands[d + 1].min() for d in range(9))


def test_file_holds_splits_and_attrs(raw_avdigits, tmp_path):
    out = tmp_path / "f.h5"
    assert run_prepare(raw_avdigits, out, "-S", "prepare.num_samples=100").exit_code == 0
    np.random.seed(19980427)  # the reference's index files: 20 successive permutations of numpy's global generator
    expected = np.stack([np.random.permutation(100) for _ in range(20)])
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["splits/permutations"][:], expected)
        assert f.attrs["schema_version"] == 1 and f.attrs["dataset"] == "avdigits"
        assert '"num_samples": 100' in f.attrs["params"]
    sizes = {k: len(v) for k, v in FeatureFile.open(out).split_indices(2).items()}
    assert sizes == {"train": 60, "val": 20, "test": 20}


def test_same_params_same_arrays(raw_avdigits, tmp_path):
    a, b, c = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"
    assert run_prepare(raw_avdigits, a, "-S", "prepare.num_samples=120").exit_code == 0
    assert run_prepare(raw_avdigits, b, "-S", "prepare.num_samples=120").exit_code == 0
    assert run_prepare(raw_avdigits, c, "-S", "prepare.num_samples=120", "-S", "prepare.seed=1").exit_code == 0
    fa, fb, fc = (FeatureFile.open(p) for p in (a, b, c))
    for modality in ("image", "audio"):
        np.testing.assert_array_equal(fa.read(modality), fb.read(modality))
        assert not np.array_equal(fa.read(modality), fc.read(modality))
    np.testing.assert_array_equal(fa.labels(), fb.labels())


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["-S", "prepare.num_sampels=100"], "prepare.num_sampels"),
        (["-S", "prepare.num_samples=many"], "prepare.num_samples"),
        (["-S", "prepare.num_samples=1.5"], "prepare.num_samples"),
        (["-S", "prepare.num_samples=5"], "prepare.num_samples"),
        (["-S", "prepare.snr_db=[10,0]"], "prepare.snr_db"),
        (["-S", "common.seed=20"], "common.seed"),
        (["-S", "common.run=../elsewhere"], "common.run"),
        (["-S", "bogus.key=1"], "bogus"),
        (["--dataset", "nosuchset"], "nosuchset"),
        (["-S", "prepare.source=/no/such/file.h5"], "/no/such/file.h5"),
    ],
)
def test_bad_input_is_one_line_exit_2(raw_avdigits, tmp_path, args, culprit):
    out = tmp_path / "f.h5"
    one_line_error(runner.invoke(app, ["prepare", "--out", str(out), *args]), culprit)
    assert not out.exists()


def test_bad_params_file_is_one_line(tmp_path):
    (tmp_path / "p.yaml").write_text("prepare:\n  num_samples: [1\n")
    result = runner.invoke(app, ["prepare", "--params", str(tmp_path / "p.yaml")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_source_that_is_not_avdigits_is_named(tmp_path):
    broken = tmp_path / "broken.h5"
    with h5py.File(broken, "w") as f:
        f["images"] = np.zeros((5, 28, 28), dtype=np.uint8)
    result = run_prepare(broken, tmp_path / "f.h5")
    assert result.exit_code == 2 and "missing" in result.output and "audio" in result.output


def test_failed_prepare_leaves_nothing(raw_avdigits, tmp_path, monkeypatch):
    import mstcli.data.sources.avdigits as avdigits

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(avdigits, "log_mel", explode)
    out = tmp_path / "f.h5"
    result = run_prepare(raw_avdigits, out, "-S", "prepare.num_samples=100")
    assert result.exit_code != 0
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != raw_avdigits.name)
    assert left == [], "no output and no temporary file may be left"


def test_failed_prepare_keeps_previous_output(raw_avdigits, tmp_path, monkeypatch):
    import mstcli.data.store as store

    out = tmp_path / "f.h5"
    assert run_prepare(raw_avdigits, out, "-S", "prepare.num_samples=100").exit_code == 0
    before = out.read_bytes()

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store.FeatureWriter, "write_labels", explode)
    result = run_prepare(raw_avdigits, out, "-S", "prepare.num_samples=120")
    assert result.exit_code == 130
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".f.h5")] == []


def test_info_shows_modalities_and_splits(raw_avdigits, tmp_path):
    out = tmp_path / "f.h5"
    assert run_prepare(raw_avdigits, out, "-S", "prepare.num_samples=100").exit_code == 0
    result = runner.invoke(app, ["info", str(out)])
    assert result.exit_code == 0
    for text in ("image", "audio", "1 x 28 x 28", "train (60)", "val (20)", "test (20)"):
        assert text in result.output


def test_info_on_missing_file_is_an_error(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path / "nope.h5")])
    assert result.exit_code == 2 and "not found" in result.output


def test_default_source_is_the_embedded_file(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    raw = repo / "data" / "raw" / "avdigits.h5"
    assert raw.stat().st_size < 15e6
    result = run_prepare(raw, tmp_path / "f.h5", "-S", "prepare.num_samples=50")
    assert result.exit_code == 0, result.output
    assert FeatureFile.open(tmp_path / "f.h5").num_samples == 50
