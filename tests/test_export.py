"""`mst export` for tiny trained runs of both directions: the exported files, loaded in a fresh process that
does not import mstcli, give the probabilities of `mst predict` on the same files; the manifest; bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import RATE, invoke, tone_hz
from test_predict import write_png, write_wav
from typer.testing import CliRunner

from mstcli.cli import app

# Run in a fresh interpreter: loads every exported file and reads the inputs with the folder's own run_onnx.py.
LOADER = r"""
import importlib.util, json, sys
from pathlib import Path
import onnxruntime, torch
out = {}
for folder, files in json.loads(Path(sys.argv[1]).read_text()).items():
    spec = importlib.util.spec_from_file_location("run_onnx", Path(folder) / "run_onnx.py")
    run_onnx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_onnx)
    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    inputs = run_onnx.read_inputs(files, manifest)
    session = onnxruntime.InferenceSession(str(Path(folder) / "student.onnx"), providers=["CPUExecutionProvider"])
    model = torch.export.load(str(Path(folder) / "student.pt2")).module()
    tensors = [torch.from_numpy(inputs[i["name"]]) for i in manifest["inputs"]]
    out[folder] = {
        "onnx": session.run(["probabilities"], inputs)[0].tolist(),
        "pt2": model(*tensors).detach().numpy().tolist(),
    }
out["mstcli_imported"] = "mstcli" in sys.modules
print(json.dumps(out))
"""


def clean_env() -> dict[str, str]:
    """The environment without PYTHONPATH (which points at the repository in development)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def write_tone(path: Path, digit: int, seconds: float) -> Path:
    t = np.arange(int(seconds * RATE)) / RATE
    soundfile.write(str(path), 0.5 * np.sin(2 * np.pi * tone_hz(digit) * t), RATE, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def exported(tiny_runs, tmp_path_factory):
    """Both runs exported (img after `mst eval`, so its manifest carries metrics), the inputs and predict's JSON."""
    inputs = tmp_path_factory.mktemp("inputs")
    files = {
        "img": [str(write_png(inputs / f"{d}.png", d)) for d in range(10)],
        "aud": [str(write_wav(inputs / f"{d}.wav", d)) for d in range(10)]
        + [str(write_tone(inputs / "long3.wav", 3, 1.6)), str(write_tone(inputs / "short8.wav", 8, 0.05))],
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tiny_runs)
        subprocess.run(["git", "init", "-q"], check=True)
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "t"], check=True
        )
        invoke("eval", "-S", "common.run=img", "-S", "common.student=image")
        predicted = {}
        for run in ("img", "aud"):
            invoke("export", run)
            report = json.loads(invoke("predict", "--json", "-S", f"common.run={run}", *files[run]).output)
            assert report["errors"] == []
            predicted[run] = np.array([p["probabilities"] for p in report["predictions"]])
    return tiny_runs, files, predicted


def test_exported_files_give_predicts_probabilities_without_mstcli(exported, tmp_path):
    root, files, predicted = exported
    folders = {str(root / "models" / run / "export"): files[run] for run in files}
    (tmp_path / "files.json").write_text(json.dumps(folders))
    (tmp_path / "loader.py").write_text(LOADER)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "loader.py"), str(tmp_path / "files.json")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env(),
        check=True,
    )
    loaded = json.loads(result.stdout)
    assert loaded.pop("mstcli_imported") is False
    for run, folder in zip(files, folders, strict=True):
        for kind in ("onnx", "pt2"):
            np.testing.assert_allclose(np.array(loaded[folder][kind]), predicted[run], atol=1e-5, rtol=0)
    assert predicted["aud"][10].argmax() == 3 and predicted["aud"][11].shape == (10,)  # the long clip is cropped


