"""bench/dvc.yaml: the matrix expands to one S1/S2 per (student, seed), one cell per method x teacher x student x
seed, each wired to its own S1, and compare depends on every evaluated cell (checked with `dvc dag`, no training)."""

import itertools
import json
import os
import subprocess

import pytest
import yaml
from test_dvc_pipeline import REPO, copy_repo, set_params


def dvc(cwd, *args) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_benchmark_matrix_stages_and_their_wiring(tmp_path):
    copy_repo(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    matrix = yaml.safe_load((REPO / "bench" / "matrix.yaml").read_text())
    assert "mst" not in matrix["methods"] and "none" not in matrix["methods"]
    cells = [f"{s}-{seed}" for s, seed in itertools.product(matrix["students"], matrix["seeds"])]

    stages = {line.split()[0] for line in dvc(tmp_path, "stage", "list", "bench/dvc.yaml").splitlines() if line}
    per_cell = {f"bench/dvc.yaml:{kind}@{cell}" for kind in ("train", "fit_masks", "mst", "alone") for cell in cells}
    baselines = {
        f"bench/dvc.yaml:baseline@{m}-{t}-{cell}"
        for m, t, cell in itertools.product(matrix["methods"], matrix["teachers"], cells)
    }
    assert stages == per_cell | baselines | {"bench/dvc.yaml:compare"}

    edges = {
        tuple(part.strip().strip('";') for part in line.split("->"))
        for line in dvc(tmp_path, "dag", "--dot", "bench/dvc.yaml:compare").splitlines()
        if "->" in line
    }
    into_compare = {a for a, b in edges if b == "bench/dvc.yaml:compare"}
    assert into_compare == {s for s in stages if s.split(":")[1].split("@")[0] in ("mst", "alone", "baseline")}
    for stage in baselines:
        cell = "-".join(stage.split("-")[-2:])
        assert (f"bench/dvc.yaml:train@{cell}", stage) in edges
        assert ("prepare", stage) in edges  # the features of the main pipeline
    assert (f"bench/dvc.yaml:fit_masks@{cells[0]}", f"bench/dvc.yaml:mst@{cells[0]}") in edges
    assert (f"bench/dvc.yaml:fit_masks@{cells[0]}", f"bench/dvc.yaml:alone@{cells[0]}") not in edges


@pytest.mark.e2e
def test_bench_accuracy_runs_the_chosen_cells_of_the_one_matrix_once(tmp_path):
    """`mst bench accuracy --executor dvc` (the sequential path) narrows bench/matrix.yaml, runs those cells through
    one `dvc repro` (S1/S2 of their direction and seed included), ends with the compare table, and a second call
    reruns nothing. (The other executors: tests/test_experiments.py.)"""
    copy_repo(tmp_path)
    set_params(tmp_path / "params.yaml", {
        "prepare": {"num_samples": 60, "spec_size": 8}, "common": {"threads": 1},
        "train": {"epochs": 1, "batch_size": 16}, "fit_masks": {"epochs": 1, "batch_size": 16, "heads": 1,
        "hidden_dim_factor": 32}, "distill": {"epochs": 1, "batch_size": 16},
    })  # fmt: skip
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    args = ["mst", "bench", "accuracy", "--student", "image", "--seed", "1", "--method", "rkd", "--teacher", "cm",
            "--executor", "dvc"]  # fmt: skip

    def bench(*extra):
        return subprocess.run([*args, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    listed = bench("--dry")
    assert listed.returncode == 0, listed.stderr
    assert [line.split("\t") for line in listed.stdout.splitlines()] == [
        ["bench/dvc.yaml:mst@image-1", "missing"], ["bench/dvc.yaml:alone@image-1", "missing"],
        ["bench/dvc.yaml:baseline@rkd-cm-image-1", "missing"],
    ]  # fmt: skip
    first = bench()
    assert first.returncode == 0, first.stdout + first.stderr
    ran = {line.split("'")[1] for line in first.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"prepare", "bench/dvc.yaml:train@image-1", "bench/dvc.yaml:fit_masks@image-1",
                   "bench/dvc.yaml:mst@image-1", "bench/dvc.yaml:alone@image-1",
                   "bench/dvc.yaml:baseline@rkd-cm-image-1"}  # fmt: skip
    compared = json.loads((tmp_path / "results" / "compare.json").read_text())
    assert "rkd" in json.dumps(compared) or "RKD" in json.dumps(compared)
    assert all(
        status == "done" for status in (line.split("\t")[1] for line in bench("--dry").stdout.splitlines())
    )
    second = bench()
    assert second.returncode == 0 and "Running stage" not in second.stdout, second.stdout
    bad = bench("--method", "nokd")
    assert bad.returncode == 2 and "nokd not in bench/matrix.yaml" in bad.stderr
