"""DVC stages as jobs: what ``dvc repro`` would run for some targets, as a grid an executor can spread out, with
DVC staying the record.

Why not ``dvc repro`` in every job: DVC holds one lock per repository for a whole ``repro``, so two at once in one
checkout stop each other, and its queue (``dvc exp run --queue``) runs on one machine only. So a job runs the
stage's own ``cmd`` (read from DVC, never retyped), and once it has succeeded this process records it with
``dvc commit`` (one process, one at a time: no lock contention), exactly as ``dvc repro`` would have recorded it.
``dvc status`` then sees the stage as up to date, ``dvc metrics show`` and ``mst compare`` read its files, and a
later ``mst bench accuracy`` skips it.

A stage's state comes from DVC's own status: ``done`` (up to date), ``stale`` (its outputs exist but a
dependency, a setting or the code changed since they were recorded, or they were never recorded) or ``missing``
(an output is absent).
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mstcli.errors import UserError
from mstcli.experiments.jobs import Job

DONE, STALE, MISSING = "done", "stale", "missing"


@dataclass(frozen=True)
class StagePlan:
    """The jobs that bring some targets up to date, and the state DVC reports for every stage involved."""

    jobs: list[Job]
    states: dict[str, str]  # stage address -> done | stale | missing


def _repo(root: Path):
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(str(root))
    except NotDvcRepoError:
        raise UserError(
            f"{root} is not a DVC repository (run `dvc init` there, or mst from the project's root)"
        ) from None


def _state(changes: list[Any]) -> str:
    for change in changes:
        outs = change.get("changed outs", {}) if isinstance(change, dict) else {}
        if any(value in ("deleted", "not in cache") for value in outs.values()):
            return MISSING
    return STALE


def _results_folder(stage: Any, root: Path) -> Path | None:
    """The folder of a stage's metrics.json (a benchmark cell's results), if it has one."""
    for out in stage.outs:
        path = Path(out.fs_path)
        if path.name == "metrics.json":
            return path.parent.relative_to(root) if path.is_relative_to(root) else path.parent
    return None


def plan_stages(targets: list[str], root: Path = Path(".")) -> StagePlan:
    """Every target and the stages it depends on; a job for each that DVC does not find up to date and for each
    downstream of one that reruns, each job waiting for the jobs of the stages it reads."""
    root = Path(root).resolve()
    repo = _repo(root)
    try:
        stages = _collect_with_upstream(repo, targets, root)
        status: dict[str, Any] = {}
        with repo.lock:  # as `dvc status` holds it: a stage's status reads the run cache and the state database
            for stage in stages.values():
                status.update(stage.status(check_updates=True))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - DVC's own errors (a bad dvc.yaml, an unknown stage) as one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"dvc: {first}") from None
    finally:
        repo.close()
    producer = {os.path.normpath(out.fs_path): name for name, stage in stages.items() for out in stage.outs}
    upstream = {
        name: sorted({producer[p] for d in stage.deps if (p := os.path.normpath(d.fs_path)) in producer} - {name})
        for name, stage in stages.items()
    }
    states = {name: (_state(status[name]) if name in status else DONE) for name in stages}
    waits = _folder_writers_first(stages, producer, upstream)
    order = _topological(waits)  # also upstream first: waits holds every data edge
    rerun: set[str] = set()
    for name in order:  # a stage reruns when it is not done or a stage it reads reruns
        if states[name] != DONE or any(u in rerun for u in upstream[name]):
            rerun.add(name)
    jobs = []
    for name in order:
        if name not in rerun:
            continue
        stage = stages[name]
        commands = stage.cmd if isinstance(stage.cmd, list) else [stage.cmd]
        wdir = Path(stage.wdir).resolve()
        if wdir != root:
            commands = [f"cd {wdir} && {command}" for command in commands]
        after = tuple(u for u in waits[name] if u in rerun)
        jobs.append(Job(name, tuple(commands), after, _results_folder(stage, root)))
    return StagePlan(jobs, states)


def _folder_writers_first(
    stages: dict[str, Any], producer: dict[str, str], upstream: dict[str, list[str]]
) -> dict[str, list[str]]:
    """``upstream`` plus, for each stage, the other stages that write a file another stage reads in a folder it
    reads from or writes to. Those are a run's writers (``mst train``'s stage1.pt, ``mst fit-masks``' masks.pt):
    they hold the run's lock exclusively, so a benchmark cell that reads only stage1.pt would be refused while S2
    of its run is being fitted, or would refuse S2, had the two been started side by side. An edge that would
    close a cycle is left out: the order of data always wins."""
    import networkx as nx

    read_files = {os.path.normpath(d.fs_path) for stage in stages.values() for d in stage.deps}
    writers: dict[str, set[str]] = {}
    for path, name in producer.items():
        if path in read_files:
            writers.setdefault(os.path.dirname(path), set()).add(name)
    graph = nx.DiGraph([(u, name) for name, ups in upstream.items() for u in ups])
    graph.add_nodes_from(stages)
    waits = {name: list(ups) for name, ups in upstream.items()}
    for name, stage in stages.items():
        folders = {os.path.dirname(p) for d in stage.deps if (p := os.path.normpath(d.fs_path)) in producer}
        folders |= {os.path.dirname(os.path.normpath(out.fs_path)) for out in stage.outs}
        for writer in sorted(set().union(*(writers.get(f, set()) for f in folders)) - {name} - set(waits[name])):
            if not nx.has_path(graph, name, writer):
                graph.add_edge(writer, name)
                waits[name].append(writer)
    return waits


def _collect_with_upstream(repo: Any, targets: list[str], root: Path) -> dict[str, Any]:
    """Every target and the stages it reads, by address, from one load of the repository's stages.

    Why not ``repo.stage.collect(target, with_deps=True)`` and ``repo.status(targets)``: DVC reads the lock file
    afresh for every target, twice, and a benchmark's lock file grows with every finished cell (about 0.8 MB for
    one seed of the quick table), so planning one seed of it took 5 minutes and the whole matrix would take the
    square of that. A target that is not ``file:stage`` (or just ``stage`` of ./dvc.yaml) goes DVC's own way."""
    import networkx as nx

    index = repo.index
    by_file_and_name = {
        (os.path.normpath(stage.dvcfile.path), stage.name): stage
        for stage in index.stages
        if getattr(stage, "name", None)
    }
    stages: dict[str, Any] = {}
    for target in targets:
        file_part, _, name = target.rpartition(":")
        stage = by_file_and_name.get((os.path.normpath(root / (file_part or "dvc.yaml")), name))
        found = (
            nx.dfs_postorder_nodes(index.graph, stage)
            if stage is not None
            else repo.stage.collect(target, with_deps=True)
        )
        for each in found:
            stages.setdefault(each.addressing, each)
    return stages


