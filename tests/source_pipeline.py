"""Helpers for the per-data-set source tests: prepare a fixture through the CLI and run every stage once."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from mstcli.cli import app

runner = CliRunner()

ONE_EPOCH = {
    "common": {"threads": 1},
    "train": {"epochs": 1, "batch_size": 8},
    "fit_masks": {"epochs": 1, "batch_size": 8, "hidden_dim_factor": 32, "heads": 1},
    "distill": {"epochs": 1, "batch_size": 8},
    "eval": {"batch_size": 16},
}


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def write_params(root: Path, dataset: str, source: Path, prepare: dict | None = None) -> None:
    params = dict(ONE_EPOCH, common={**ONE_EPOCH["common"], "dataset": dataset})
    params["prepare"] = {"source": str(source), **(prepare or {})}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def run_all_stages(root: Path, student: str, *sets: str) -> dict:
    """train, fit-masks, distill and eval for one student; returns the eval metrics."""
    run = ["-S", f"common.student={student}", "-S", f"common.run={student}", *sets]
    for stage in ("train", "fit-masks", "distill", "eval"):
        invoke(stage, *run)
    return json.loads((root / f"results/{student}/metrics.json").read_text())


def prepare_fails(*args: str) -> str:
    """The one-line error of a failing prepare (exit code 2)."""
    result = runner.invoke(app, ["prepare", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]
