"""``mst compare``: the benchmark table from the ``metrics.json`` files of ``mst eval``.

Every metrics file names its method, teacher, student direction and seed. The table is laid out like the
paper's main table (docs/method.md §5.2): one row per method (the student alone first, MST-Distill last), columns
grouped by teacher (MM, CM) and, inside a group, by student direction; a cell is the test accuracy in %, mean and
sample standard deviation over the seeds. The student alone and MST-Distill do not learn from one teacher
type, so their numbers stand in both groups; each column's best mean is then the best of all methods for that
direction. The JSON form is ``method -> teacher -> direction -> [mean, std]`` with each method's own teacher key
(``mm``, ``cm``, ``mm+cm`` for MST-Distill, ``-`` for the student alone).

Means with their spreads overlap easily at three seeds, yet the seeds are paired: every method of a seed learns
from the same stage-1 nets on the same split. So ``compare`` also reports, for MST-Distill against every other
method and teacher, the paired difference (MST-Distill minus the method) over the seeds both have: its mean, its
sample std and n (``compare_paired.json``: method -> teacher -> direction -> [mean, std, n], and a second table
in ``compare.md``).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from mstcli.atomic_write import write_json, write_text
from mstcli.errors import UserError
from mstcli.methods.registry import ENTRIES
from mstcli.report.tables import cell_text

TEACHER_GROUPS = ("mm", "cm")
#: methods whose numbers do not depend on the teacher column, and the teacher key they are filed under
TEACHERLESS = {e.name: (e.fixed_teacher or "-") for e in ENTRIES if e.fixed_teacher is not None}
#: row order and names: the registry's order (the paper's baselines in its order, then the extras); unknown methods
#: follow by name
DISPLAY_NAMES = {e.name: e.display for e in ENTRIES}
DIRECTION_ORDER = ("image", "audio", "rgb", "depth")


@dataclass(frozen=True)
class Run:
    method: str
    teacher: str
    direction: str
    seed: int
    accuracy: float  # in %: the test accuracy, or the mIoU for a dense (segmentation) data set
    path: Path
    metric: str = "accuracy"  # what ``accuracy`` holds: "accuracy" or "mIoU"
    teacher_at_chance: float | None = None  # the teacher's validation accuracy in % where S3 found it at chance
    student_at_chance: float | None = None  # the student's validation accuracy in % where it ended at chance
    teacher_accuracy: float | None = None  # the teacher's validation accuracy in % (the teacher check's), if any


def read_runs(folder: Path) -> tuple[list[Run], list[str]]:
    """Every metrics.json under ``folder`` (sorted by path), and warnings for files skipped: not a metrics file of
    ``mst eval``, or a second file for the same method, teacher, direction and seed (the first one is kept)."""
    if not folder.is_dir():
        raise UserError(f"results folder not found: {folder}")
    runs: dict[tuple[str, str, str, int], Run] = {}
    warnings = []
    for path in sorted(folder.rglob("metrics.json")):
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and "method" not in data and (path.parent / "params.yaml").exists():
                continue  # a dvclive summary of a stage or of eval (engine/logbook.py), not a test result
            method, direction = data["method"], data["student"]
            metric = "mIoU" if "miou" in data else "accuracy"  # dense data sets are compared by their mIoU
            accuracy = float(data["miou"] if metric == "mIoU" else data["accuracy"])
            seed = int(data.get("seed", data["split_group"]))
        except (ValueError, KeyError, TypeError):
            warnings.append(f"skipped {path}: not a metrics file of `mst eval`")
            continue
        teacher = TEACHERLESS.get(method) or data.get("teacher") or "-"
        key = (method, teacher, direction, seed)
        if key in runs:
            warnings.append(
                f"skipped {path}: seed {seed} of {method}/{teacher}/{direction} already read from {runs[key].path}"
            )
            continue
        runs[key] = Run(
            method, teacher, direction, seed, 100.0 * accuracy, path, metric, _teacher_at_chance(data),
            _student_at_chance(data),
            _teacher_accuracy(data),
        )  # fmt: skip
    if not runs:
        raise UserError(f"no metrics.json of `mst eval` under {folder}")
    return list(runs.values()), warnings


def failed_cells(folder: Path) -> list[str]:
    """One line per cell whose job failed or was not run (``failed.json`` left by ``mst bench accuracy`` or
    ``mst sweep``): its job and the first line of its error."""
    lines = []
    for path in sorted(folder.rglob("failed.json")):
        try:
            data = json.loads(path.read_text())
            lines.append(f"{data['job']}: {data['error']}")
        except (OSError, ValueError, KeyError, TypeError):
            lines.append(f"{path.parent}: failed (unreadable {path.name})")
    return lines


def _teacher_accuracy(data: dict) -> float | None:
    method = (data.get("provenance") or {}).get("method") or {}
    check = method.get("teacher_check") if isinstance(method, dict) else None
    if isinstance(check, dict) and "val_accuracy" in check:
        return 100.0 * float(check["val_accuracy"])
    return None


#: a method with an informative teacher may follow a weak teacher down, but not collapse: its mean stays at or above
#: max(FLOOR_MIN, min(student alone, teacher) - FLOOR_MARGIN) points
FLOOR_MIN, FLOOR_MARGIN = 25.0, 10.0


def below_floor(runs: list[Run]) -> dict[tuple[str, str, str], str]:
    """(method, teacher, direction) -> a note, for each comparison cell whose mean over seeds is below the floor
    max(25, min(the student alone's mean, the teacher's mean validation accuracy) - 10): the reference constants
    lose more there than following a weak teacher explains. Cells whose teacher was at chance are not judged."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.method, run.teacher, run.direction), []).append(run)
    alone = {d: statistics.mean(r.accuracy for r in rs) for (m, _, d), rs in groups.items() if m == "none"}
    notes = {}
    for (method, teacher, direction), rs in groups.items():
        teachers = [r.teacher_accuracy for r in rs if r.teacher_accuracy is not None]
        if method in TEACHERLESS or direction not in alone or not teachers or any(r.teacher_at_chance for r in rs):
            continue
        mean, teacher_mean = statistics.mean(r.accuracy for r in rs), statistics.mean(teachers)
        floor = max(FLOOR_MIN, min(alone[direction], teacher_mean) - FLOOR_MARGIN)
        if mean < floor:
            notes[(method, teacher, direction)] = (
                f"{DISPLAY_NAMES.get(method, method)} · {teacher.upper()} teacher · {direction}: {mean:.2f} is below"
                f" the floor {floor:.2f} = max({FLOOR_MIN:.0f}, min(alone {alone[direction]:.2f}, teacher"
                f" {teacher_mean:.2f}) - {FLOOR_MARGIN:.0f})"
            )
    return notes


