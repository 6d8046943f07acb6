"""``mst sweep``: a grid of settings x seeds on an executor, ending in a table of mean ± std over seeds.

Each ``-S key=v1,v2`` is one axis of the grid (one value: a fixed setting for every cell). Cells share what their
settings allow: one S1 per seed and value of the settings S1 reads (``common.*``, ``train.*``, ``models.*``), one
S2 per S1 and value of ``fit_masks.*`` (only when the method needs masks), so sweeping ``distill.k`` trains S1 and
S2 once per seed. The runs live under ``models/sweep/<name>/`` and ``results/sweep/<name>/<cell>/``, and each
cell is the same ``mst distill`` + ``mst eval`` a benchmark cell is (``--same-passes`` for every method but
MST-Distill). A cell whose ``metrics.json`` exists for the same definition (``cell.json`` beside it) is skipped;
``--rerun`` runs it again (after a code change, say: sweeps are not DVC stages, so DVC does not see the code).

Prepare settings (``prepare.*``, ``common.dataset``) change the feature file and ``common.seed`` / ``common.run``
are the sweep's own: those are refused as axes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mstcli.atomic_write import write_json, write_text
from mstcli.config import load_params
from mstcli.errors import UserError
from mstcli.experiments.jobs import Job

S1_SECTIONS = ("common", "train", "models")
S2_SECTIONS = ("fit_masks",)
REFUSED = {
    "prepare": "prepare settings change the feature file: prepare one folder per value and sweep each",
    "common.dataset": "the data set changes the feature file: sweep each data set on its own",
    "common.seed": "seeds are their own axis: --seeds",
    "common.run": "the sweep names its runs itself (--name)",
}


@dataclass(frozen=True)
class Axis:
    key: str
    values: tuple[str, ...]  # as typed, each checked against the setting's type


@dataclass(frozen=True)
class Cell:
    settings: tuple[tuple[str, str], ...]  # (key, value) per axis
    seed: int

    @property
    def point(self) -> tuple[tuple[str, str], ...]:
        return self.settings

    def name(self) -> str:
        parts = [f"{key.split('.')[-1]}={_slug(value)}" for key, value in self.settings]
        return "_".join([*parts, f"seed{self.seed}"])

    def overrides(self, sections: tuple[str, ...] | None = None) -> list[str]:
        return [f"{k}={v}" for k, v in self.settings if sections is None or k.split(".")[0] in sections]


def _slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]", "-", value).strip("-") or "empty"


def split_values(text: str) -> list[str]:
    """``1,2,3`` -> ['1', '2', '3']; commas inside brackets stay (``[0,10],[5,20]`` is two lists)."""
    values, depth, current = [], 0, ""
    for char in text:
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return values


def parse_axes(specs: list[str], params_file: Path | None) -> list[Axis]:
    """The axes of ``-S key=v1,v2`` options, each value checked by loading the settings with it (one line for an
    unknown key, a value of the wrong type, an empty list, a refused key)."""
    if not specs:
        raise UserError("mst sweep: no grid: give at least one -S key=value1,value2")
    axes: list[Axis] = []
    for spec in specs:
        key, sep, text = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"-S {spec}: expected key=value1,value2,...")
        for refused, why in REFUSED.items():
            if key == refused or key.startswith(refused + "."):
                raise UserError(f"-S {key}: not a sweep axis ({why})")
        values = [v for v in split_values(text) if v != ""]
        if not values:
            raise UserError(f"-S {key}=: an empty grid (no values)")
        if key in (a.key for a in axes):
            raise UserError(f"-S {key}: given twice; list every value in one -S {key}=v1,v2")
        for value in values:
            load_params(params_file, [f"{key}={value}"])
        axes.append(Axis(key, tuple(values)))
    return axes


def grid_cells(axes: list[Axis], seeds: list[int]) -> list[Cell]:
    combos = itertools.product(*[[(a.key, v) for v in a.values] for a in axes])
    return [Cell(tuple(combo), seed) for combo in combos for seed in seeds]


def _short_hash(items: list[str]) -> str:
    return hashlib.sha1("\n".join(items).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class SweepPlan:
    name: str
    cells: list[Cell]
    jobs: list[Job]
    skipped: list[Cell]  # already finished for the same definition
    definition: dict[str, dict[str, Any]]  # cell name -> what cell.json records


def plan_sweep(
    name: str,
    axes: list[Axis],
    seeds: list[int],
    method: str,
    teacher: str | None,
    needs_masks: bool,
    params_file: Path | None,
    rerun: bool,
    root: Path,
) -> SweepPlan:
    if not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
        raise UserError(f"--name {name}: use letters, digits and . _ + - only")
    cells = grid_cells(axes, seeds)
    params_opt = f" -p {shlex.quote(str(params_file))}" if params_file else ""
    jobs: dict[str, Job] = {}
    skipped: list[Cell] = []
    definition: dict[str, dict[str, Any]] = {}
    for cell in cells:
        s1 = cell.overrides(S1_SECTIONS)
        s2 = cell.overrides(S1_SECTIONS + S2_SECTIONS) if needs_masks else s1
        s1_run = f"sweep/{name}/s1-{_short_hash(s1)}-s{cell.seed}"
        run = f"sweep/{name}/s2-{_short_hash(s2)}-s{cell.seed}" if needs_masks else s1_run
        results = Path("results") / "sweep" / name / cell.name()
        record = {"method": method, "teacher": teacher, "seed": cell.seed, "settings": dict(cell.settings), "run": run}
        definition[cell.name()] = record
        done = results / "metrics.json"
        if not rerun and (root / done).is_file() and _recorded(root / results / "cell.json") == record:
            skipped.append(cell)
            continue

        def sets(overrides: list[str], run_name: str, seed: int = cell.seed) -> str:
            items = [*overrides, f"common.seed={seed}", f"common.run={run_name}"]
            return params_opt + "".join(f" -S {shlex.quote(item)}" for item in items)

        train = f"train@{s1_run}"
        if train not in jobs:
            jobs[train] = Job(train, (f"mst train{sets(s1, s1_run)}",))
        before = train
        if needs_masks:
            masks = f"fit-masks@{run}"
            if masks not in jobs:
                copy = f"mkdir -p models/{run} && cp models/{s1_run}/stage1.pt models/{run}/stage1.pt"
                jobs[masks] = Job(masks, (copy, f"mst fit-masks{sets(s2, run)}"), (train,))
            before = masks
        out = f"models/{run}/{cell.name()}.pt"
        how = f" --method {method}" + (f" --teacher {teacher}" if teacher else "")
        how += "" if method == "mst" else " --same-passes"
        distill = f"mst distill{how} --out {out} --results {results}{sets(cell.overrides(), run)}"
        evaluate = f"mst eval --student {out} --results {results}{sets(cell.overrides(), run)}"
        jobs[cell.name()] = Job(cell.name(), (distill, evaluate), (before,), results)
    needed = _needed(list(jobs.values()))
    return SweepPlan(name, cells, needed, skipped, definition)


def _needed(jobs: list[Job]) -> list[Job]:
    """Drop S1/S2 jobs no remaining cell waits for."""
    wanted = {j.name for j in jobs if j.results is not None}
    changed = True
    while changed:
        changed = False
        for job in jobs:
            if job.name in wanted:
                for prerequisite in job.after:
                    if prerequisite not in wanted:
                        wanted.add(prerequisite)
                        changed = True
    return [j for j in jobs if j.name in wanted]


def _recorded(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def record_cell(root: Path, results: Path, record: dict[str, Any]) -> None:
    write_json(root / results / "cell.json", record)


@dataclass(frozen=True)
class SweepRow:
    point: tuple[tuple[str, str], ...]
    values: dict[int, float]  # seed -> accuracy in %
    failed: dict[int, str]  # seed -> first line of the error
    best: bool = False

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.values.values()) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values.values()) if len(self.values) > 1 else None


def sweep_rows(plan: SweepPlan, root: Path) -> tuple[list[SweepRow], str]:
    """One row per point of the grid, its accuracy per seed read from the cells' metrics.json; the best mean marked."""
    points: dict[tuple[tuple[str, str], ...], tuple[dict[int, float], dict[int, str]]] = {}
    metric = "accuracy"
    for cell in plan.cells:
        values, failed = points.setdefault(cell.point, ({}, {}))
        folder = root / "results" / "sweep" / plan.name / cell.name()
        data = _recorded(folder / "metrics.json")
        if data is not None and ("accuracy" in data or "miou" in data):
            metric = "mIoU" if "miou" in data else "accuracy"
            values[cell.seed] = 100.0 * float(data.get("miou", data.get("accuracy")))
            continue
        failure = _recorded(folder / "failed.json")
        failed[cell.seed] = failure["error"] if failure else "no result"
    means = {p: statistics.mean(v.values()) for p, (v, _) in points.items() if v}
    best = max(means.values()) if means else None
    rows = [SweepRow(p, v, f, best is not None and means.get(p) == best) for p, (v, f) in points.items()]
    return rows, metric