def test_run_onnx_example_prints_the_classes(exported, tmp_path):
    root, files, predicted = exported
    example = root / "models" / "img" / "export" / "run_onnx.py"
    result = subprocess.run(
        [sys.executable, str(example), "--json", *files["img"]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env(),
        check=True,
    )
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["class"] for r in rows] == [str(int(p.argmax())) for p in predicted["img"]]
    np.testing.assert_allclose([r["probabilities"] for r in rows], predicted["img"], atol=1e-5, rtol=0)
    wrong = subprocess.run(
        [sys.executable, str(example), files["aud"][0]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env(),
        check=False,
    )
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: ")


def test_manifest_records_inputs_parameters_metrics_and_provenance(exported):
    from mstcli.data.fingerprint import feature_fingerprint
    from mstcli.data.store import FeatureFile

    root, _, _ = exported
    features = FeatureFile.open(root / "data/features/avdigits.h5")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=root, check=True
    ).stdout.strip()
    image = json.loads((root / "models/img/export/manifest.json").read_text())
    audio = json.loads((root / "models/aud/export/manifest.json").read_text())
    for manifest, modality in ((image, "image"), (audio, "audio")):
        assert manifest["modality"] == modality and manifest["classes"] == [str(d) for d in range(10)]
        assert manifest["feature_parameters"]["prepare"] == features.params["prepare"]
        assert manifest["feature_rows"]["shape"] == list(features.modalities[modality])
        provenance = manifest["provenance"]
        assert provenance["feature_fingerprint"] == feature_fingerprint(features)
        assert provenance["split_group"] == 0 and provenance["method"] == "none"
        assert provenance["settings"]["epochs"] == 12
        assert provenance["git"] == {"commit": head, "dirty": True}
        assert set(provenance["versions"]) >= {"python", "torch", "mstcli", "onnxruntime"}
        for name, record in manifest["files"].items():
            data = (root / f"models/{'img' if modality == 'image' else 'aud'}/export" / name).read_bytes()
            assert record == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        assert manifest["check"]["max_abs_diff_onnx"] <= 1e-5
    assert image["inputs"] == [
        {
            "name": "pixels",
            "shape": ["batch", 28, 28],
            "dtype": "uint8",
            "description": image["inputs"][0]["description"],
        }
    ]
    assert [(i["name"], i["shape"], i["dtype"]) for i in audio["inputs"]] == [
        ("wave", ["batch", RATE], "float32"),
        ("length", ["batch"], "int64"),
    ]
    assert audio["feature_parameters"]["window"] == RATE and audio["feature_parameters"]["spec_size"] == 16
    metrics = json.loads((root / "results/img/metrics.json").read_text())
    assert image["metrics"]["accuracy"] == metrics["accuracy"]
    assert audio["metrics"] is None  # no `mst eval` of run aud


def test_a_data_set_without_a_feature_graph_exports_the_student_on_feature_rows(exported, tmp_path, monkeypatch):
    """With no graph of its feature step, the export reads feature rows and matches predict on .npy rows."""
    from mstcli.data.sources import get_source
    from mstcli.data.store import FeatureFile

    root, _, _ = exported
    monkeypatch.chdir(root)
    steps = get_source("avdigits").feature_steps
    monkeypatch.setitem(steps, "image", replace(steps["image"], graph=None))
    invoke("export", "img", "--out", str(tmp_path / "rows"))
    manifest = json.loads((tmp_path / "rows/manifest.json").read_text())
    assert [(i["name"], i["shape"]) for i in manifest["inputs"]] == [("features", ["batch", 1, 28, 28])]
    rows = FeatureFile.open("data/features/avdigits.h5").read("image", np.arange(5))
    np.save(tmp_path / "rows.npy", rows)
    report = json.loads(invoke("predict", "--json", "-S", "common.run=img", str(tmp_path / "rows.npy")).output)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "rows/student.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        session.run(["probabilities"], {"features": rows})[0],
        [p["probabilities"] for p in report["predictions"]],
        atol=1e-5,
        rtol=0,
    )


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_a_run_without_student_is_a_one_line_error(exported, monkeypatch):
    root, _, _ = exported
    monkeypatch.chdir(root)
    line = one_line_error(CliRunner().invoke(app, ["export", "nothing"]))
    assert "student checkpoint not found" in line and "models/nothing/student.pt" in line
    assert not (root / "models/nothing/export").exists()


def test_a_missing_feature_file_is_a_one_line_error_and_keeps_an_earlier_export(exported, tmp_path, monkeypatch):
    root, _, _ = exported
    (tmp_path / "models/img").mkdir(parents=True)
    (tmp_path / "models/img/student.pt").write_bytes((root / "models/img/student.pt").read_bytes())
    (tmp_path / "params.yaml").write_text((root / "params.yaml").read_text())
    (tmp_path / "models/img/export").mkdir()
    (tmp_path / "models/img/export/manifest.json").write_text("earlier")
    monkeypatch.chdir(tmp_path)
    line = one_line_error(CliRunner().invoke(app, ["export", "img"]))
    assert "feature file not found: data/features/avdigits.h5" in line
    assert (tmp_path / "models/img/export/manifest.json").read_text() == "earlier"
    assert leftovers(tmp_path / "models/img") == []


def test_a_failed_onnx_check_writes_nothing(exported, tmp_path, monkeypatch):
    import mstcli.stages.export as export_stage

    root, _, _ = exported
    monkeypatch.chdir(root)
    monkeypatch.setattr(export_stage, "TOLERANCE", -1.0)  # no file can pass: the failure path
    line = one_line_error(CliRunner().invoke(app, ["export", "img", "--out", str(tmp_path / "out")]))
    assert "student.onnx gives probabilities" in line and "nothing was written" in line
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_an_out_that_is_a_file_is_a_one_line_error(exported, tmp_path, monkeypatch):
    root, _, _ = exported
    monkeypatch.chdir(root)
    (tmp_path / "taken").write_text("mine")
    line = one_line_error(CliRunner().invoke(app, ["export", "img", "--out", str(tmp_path / "taken")]))
    assert "is a file, not a folder" in line and (tmp_path / "taken").read_text() == "mine"
