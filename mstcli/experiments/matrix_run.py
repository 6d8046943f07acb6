"""``mst bench accuracy`` on an executor: the matrix's DVC stages as jobs (S1 and S2 of a direction and seed first,
then its cells), each recorded in dvc.lock as it finishes, failures written beside the cell for ``mst compare``.

A finished cell is skipped because DVC says it is up to date; a killed matrix continues with what DVC does not
find up to date; a cell that fails leaves ``failed.json`` (its job and the first line of its error) in its results
folder, which ``mst compare`` lists under the table, and the other cells go on. A later success removes it.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mstcli.atomic_write import write_json
from mstcli.errors import UserError
from mstcli.experiments.dvc_stages import BackgroundRecorder, plan_stages
from mstcli.experiments.executors import ExecutorOptions, executor_for
from mstcli.experiments.jobs import Job, JobOutcome

FAILED = "failed.json"


@dataclass
class GridReport:
    """What a grid's run did: the outcomes in job order and the seconds the run took."""

    outcomes: list[JobOutcome]
    wall_s: float

    @property
    def failed(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def job_seconds(self) -> float:
        return sum(o.seconds for o in self.outcomes if o.ok)


def record_outcome(job: Job, outcome: JobOutcome, root: Path) -> None:
    """failed.json in a failed cell's results folder (none for S1/S2, whose cells record it as skipped); removed
    again by a success."""
    if job.results is None:
        return
    marker = root / job.results / FAILED
    if outcome.ok:
        marker.unlink(missing_ok=True)
    else:
        write_json(marker, {"job": job.name, "error": outcome.error, "skipped": outcome.skipped})


def run_stage_grid(targets: list[str], options: ExecutorOptions, root: Path, say, warn) -> GridReport:
    """Bring the DVC stages ``targets`` (and what they read) up to date on the executor of ``options``."""
    plan = plan_stages(targets, root)
    executor = executor_for(options)
    if not plan.jobs:
        say(f"all {len(targets)} cells are up to date (dvc status)")
        return GridReport([], 0.0)
    by_name = {job.name: job for job in plan.jobs}
    up_to_date = sum(1 for t in targets if plan.states.get(t) == "done")
    say(
        f"{len(plan.jobs)} jobs to run on the {options.kind} executor ({up_to_date} of {len(targets)} cells up to"
        f" date); logs in {executor.folder}"
    )
    finished = 0
    recorder = BackgroundRecorder(root)

    def on_done(outcome: JobOutcome) -> None:
        nonlocal finished
        finished += 1
        job = by_name[outcome.name]
        if outcome.ok:
            recorder.add(outcome.name)
        record_outcome(job, outcome, root)
        where = f"[{finished}/{len(plan.jobs)}] {outcome.name}"
        if outcome.ok:
            say(f"{where} done in {outcome.seconds:.0f} s")
        else:
            warn(f"{where} {'skipped' if outcome.skipped else 'failed'}: {outcome.error}")

    started = time.perf_counter()
    try:
        outcomes = executor.run(plan.jobs, root, on_done)
    finally:
        recorder.close()  # every finished job is in dvc.lock before the table is made (or the run is stopped)
    return GridReport(outcomes, time.perf_counter() - started)


def reproduce_sequentially(targets: list[str]) -> None:
    """``dvc repro`` of ``targets`` (and what they need), its output shown as it comes: the sequential path."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    try:
        code = subprocess.call(["dvc", "repro", *targets], env=env)
    except FileNotFoundError:
        raise UserError("dvc not found (pip install -e . installs it)") from None
    if code != 0:
        raise UserError(
            f"dvc repro stopped (exit code {code}); run `mst bench accuracy` again to continue with the cells missing"
        )
