"""The end-to-end pipeline: `dvc repro` of a tiny config in a temporary copy of the repository."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "prepare": {"num_samples": 200, "spec_size": 16},
    "train": {"epochs": 2, "batch_size": 32},
    "fit_masks": {"epochs": 1, "batch_size": 32, "hidden_dim_factor": 16},
    "distill": {"epochs": 2, "batch_size": 32},
    "common": {"threads": 1},
}


def copy_repo(dest: Path) -> None:
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", "pyproject.toml"):
        shutil.copy(REPO / name, dest / name)
    (dest / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", dest / ".dvc" / "config")
    shutil.copytree(REPO / "mstcli", dest / "mstcli", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "bench").mkdir()
    for name in ("dvc.yaml", "matrix.yaml"):  # the opt-in benchmark: a plain `dvc repro` must not run it
        shutil.copy(REPO / "bench" / name, dest / "bench" / name)
    (dest / "data" / "raw").mkdir(parents=True)
    shutil.copy(REPO / "data" / "raw" / "avdigits.h5", dest / "data" / "raw" / "avdigits.h5")


def set_params(path: Path, changes: dict) -> None:
    params = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def repro(cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(["dvc", "repro"], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_repro_runs_everything_then_nothing_then_only_what_changed(tmp_path):
    copy_repo(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    set_params(tmp_path / "params.yaml", TINY)

    first = repro(tmp_path)
    assert ran(first) == {"prepare", "train", "fit_masks", "distill", "eval"}
    assert "test accuracy of the image student" in first
    metrics = json.loads((tmp_path / "results/main/metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["method"] == "mst"
    assert (tmp_path / "results/main/routing.tsv").exists()

    assert ran(repro(tmp_path)) == set()

    set_params(tmp_path / "params.yaml", {"distill": {"k": 2}})
    assert ran(repro(tmp_path)) == {"distill", "eval"}
