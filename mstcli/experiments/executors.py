"""Where a grid's jobs run: submitit's local, debug and SLURM executors behind one interface.

- ``local``: a pool of ``--jobs`` processes on this machine (submitit's LocalExecutor starts each job as its own
  process); a job is started once every job it waits for has succeeded.
- ``debug``: one job after another inside this process (submitit's DebugExecutor), for tests and for reading a
  failure's traceback.
- ``slurm``: every job is submitted at once; a job waits for its jobs through SLURM's ``afterok`` dependencies,
  jobs that wait for the same jobs go in one job array, and ``--kill-on-invalid-dep`` cancels what a failed job
  would have fed, so nothing waits forever. The folder you run mst from must be on a file system the nodes share.

Every executor reports each job's :class:`~mstcli.experiments.jobs.JobOutcome` as it ends (``on_done``), so the
caller can record a finished job at once (``dvc commit``) and a killed grid loses only the jobs that were running.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mstcli.errors import UserError
from mstcli.experiments.jobs import Job, JobOutcome, run_commands

OnDone = Callable[[JobOutcome], None]
POLL_S = 1.0
LOCAL_TIMEOUT_MIN = 60 * 24 * 30  # submitit's local jobs are killed after their timeout: a month is "none"


@dataclass(frozen=True)
class ExecutorOptions:
    kind: str = "local"  # local | slurm | debug
    jobs: int = 1  # local: processes at once; slurm: the most array tasks at once (0: no limit)
    folder: Path = Path(".mst/jobs")  # submitit's files and the jobs' logs (on a shared file system for SLURM)
    slurm_partition: str | None = None
    slurm_time_min: int = 240
    cpus_per_task: int = 2
    gpus_per_task: int = 0
    slurm_extra: dict[str, str] = field(default_factory=dict)  # more sbatch options, e.g. {"account": "lab"}


class Executor(ABC):
    """Runs a grid's jobs, each once its ``after`` jobs have succeeded; a job whose prerequisite failed is skipped."""

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.folder = Path(options.folder).resolve() / stamp

    def log_of(self, job: Job) -> Path:
        return self.folder / "logs" / (job.name.replace("/", "_").replace(":", "_").replace("@", "_") + ".log")

    @abstractmethod
    def run(self, jobs: list[Job], workdir: Path, on_done: OnDone) -> list[JobOutcome]: ...

    def _collect(self, job: Job, submitted: Any, started: float) -> JobOutcome:
        """The outcome of a finished submitit job: its seconds, or the first line of its error."""
        try:
            seconds = submitted.result()
            return JobOutcome(job.name, True, float(seconds))
        except Exception as exc:  # noqa: BLE001 - any failure of a job is reported, not raised
            return JobOutcome(job.name, False, time.perf_counter() - started, error=self._error_line(job, exc))

    def _error_line(self, job: Job, exc: Exception) -> str:
        marker = self.log_of(job).with_suffix(".error")
        if marker.is_file():
            return marker.read_text().strip()
        text = str(exc).strip().splitlines()
        for line in reversed(text):  # submitit's FailedJobError carries the job's traceback: its last line
            if "JobFailed:" in line:
                return line.split("JobFailed:", 1)[1].strip()
        return text[-1] if text else type(exc).__name__


def _submit_function(commands: tuple[str, ...], folder: str, log: str, env: dict[str, str] | None = None) -> float:
    """The function submitit runs in the job's process: the job's commands; a failure also leaves its first line
    beside the log (``.error``), so the grid reads it without parsing a traceback."""
    from mstcli.experiments.jobs import JobFailed

    try:
        return run_commands(commands, folder, log, env)
    except JobFailed as exc:
        Path(log).with_suffix(".error").write_text(str(exc) + "\n")
        raise