def _student_at_chance(data: dict) -> float | None:
    """The student's validation accuracy in % when ``mst distill`` found it no better than a constant guess."""
    method = (data.get("provenance") or {}).get("method") or {}
    check = method.get("student_check") if isinstance(method, dict) else None
    if isinstance(check, dict) and check.get("at_chance"):
        return 100.0 * float(check["val_accuracy"])
    return None


def _teacher_at_chance(data: dict) -> float | None:
    """The teacher's validation accuracy in % when ``mst distill`` found it no better than a constant guess
    (methods/teacher_check.py); None otherwise and for results made before the check existed."""
    method = (data.get("provenance") or {}).get("method") or {}
    check = method.get("teacher_check") if isinstance(method, dict) else None
    if isinstance(check, dict) and check.get("at_chance"):
        return 100.0 * float(check["val_accuracy"])
    return None


def chance_notes(runs: list[Run]) -> list[str]:
    """One line per result whose teacher was at chance (a cell made of them measures the method without a
    teacher) and per student that ended at chance (the method did not start learning)."""
    ordered = sorted(runs, key=lambda r: (r.direction, r.seed, r.teacher, r.method))
    where = [
        f"{DISPLAY_NAMES.get(r.method, r.method)} · {r.teacher.upper()} teacher · {r.direction} · seed {r.seed}"
        for r in ordered
    ]
    teachers = [
        f"{w}: the teacher was at chance on validation ({r.teacher_at_chance:.1f} %)"
        for w, r in zip(where, ordered, strict=True)
        if r.teacher_at_chance is not None
    ]
    students = [
        f"{w}: the student ended at chance on validation ({r.student_at_chance:.1f} %)"
        for w, r in zip(where, ordered, strict=True)
        if r.student_at_chance is not None
    ]
    return teachers + students


