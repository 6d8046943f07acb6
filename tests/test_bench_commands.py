"""The `mst bench` and `mst debug` commands that replaced the bench/ scripts: each is registered with its options,
refuses a bad input with one line before it measures anything, and the random feature files of the speed
benchmarks have the shapes they promise. The measurements themselves are benchmarks, not tests: nothing here
trains a net."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_result import one_line_error
from typer.testing import CliRunner

from mstcli.cli import app

runner = CliRunner()

# command -> options its --help must list (the options the bench/ script had)
COMMANDS = {
    ("bench", "full-run"): ["--n", "--spec-size", "--student", "--epochs", "--scale-to", "--synthetic", "--mode",
                            "--no-report", "--workdir", "--params", "--set", "--json", "--out"],
    ("bench", "stages"): ["--n", "--spec-size", "--features", "--epochs", "--batch-size", "--factor", "--student",
                          "--s2-recompute", "--interleave", "--workdir", "--set", "--json", "--out"],
    ("bench", "resume-cost"): ["--n", "--spec-size", "--batch-size", "--factor", "--epochs", "--device", "--scale-to",
                               "--json", "--out"],
    ("bench", "torchrun"): ["--procs", "--params", "--set", "--json", "--out"],
    ("bench", "dense"): ["--frames", "--height", "--width", "--divisor", "--epochs", "--batch-size", "--factor",
                         "--student", "--workdir", "--reuse", "--set", "--json", "--out"],
    ("bench", "export"): ["RUN", "--repeats", "--set", "--json", "--out"],
    ("debug", "collapse"): ["STUDENT", "--features", "--json"],
}


@pytest.mark.parametrize("command", list(COMMANDS), ids=" ".join)
def test_every_command_is_registered_with_its_options(command):
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for option in COMMANDS[command]:
        assert option in result.output, f"{' '.join(command)}: {option} missing from --help"
    assert "--child" not in result.output  # mst bench dense's own child processes: not for users


def test_bench_lists_the_new_commands_and_debug_is_a_group():
    listed = runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "200"}).output
    for name in ("full-run", "stages", "resume-cost", "torchrun", "dense", "export", "speed", "folder", "accuracy"):
        assert name in listed, name
    debug = runner.invoke(app, ["debug", "--help"], env={"COLUMNS": "200"})
    assert debug.exit_code == 0 and "collapse" in debug.output and "explain a run's numbers" in debug.output


def test_collapse_of_a_missing_checkpoint_is_one_line(tmp_path):
    missing = tmp_path / "nowhere" / "student.pt"
    result = runner.invoke(app, ["debug", "collapse", str(missing)])
    one_line_error(result, "student checkpoint not found", str(missing))


def test_collapse_of_a_file_that_is_no_checkpoint_is_one_line(tmp_path):
    from mstcli.benchmarks.synthetic import synthetic_features

    features = synthetic_features(tmp_path / "f.h5", 40, 12)
    junk = tmp_path / "student.pt"
    junk.write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["debug", "collapse", str(junk), "--features", str(features)])
    one_line_error(result, str(junk), "not a readable mst student checkpoint")


def test_stages_with_a_missing_feature_file_is_one_line(tmp_path):
    missing = tmp_path / "features.h5"
    one_line_error(runner.invoke(app, ["bench", "stages", "--features", str(missing)]), str(missing))
    assert not any(tmp_path.iterdir())


def test_full_run_with_a_missing_settings_file_is_one_line(tmp_path):
    missing = tmp_path / "nothing.yaml"
    result = runner.invoke(app, ["bench", "full-run", "-p", str(missing), "--workdir", str(tmp_path / "work")])
    one_line_error(result, "settings file not found", str(missing))
    assert not (tmp_path / "work").exists()  # refused before anything was written


def test_full_run_refuses_an_unknown_mode(tmp_path):
    result = runner.invoke(app, ["bench", "full-run", "--mode", "threads", "--workdir", str(tmp_path / "work")])
    one_line_error(result, "--mode", "threads")


def test_full_run_refuses_a_bad_setting_before_it_writes_anything(tmp_path):
    preset = Path(__file__).resolve().parents[1] / "presets" / "full.yaml"
    work = tmp_path / "work"
    args = ["bench", "full-run", "-p", str(preset), "--synthetic", "--workdir", str(work)]
    one_line_error(runner.invoke(app, [*args, "-S", "train.epochs=0"]), "train.epochs")
    one_line_error(runner.invoke(app, [*args, "--epochs", "2", "0", "2"]), "fit_masks.epochs")
    assert not work.exists()


def test_dense_child_needs_a_known_child_and_a_workdir(tmp_path):
    one_line_error(runner.invoke(app, ["bench", "dense", "--child", "both", "--workdir", str(tmp_path)]), "--child")
    one_line_error(runner.invoke(app, ["bench", "dense", "--child", "bank"]), "--workdir")


def test_torchrun_refuses_a_bad_setting_before_it_starts_a_process(monkeypatch):
    import mstcli.benchmarks.torchrun_speed as torchrun_speed

    def started(*args, **kwargs):
        raise AssertionError("a process was started despite the bad setting")

    monkeypatch.setattr(torchrun_speed, "measure", started)
    one_line_error(runner.invoke(app, ["bench", "torchrun", "-S", "train.nonsense=1"]), "train.nonsense")


def test_synthetic_features_have_av_mnists_layout(tmp_path):
    from mstcli.benchmarks.synthetic import synthetic_features
    from mstcli.data.store import FeatureFile

    path = synthetic_features(tmp_path / "f.h5", 40, 12)
    assert path == tmp_path / "f.h5"
    features = FeatureFile.open(path)
    assert features.dataset == "avdigits" and features.num_samples == 40
    assert features.modalities == {"image": (1, 28, 28), "audio": (1, 12, 12)}
    assert features.class_names == [str(d) for d in range(10)] and features.params == {"synthetic": True}
    splits = features.split_indices(0)
    assert sum(len(rows) for rows in splits.values()) == 40
    with h5py.File(path, "r") as f:
        image = f["modalities/image"][()]
        assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() < 1.0
        assert image.std() > 0.1  # random, not constant
    again = synthetic_features(tmp_path / "g.h5", 40, 12)  # the same seed: the same file contents
    other = synthetic_features(tmp_path / "h.h5", 40, 12, seed=1)
    with h5py.File(path, "r") as a, h5py.File(again, "r") as b, h5py.File(other, "r") as c:
        assert np.array_equal(a["modalities/audio"][()], b["modalities/audio"][()])
        assert not np.array_equal(a["modalities/audio"][()], c["modalities/audio"][()])


def test_synthetic_frames_have_nyu_depths_layout(tmp_path):
    from mstcli.benchmarks.synthetic import synthetic_frames
    from mstcli.data.sources.nyudepth import CLASS_NAMES
    from mstcli.data.store import FeatureFile

    features = FeatureFile.open(synthetic_frames(tmp_path / "nyu.h5", 6, 8, 10))
    assert features.dataset == "nyudepth" and features.num_samples == 6
    assert features.modalities == {"rgb": (3, 8, 10), "depth": (1, 8, 10)}
    assert features.label_shape == (8, 10) and features.class_names == list(CLASS_NAMES)


def test_bench_folder_measures_a_prepare_and_states_the_bound_of_its_rows_in_flight(tmp_path, monkeypatch):
    """A real (tiny) measurement: the example folder is written from the embedded AV-Digits data and prepared in a
    child process; the figures must come from that prepare (its pairs and feature file) and carry the bound that
    prepare.chunk_mb sets, 2 x workers x chunk_mb."""
    import json

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the example folder reads data/raw/avdigits.h5
    result = runner.invoke(
        app,
        ["bench", "folder", "--pairs", "120", "--workers", "1", "--workdir", str(tmp_path), "--json",
         "-S", "prepare.chunk_mb=3"],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    (figures,) = json.loads(result.output)
    assert figures["pairs"] == 120 and figures["workers"] == 1
    assert figures["rows_in_flight_bound_mb"] == 6.0
    assert figures["feature_mb"] > 0 and figures["peak_tree_pss_mb"] > 0 and figures["seconds"] > 0
    assert list(tmp_path.iterdir()) == [], "the example folder and its feature file are removed"