class PoolExecutor(Executor):
    """``local`` (a pool of processes) and ``debug`` (in this process, one at a time)."""

    def __init__(self, options: ExecutorOptions, cluster: str) -> None:
        super().__init__(options)
        self.cluster = cluster
        self.limit = 1 if cluster == "debug" else max(1, options.jobs)

    def run(self, jobs: list[Job], workdir: Path, on_done: OnDone) -> list[JobOutcome]:
        import submitit

        from mstcli.engine.runtime import JOBS_ENV as jobs_env

        executor = submitit.AutoExecutor(folder=self.folder / "submitit", cluster=self.cluster)
        executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)  # --slurm-time is SLURM's: no limit here
        pending = list(jobs)
        running: dict[str, tuple[Job, Any, float]] = {}
        outcomes: dict[str, JobOutcome] = {}

        def finish(outcome: JobOutcome) -> None:
            outcomes[outcome.name] = outcome
            on_done(outcome)

        while pending or running:
            for job in list(pending):
                failed = [d for d in job.after if d in outcomes and not outcomes[d].ok]
                if failed:
                    pending.remove(job)
                    finish(JobOutcome(job.name, False, skipped=True, error=f"not run: {failed[0]} failed"))
                    continue
                if len(running) >= self.limit or not all(d in outcomes for d in job.after):
                    continue
                pending.remove(job)
                log = self.log_of(job)
                # N jobs on one machine: with common.threads 0 each mst takes cores // N threads (engine/runtime.py)
                env = {jobs_env: str(self.limit)} if self.cluster == "local" else None
                submitted = executor.submit(_submit_function, job.commands, str(workdir), str(log), env)
                started = time.perf_counter()
                if self.cluster == "debug":  # runs here and now, inside result()
                    finish(self._collect(job, submitted, started))
                else:
                    running[job.name] = (job, submitted, started)
            for name, (job, submitted, started) in list(running.items()):
                if submitted.done():
                    del running[name]
                    finish(self._collect(job, submitted, started))
            if running:
                time.sleep(POLL_S)
            elif pending and not any(all(d in outcomes for d in j.after) for j in pending):
                waiting = ", ".join(j.name for j in pending[:3])
                raise RuntimeError(f"jobs wait for jobs that are not in the grid: {waiting}")
        return [outcomes[job.name] for job in jobs]