def summarize(runs: list[Run]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """method -> teacher -> direction -> [mean, std] of the accuracy in % (std over seeds, 0 for one seed)."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for run in runs:
        groups.setdefault((run.method, run.teacher, run.direction), []).append(run.accuracy)
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for method in ordered_methods({m for m, _, _ in groups}):
        for (m, teacher, direction), values in sorted(groups.items()):
            if m == method:
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                table.setdefault(method, {}).setdefault(teacher, {})[direction] = [
                    round(statistics.mean(values), 2),
                    round(std, 2),
                ]
    return table


def seed_counts(runs: list[Run]) -> dict[tuple[str, str, str], int]:
    counts: dict[tuple[str, str, str], int] = {}
    for run in runs:
        key = (run.method, run.teacher, run.direction)
        counts[key] = counts.get(key, 0) + 1
    return counts


def ordered_methods(methods: set[str]) -> list[str]:
    known = [m for m in DISPLAY_NAMES if m in methods and m != "mst"]
    tail = ["mst"] if "mst" in methods else []
    return known + sorted(methods - set(known) - set(tail)) + tail


@dataclass(frozen=True)
class Grid:
    """The table as rows of cells: ``columns`` are (teacher group, direction); a cell is (mean, std, n, best) or
    None where the method has no run."""

    columns: list[tuple[str, str]]
    rows: list[tuple[str, list[tuple[float, float, int, bool] | None]]]
    seeds: list[int]
    metric: str = "accuracy"  # "mIoU" when every run is of a dense data set, "accuracy or mIoU" when mixed


def layout(runs: list[Run]) -> Grid:
    table = summarize(runs)
    counts = seed_counts(runs)
    found = {r.direction for r in runs}
    directions = [d for d in DIRECTION_ORDER if d in found] + sorted(found - set(DIRECTION_ORDER))
    # runs with three or more modalities name their CM teacher (cm:<modality>) and may average all of them (all):
    # those groups follow, and then mm / cm stay only where some run has them
    teachers = {r.teacher for r in runs}
    extra = sorted(t for t in teachers if t.startswith("cm:") or t == "all")
    groups = [g for g in TEACHER_GROUPS if not extra or g in teachers] + extra
    columns = [(group, direction) for group in groups for direction in directions]

    def cell(method: str, group: str, direction: str):
        teacher = TEACHERLESS.get(method, group)
        values = table[method].get(teacher, {}).get(direction)
        if values is None:
            return None
        return values[0], values[1], counts[(method, teacher, direction)]

    raw = {method: [cell(method, g, d) for g, d in columns] for method in table}
    best = [max((row[i][0] for row in raw.values() if row[i] is not None), default=None) for i in range(len(columns))]
    rows = [
        (
            DISPLAY_NAMES.get(method, method),
            [None if c is None else (c[0], c[1], c[2], c[0] == best[i]) for i, c in enumerate(cells)],
        )
        for method, cells in raw.items()
    ]
    metrics = sorted({r.metric for r in runs})
    return Grid(columns, rows, sorted({r.seed for r in runs}), metrics[0] if len(metrics) == 1 else "accuracy or mIoU")


def render_markdown(grid: Grid, flagged: set[tuple[str, int]] = frozenset()) -> str:
    """The grid as a markdown table; ``flagged`` (display name, column) cells get a dagger (below the floor)."""
    header = ["Method"] + [f"{group.upper()} teacher · {direction}" for group, direction in grid.columns]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" + "---:|" * len(grid.columns),
    ]
    for name, cells in grid.rows:
        texts = [cell_text(c, len(grid.seeds)) for c in cells]
        texts = [f"**{t}**" if c is not None and c[3] else t for t, c in zip(texts, cells, strict=True)]
        texts = [f"{t} †" if (name, i) in flagged else t for i, t in enumerate(texts)]
        lines.append(f"| {name} | " + " | ".join(texts) + " |")
    caption = (
        f"Test {grid.metric} (%) of the student, mean ± std over seeds {', '.join(map(str, grid.seeds))}; "
        "best per column in bold. The student alone and MST-Distill (MM + CM teachers) appear under both teacher "
        "groups." + (" †: below the floor (listed under the tables)." if flagged else "")
    )
    return "\n".join(lines) + "\n\n" + caption + "\n"


def paired_differences(runs: list[Run], against: str = "mst") -> dict[str, dict[str, dict[str, list[float]]]]:
    """method -> teacher -> direction -> [mean, std, n] of (``against`` minus the method) in points, over the seeds
    both ran (std 0 for one seed); empty when ``against`` has no runs."""
    accuracy = {(r.method, r.teacher, r.direction, r.seed): r.accuracy for r in runs}
    mine = {(d, s): a for (m, _, d, s), a in accuracy.items() if m == against}
    groups: dict[tuple[str, str, str], list[float]] = {}
    for (method, teacher, direction, seed), value in accuracy.items():
        if method != against and (direction, seed) in mine:
            groups.setdefault((method, teacher, direction), []).append(mine[(direction, seed)] - value)
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for method in ordered_methods({m for m, _, _ in groups}):
        for (m, teacher, direction), diffs in sorted(groups.items()):
            if m == method:
                std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
                table.setdefault(method, {}).setdefault(teacher, {})[direction] = [
                    round(statistics.mean(diffs), 2),
                    round(std, 2),
                    len(diffs),
                ]
    return table


def render_paired_markdown(paired: dict, directions: list[str]) -> str:
    """The paired differences as a table: one row per method and teacher, one column per direction."""
    if not paired:
        return ""
    lines = [
        "| Method | Teacher | " + " | ".join(f"MST-Distill − method · {d}" for d in directions) + " |",
        "|---|---|" + "---:|" * len(directions),
    ]
    for method, teachers in paired.items():
        for teacher, cells in teachers.items():
            texts = []
            for direction in directions:
                value = cells.get(direction)
                if value is None:
                    texts.append("–")
                elif value[2] == 1:
                    texts.append(f"{value[0]:+.2f} (n=1)")
                else:
                    texts.append(f"{value[0]:+.2f} ± {value[1]:.2f} (n={value[2]})")
            lines.append(f"| {DISPLAY_NAMES.get(method, method)} | {teacher} | " + " | ".join(texts) + " |")
    caption = (
        "Paired difference in points, MST-Distill minus the method, mean ± std over the seeds both ran (n): "
        "a difference is clear when its mean is well outside its spread."
    )
    return "\n".join(lines) + "\n\n" + caption + "\n"


def _curve(path: Path) -> list[float]:
    """The values of one dvclive curve (``step<TAB>value`` rows); empty when it is missing or unreadable."""
    try:
        rows = path.read_text().splitlines()[1:]
        return [float(row.split("\t")[1]) for row in rows if row.strip()]
    except (OSError, ValueError, IndexError):
        return []


def epoch_summary(runs: list[Run]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """method -> teacher -> direction -> [validation accuracy (%) at the kept epoch, at the last epoch, S3 seconds]:
    the accuracies are means over seeds, the seconds their sum, from each run's S3 curves (``distill/plots/metrics``
    beside its metrics.json). The kept epoch is the one of lowest validation CE, as ``mst distill`` keeps it; a
    method that peaks early and drifts shows a last-epoch accuracy below its kept one."""
    groups: dict[tuple[str, str, str], list[tuple[float, float, float]]] = {}
    for run in runs:
        curves = run.path.parent / "distill" / "plots" / "metrics"
        accuracy, ce, seconds = (_curve(curves / f"{n}.tsv") for n in ("val_acc", "val_ce", "epoch_s"))
        if not accuracy or len(ce) != len(accuracy):
            continue
        kept = min(range(len(ce)), key=lambda i: (math.isnan(ce[i]), ce[i]))
        groups.setdefault((run.method, run.teacher, run.direction), []).append(
            (100 * accuracy[kept], 100 * accuracy[-1], sum(seconds))
        )
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for method in ordered_methods({m for m, _, _ in groups}):
        for (m, teacher, direction), rows in sorted(groups.items()):
            if m == method:
                kept, last, seconds = zip(*rows, strict=True)
                means = [round(statistics.mean(kept), 2), round(statistics.mean(last), 2), round(sum(seconds), 1)]
                table.setdefault(method, {}).setdefault(teacher, {})[direction] = means
    return table


def render_epoch_markdown(summary: dict, directions: list[str]) -> str:
    if not summary:
        return ""
    lines = [
        "| Method | Teacher | " + " | ".join(f"kept / last epoch · {d}" for d in directions) + " | S3 s (sum) |",
        "|---|---|" + "---:|" * (len(directions) + 1),
    ]
    for method, teachers in summary.items():
        for teacher, cells in teachers.items():
            texts = ["–" if (v := cells.get(d)) is None else f"{v[0]:.2f} / {v[1]:.2f}" for d in directions]
            seconds = sum(v[2] for v in cells.values())
            lines.append(
                f"| {DISPLAY_NAMES.get(method, method)} | {teacher} | " + " | ".join(texts) + f" | {seconds:.0f} |"
            )
    caption = (
        "Validation accuracy (%) of the student at the epoch `mst distill` kept (lowest validation CE) and at its"
        " last epoch, means over seeds; S3 s: the summed seconds of the S3 epochs of the row's runs."
    )
    return "\n".join(lines) + "\n\n" + caption + "\n"


def compare(folder: Path, out: Path) -> tuple[dict, Grid, list[str]]:
    """Read the metrics under ``folder``; write ``out/compare.md``, ``out/compare.json``,
    ``out/compare_paired.json`` and ``out/compare.png`` (grouped bars, the seed spread as error bars)."""
    from mstcli.report.figures import compare_figure

    runs, warnings = read_runs(folder)
    table = summarize(runs)
    grid = layout(runs)
    paired = paired_differences(runs)
    directions = list(dict.fromkeys(d for _, d in grid.columns))
    paired_md = render_paired_markdown(paired, directions)
    notes = chance_notes(runs)
    chance_md = "\nAt chance (`mst distill` warned):\n\n" + "".join(f"- {n}\n" for n in notes) if notes else ""
    epochs_md = render_epoch_markdown(epoch_summary(runs), directions)
    failures = failed_cells(folder)
    failed_md = "\nCells that failed (no result):\n\n" + "".join(f"- {f}\n" for f in failures) if failures else ""
    floors = below_floor(runs)
    flagged = {
        (DISPLAY_NAMES.get(m, m), i)
        for (m, teacher, direction) in floors
        for i, (group, d) in enumerate(grid.columns)
        if d == direction and teacher == group
    }
    floor_md = "\nBelow the floor (`mst compare`):\n\n" + "".join(f"- {n}\n" for n in floors.values()) if floors else ""
    write_text(
        out / "compare.md",
        render_markdown(grid, flagged)
        + ("\n" + paired_md if paired_md else "")
        + ("\n" + epochs_md if epochs_md else "")
        + chance_md
        + floor_md
        + failed_md,
    )
    write_json(out / "compare.json", table)
    write_json(out / "compare_paired.json", paired)
    columns = [f"{group.upper()} teacher, {direction} student" for group, direction in grid.columns]
    bars = [(name, [None if c is None else c[:3] for c in cells]) for name, cells in grid.rows]
    compare_figure(columns, bars, out / "compare.png")
    return table, grid, warnings + notes + list(floors.values()) + [f"failed: {f}" for f in failures]
