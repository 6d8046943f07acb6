"""The end-to-end pipeline: `dvc repro` of a tiny config in a temporary copy of the repository."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml
from source_pipeline import check_eval_files

REPO = Path(__file__).resolve().parents[1]
# Clean images (no PCA degradation, no noise) and a higher learning rate, so that 3 + 2 short epochs teach the image
# student: over prepare/split seeds 0-7 its test accuracy was 0.30-0.60 (60 test rows, chance 0.10); with the
# default degradation, 2 + 2 epochs of 200 pairs stayed at chance (0.03-0.18 over seeds 0-4).
TINY = {
    "prepare": {"num_samples": 300, "spec_size": 16, "image_energy": 1.0, "image_noise": 0.0},
    "train": {"epochs": 3, "batch_size": 32, "lr": 0.003},
    "fit_masks": {"epochs": 1, "batch_size": 32, "hidden_dim_factor": 16},
    "distill": {"epochs": 2, "batch_size": 32, "lr": 0.003},
    "common": {"threads": 1},
}


def copy_repo(dest: Path) -> None:
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", "pyproject.toml"):
        shutil.copy(REPO / name, dest / name)
    (dest / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", dest / ".dvc" / "config")
    shutil.copytree(REPO / ".dvc" / "plots", dest / ".dvc" / "plots")  # the routing plot's template
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


def dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def check_dvc_views(root: Path, metrics: dict) -> None:
    """`dvc metrics show` lists the run's figures, `dvc plots show` writes a page with every declared plot."""
    shown = json.loads(dvc(root, "metrics", "show", "--json"))
    files = next(iter(shown.values()))["data"]
    test = files["results/main/eval/metrics.json"]["data"]
    assert test["accuracy"] == metrics["accuracy"] and test["n_test"] == metrics["n_test"]
    assert "val_acc" in files["results/main/distill/metrics.json"]["data"]
    assert "val_student_acc" in files["results/main/train/metrics.json"]["data"]
    assert "provenance" not in test, "the DVC metrics are numbers only; provenance stays in results/main/metrics.json"
    dvc(root, "plots", "show", "-o", "plots_page")
    page = (root / "plots_page" / "index.html").read_text()
    for title in ("S1 validation accuracy", "S2 validation KL score", "S3 student accuracy", "S3 routing dynamics",
                  "test confusion"):  # fmt: skip
        assert title in page, title
    routing = json.loads((root / "results/main/distill/plots/custom/routing.json").read_text())
    teachers = {point["teacher"] for point in routing}
    assert len(teachers) == 4 and all(t in page for t in teachers), "the routing data is on the page"


def ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_repro_runs_everything_then_nothing_then_only_what_changed(tmp_path):
    copy_repo(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    set_params(tmp_path / "params.yaml", TINY)

    first = repro(tmp_path)
    assert ran(first) == {"prepare", "train", "fit_masks", "distill", "eval", "report"}
    assert "test accuracy of the image student" in first
    metrics = check_eval_files(tmp_path, "main", tmp_path / "data/features/avdigits.h5", "image")
    assert metrics["method"] == "mst" and metrics["n_test"] == 300 - int(0.8 * 300)
    assert f"{metrics['accuracy']:.2%}" in first  # the number eval printed is the one it recorded
    assert metrics["accuracy"] >= 0.2, f"the image student learned nothing: {metrics['accuracy']:.2%} (chance 10%)"
    assert (tmp_path / "results/main/distill/plots/custom/routing.json").exists()
    assert (tmp_path / "results/main/report.md").exists() and (tmp_path / "results/main/figures/routing.png").exists()
    check_dvc_views(tmp_path, metrics)

    assert ran(repro(tmp_path)) == set()

    set_params(tmp_path / "params.yaml", {"distill": {"k": 2}})
    assert ran(repro(tmp_path)) == {"distill", "eval", "report"}