class SlurmExecutor(Executor):
    """Everything submitted at once, prerequisites as ``afterok`` dependencies; one job array per set of
    prerequisites."""

    def check(self) -> None:
        """SLURM reachable and the partition known, before anything is submitted (one line otherwise)."""
        if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
            raise UserError("--executor slurm: sbatch / sinfo not found: SLURM is not reachable from this machine")
        try:
            listed = subprocess.run(
                ["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60, check=False
            )
        except subprocess.TimeoutExpired:
            raise UserError("--executor slurm: sinfo did not answer in 60 s: is slurmctld running?") from None
        if listed.returncode != 0:
            first = (listed.stderr.strip().splitlines() or ["no message"])[0]
            raise UserError(f"--executor slurm: sinfo failed ({first})")
        partitions = sorted({p.strip() for p in listed.stdout.split() if p.strip()})
        wanted = self.options.slurm_partition
        if wanted is not None and wanted not in partitions:
            raise UserError(f"--slurm-partition {wanted}: no such partition (known: {', '.join(partitions) or 'none'})")

    def _executor(self):
        import submitit

        executor = submitit.AutoExecutor(folder=self.folder / "submitit", cluster="slurm")
        options = self.options
        executor.update_parameters(
            timeout_min=options.slurm_time_min,
            cpus_per_task=options.cpus_per_task,
            tasks_per_node=1,
            nodes=1,
            **({"slurm_partition": options.slurm_partition} if options.slurm_partition else {}),
            **({"gpus_per_node": options.gpus_per_task} if options.gpus_per_task else {}),
            **({"slurm_array_parallelism": options.jobs} if options.jobs > 0 else {}),
        )
        return executor

    def run(self, jobs: list[Job], workdir: Path, on_done: OnDone) -> list[JobOutcome]:
        self.check()
        executor = self._executor()
        ids: dict[str, str] = {}
        submitted: dict[str, tuple[Job, Any, float]] = {}
        for after, group in _groups_by_prerequisites(jobs):
            extra = {"kill_on_invalid_dep": "yes", **self.options.slurm_extra}
            if after:
                extra["dependency"] = "afterok:" + ":".join(ids[name] for name in after)
            executor.update_parameters(slurm_additional_parameters=extra)
            try:
                with executor.batch():
                    handles = [
                        executor.submit(_submit_function, job.commands, str(workdir), str(self.log_of(job)))
                        for job in group
                    ]
            except Exception as exc:  # noqa: BLE001 - sbatch's refusal, as one line
                lines = [line for line in str(exc).splitlines() if line.strip()]
                sbatch = next((line for line in lines if "sbatch: error" in line), lines[-1] if lines else "")
                raise UserError(f"--executor slurm: sbatch refused the jobs ({sbatch.strip()})") from None
            for job, handle in zip(group, handles, strict=True):
                ids[job.name] = str(handle.job_id)
                submitted[job.name] = (job, handle, time.perf_counter())
        outcomes: dict[str, JobOutcome] = {}
        while len(outcomes) < len(jobs):
            # squeue first, then the result files: a job writes its result before it leaves the queue, so one
            # that is gone from the queue and has no result file ended without one (cancelled, out of time)
            queued = _queued_job_ids()
            for name, (job, handle, started) in submitted.items():
                if name in outcomes:
                    continue
                has_result = handle.paths.result_pickle.exists()
                if not has_result and str(handle.job_id) in queued:
                    continue
                failed = [d for d in job.after if d in outcomes and not outcomes[d].ok]
                if failed:  # SLURM cancelled it (--kill-on-invalid-dep): its afterok can no longer be met
                    outcome = JobOutcome(name, False, skipped=True, error=f"not run: {failed[0]} failed")
                elif has_result:
                    outcome = self._collect(job, handle, started)
                else:
                    outcome = JobOutcome(
                        name, False, time.perf_counter() - started,
                        error=f"SLURM job {handle.job_id} ended without a result (cancelled, out of time or killed;"
                        f" see {handle.paths.stderr})",
                    )  # fmt: skip
                outcomes[name] = outcome
                on_done(outcome)
            if len(outcomes) < len(jobs):
                time.sleep(POLL_S)
        return [outcomes[job.name] for job in jobs]


def _queued_job_ids() -> set[str]:
    """Ids of the jobs SLURM still has pending or running, array tasks one by one (``12_0``). Asked of squeue, not
    sacct: a cluster without accounting has no sacct, and submitit's states then read UNKNOWN."""
    listed = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    if listed.returncode != 0:
        first = (listed.stderr.strip().splitlines() or ["no message"])[0]
        raise UserError(f"--executor slurm: squeue failed while jobs run ({first}); they go on: run again later")
    return set(listed.stdout.split())


def _groups_by_prerequisites(jobs: list[Job]) -> list[tuple[tuple[str, ...], list[Job]]]:
    """The jobs in submission order, grouped by their prerequisites: a group is submitted once all its
    prerequisites have been (topological order), as one array."""
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        groups.setdefault(tuple(sorted(job.after)), []).append(job)
    order: list[tuple[tuple[str, ...], list[Job]]] = []
    placed: set[str] = set()
    while groups:
        ready = [after for after in groups if all(name in placed for name in after)]
        if not ready:
            raise RuntimeError(f"jobs wait for jobs that are not in the grid: {next(iter(groups))}")
        for after in ready:
            order.append((after, groups.pop(after)))
            placed.update(job.name for job in order[-1][1])
    return order


EXECUTORS: dict[str, Callable[[ExecutorOptions], Executor]] = {
    "local": lambda options: PoolExecutor(options, "local"),
    "debug": lambda options: PoolExecutor(options, "debug"),
    "slurm": SlurmExecutor,
}


def executor_for(options: ExecutorOptions) -> Executor:
    if options.kind not in EXECUTORS:
        raise UserError(f"--executor {options.kind}: unknown (known: {', '.join(EXECUTORS)})")
    return EXECUTORS[options.kind](options)