def mean_text(row: SweepRow) -> str:
    if row.mean is None:
        return "–"
    return f"{row.mean:.2f}" + (f" ± {row.std:.2f}" if row.std is not None else " (n = 1)")


def write_table(plan: SweepPlan, rows: list[SweepRow], metric: str, seeds: list[int], root: Path) -> Path:
    """sweep.md and sweep.json in results/sweep/<name>/."""
    keys = [key for key, _ in rows[0].point] if rows else []
    header = [*keys, *(f"seed {s}" for s in seeds), f"{metric} (%) mean ± std", "best"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(keys) + "---:|" * (len(seeds) + 1) + "---|"]
    for row in rows:
        per_seed = [
            f"{row.values[s]:.2f}" if s in row.values else f"failed: {row.failed.get(s, 'no result')}" for s in seeds
        ]
        lines.append(
            "| " + " | ".join([*(v for _, v in row.point), *per_seed, mean_text(row), "★" if row.best else ""]) + " |"
        )
    caption = (
        f"\nTest {metric} of the student ({plan.name}), mean ± std over seeds {', '.join(map(str, seeds))}; ★ the best"
        " mean.\n"
    )
    folder = root / "results" / "sweep" / plan.name
    write_text(folder / "sweep.md", "\n".join(lines) + "\n" + caption)
    write_json(
        folder / "sweep.json",
        [
            {"settings": dict(r.point), "per_seed": r.values, "failed": r.failed, "mean": r.mean, "std": r.std,
             "best": r.best}
            for r in rows
        ],
    )  # fmt: skip
    return folder / "sweep.md"
