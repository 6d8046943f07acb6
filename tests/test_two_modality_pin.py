"""A two-modality run's numbers, pinned: S1, S2, S3 (MST-Distill) and KD from the CM teacher on a tiny AV-Digits
source must give exactly the figures the code gave before it learned three or more modalities. The CPU repeats
a run bit for bit, so any change to the nets' construction order, the teacher order, the S1 terms or the expert
order shows up here as a changed number. The stages run as the user runs them, one process each, with one BLAS
thread (numpy's PCA in prepare rounds differently with two, and S1's loss moves in the third decimal)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_raw_avdigits

from mstcli.engine.logbook import read_curves

PARAMS = {
    "common": {"threads": 1, "run": "pin"},
    "prepare": {"num_samples": 200, "spec_size": 16, "image_energy": 0.9, "snr_db": [10.0, 20.0]},
    "train": {"epochs": 2, "batch_size": 32, "lr": 0.003},
    "fit_masks": {"epochs": 1, "batch_size": 32, "hidden_dim_factor": 16},
    "distill": {"epochs": 2, "batch_size": 32, "lr": 0.003},
}


def pinned_figures(root: Path) -> dict[str, float]:
    """Run the tiny pipeline in ``root`` and return its figures (the last epoch's curves, summed weights)."""
    raw = write_raw_avdigits(root / "raw.h5", num_images=300)
    (root / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "prepare": {**PARAMS["prepare"], "source": str(raw)}}))
    for args in (
        ["prepare"],
        ["train"],
        ["fit-masks"],
        ["distill"],
        ["distill", "--method", "kd", "--teacher", "cm", "--out", "models/pin/kd.pt", "--results", "results/kd"],
    ):
        # each stage in its own process, as a user runs it, with one BLAS thread: prepare's PCA (numpy) gives other
        # last digits with another thread count, and the pinned figures were measured with one
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        done = subprocess.run(
            [sys.executable, "-m", "mstcli", *args], cwd=root, capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stdout + done.stderr
    s1 = read_curves(root / "results/pin/train")[-1]
    s2 = read_curves(root / "results/pin/fit_masks")[-1]
    s3 = read_curves(root / "results/pin/distill")[-1]
    kd = read_curves(root / "results/kd/distill")[-1]
    student = torch.load(root / "models/pin/student.pt", weights_only=True)["state"]
    return {
        "s1_loss": s1["loss"],
        "s1_val_cm_acc": s1["val_cm_acc"],
        "s2_loss": s2["loss"],
        "s3_loss": s3["loss"],
        "s3_val_ce": s3["val_ce"],
        "kd_loss": kd["loss"],
        "student_weight_sum": float(sum(t.double().abs().sum() for t in student.values())),
    }


# measured with the two-modality code before three or more modalities were added (same machine class: CPU, fp32)
PINNED = {
    "s1_loss": 6.6767018636067705,
    "s1_val_cm_acc": 0.22499999403953552,
    "s2_loss": 0.06954336961110433,
    "s3_loss": 2.175914255777995,
    "s3_val_ce": 2.166560411453247,
    "kd_loss": 1.143271764119466,
    "student_weight_sum": 1911.921915490918,
}


def test_a_two_modality_run_gives_the_pinned_numbers(tmp_path):
    figures = pinned_figures(tmp_path)
    assert figures.keys() == PINNED.keys()
    for key, value in PINNED.items():
        assert figures[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
