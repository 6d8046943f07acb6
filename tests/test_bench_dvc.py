"""bench/dvc.yaml: the matrix expands to one S1/S2 per (student, seed), one cell per method x teacher x student x
seed, each wired to its own S1, and compare depends on every evaluated cell (checked with `dvc dag`, no training)."""

import itertools
import os
import subprocess

import yaml

from test_dvc_pipeline import REPO, copy_repo


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
