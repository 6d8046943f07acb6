"""bench/baseline_table.py end to end on tiny settings: the same files as the DVC matrix, and the compare JSON."""

import importlib.util
import json
from pathlib import Path

import yaml

from conftest import write_raw_avdigits
from test_stages import TINY

from mstcli.engine.logbook import read_curves

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("baseline_table", REPO / "bench" / "baseline_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_process_benchmark_writes_the_matrix_files_and_ends_with_the_json(tmp_path, monkeypatch, capsys):
    raw = write_raw_avdigits(tmp_path / "raw.h5", num_images=300)
    params = dict(TINY, prepare={**TINY["prepare"], "source": str(raw)})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    script = load_script()
    one_epoch = ["-S", "train.epochs=1", "-S", "fit_masks.epochs=1", "-S", "distill.epochs=1"]
    table = script.main(["--seeds", "0", "--methods", "kd", "dml", "--device", "cpu", *one_epoch])

    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == table
    for direction in ("image", "audio"):
        folder = tmp_path / "results" / "bench" / f"{direction}-s0"
        names = {"mst-mm+cm", "none", "kd-mm", "kd-cm", "dml-mm", "dml-cm"}
        logs = {"train", "fit_masks"}  # the dvclive logs of the cell's S1 and S2
        assert {p.parent.name for p in folder.glob("*/metrics.json")} == names | logs
        assert all(len(read_curves(folder / log)) == 1 for log in logs)
        for name in names:
            metrics = json.loads((folder / name / "metrics.json").read_text())
            method, _, teacher = name.partition("-")
            assert (metrics["method"], metrics["student"], metrics["seed"]) == (method, direction, 0)
            expected_teacher = {"none": None}.get(method, teacher)
            assert metrics["teacher"] == expected_teacher
            assert table[method][teacher or "-"][direction][0] == round(100 * metrics["accuracy"], 2)
        # baselines: train.epochs + distill.epochs = 2 epochs from scratch; MST-Distill: distill.epochs = 1
        assert len(read_curves(folder / "kd-cm" / "distill")) == 2
        assert len(read_curves(folder / "mst-mm+cm" / "distill")) == 1
        assert (tmp_path / "models" / "bench" / f"{direction}-s0" / "dml-mm.pt").exists()
    assert set(table) == {"none", "kd", "dml", "mst"} and set(table["kd"]) == {"mm", "cm"}
    assert table["kd"]["cm"]["audio"][1] == 0.0  # one seed: std 0
    assert (tmp_path / "results" / "compare.md").read_text().startswith("| Method |")