def _topological(upstream: dict[str, list[str]]) -> list[str]:
    order: list[str] = []
    placed: set[str] = set()
    remaining = dict(upstream)
    while remaining:
        ready = sorted(name for name, ups in remaining.items() if all(u in placed for u in ups))
        if not ready:
            raise UserError(f"dvc: the stages {', '.join(sorted(remaining))} depend on each other in a cycle")
        for name in ready:
            order.append(name)
            placed.add(name)
            del remaining[name]
    return order


def commit(names: list[str], root: Path = Path(".")) -> None:
    """Record finished stages in dvc.lock (``dvc commit``), as ``dvc repro`` records a stage it ran.

    ``--no-relink`` leaves the outputs in the workspace as the jobs wrote them: with a symlink or hardlink cache,
    relinking replaces each output by a link into the cache, while a job that reads it (a cell reading S1's
    ``stage1.pt``) may be opening it."""
    if not names:
        return
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(
        ["dvc", "commit", "--force", "--no-relink", "--quiet", *names],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise UserError(f"dvc commit of {', '.join(names[:3])}{' ...' if len(names) > 3 else ''} failed: {first}")


class BackgroundRecorder:
    """Records finished stages with :func:`commit` on one thread beside the running jobs; the stages that finish
    while a commit runs go into the next commit together.

    Why not one commit per job, in turn: a commit reads and rewrites the whole lock file, which lists every code
    file each stage imports (about 10 s a job on a 2-core CPU once one seed of the quick table is in it), so in
    turn it held back the next job, and a burst of SLURM jobs ending together queued one commit each."""

    def __init__(self, root: Path, record: Callable[[list[str], Path], None] = commit) -> None:
        self._root = root
        self._record = record
        self._pending: list[str] = []
        self._errors: list[str] = []
        self._closing = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="dvc-commit", daemon=True)
        self._thread.start()

    def add(self, name: str) -> None:
        with self._wake:
            self._pending.append(name)
            self._wake.notify()

    def close(self) -> None:
        """Wait until every stage added is recorded; the first failed commit is raised here, as one line."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()
        if self._errors:
            raise UserError(self._errors[0])

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closing:
                    self._wake.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
            try:
                self._record(batch, self._root)
            except UserError as exc:
                if len(batch) == 1:  # already alone: asking DVC again would only repeat the refusal
                    self._errors.append(str(exc))
                else:
                    self._record_one_by_one(batch)

    def _record_one_by_one(self, batch: list[str]) -> None:
        """A batch DVC refused: each stage alone, so one bad stage does not leave the others unrecorded."""
        for name in batch:
            try:
                self._record([name], self._root)
            except UserError as exc:
                self._errors.append(str(exc))
