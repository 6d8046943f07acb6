"""One job of a grid: shell command lines run in order in one folder, and what it waits for.

A job's commands are the very commands a DVC stage or a sweep cell would run (``mst train ...``, ``mst distill
... && mst eval ...``), so a job run by SLURM writes exactly what ``dvc repro`` would have written. The function
that runs them, :func:`run_commands`, is what submitit pickles and calls in the job's process: it keeps each
command's output in the job's log file and turns a failure into :class:`JobFailed` carrying the first line of
mst's error (``error: ...``), which is what the tables show for a failed cell.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Job:
    name: str  # unique in its grid: a DVC stage's address or a sweep cell's name
    commands: tuple[str, ...]  # shell command lines, run in order in the grid's folder
    after: tuple[str, ...] = ()  # names of jobs of the same grid that must have succeeded first
    results: Path | None = None  # the folder whose failed.json records a failure (None: none written)


@dataclass
class JobOutcome:
    name: str
    ok: bool
    seconds: float = 0.0
    error: str = ""  # the first line of the error, for a failed job
    skipped: bool = False  # not run: a job it waits for failed
    extra: dict = field(default_factory=dict)


class JobFailed(RuntimeError):
    """A command of a job ended with a non-zero exit code; the message is the first line of its error."""


def first_error_line(text: str) -> str:
    """The line a table shows for a failed job: mst's own one-line error, else the last line of the output."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("error:"):
            return line
    return lines[-1] if lines else "failed without a message"


def run_commands(commands: tuple[str, ...], folder: str, log: str, env: dict[str, str] | None = None) -> float:
    """Run ``commands`` one after another in ``folder`` (a shell each, as DVC runs a stage's ``cmd``), their
    output appended to ``log``, with ``env`` added to the environment; returns the seconds taken. Raises
    :class:`JobFailed` at the first that fails."""
    started = time.perf_counter()
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", **(env or {})}
    for command in commands:
        with open(log, "a") as out:
            out.write(f"$ {command}\n")
            out.flush()
            finished = subprocess.run(
                command, shell=True, cwd=folder, env=env, stdout=out, stderr=subprocess.PIPE, text=True
            )
            out.write(finished.stderr)
        if finished.returncode != 0:
            raise JobFailed(first_error_line(finished.stderr) + f" (exit code {finished.returncode}; log: {log})")
    return time.perf_counter() - started
