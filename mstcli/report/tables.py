"""The terminal's tables of results (Rich): ``mst eval``'s metrics, ``mst predict``'s predictions and ``mst
compare``'s grid, whose cell text the Markdown table of stages/compare.py shares.

Rendering only: a table takes what a stage returned and knows no stage, so the stages (one layer up) may use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from rich.table import Table


class Ranked(Protocol):
    """What ``predictions_table`` reads of ``mst predict``'s result (stages/predict.py's ``PredictReport``)."""

    student: str
    checkpoint: str
    predictions: Sequence[Any]  # each with a ``file``

    def top(self, prediction: Any, k: int) -> list[tuple[str, float]]: ...


def cell_text(cell: tuple[float, float, int, bool] | None, seeds: int) -> str:
    """A grid cell of ``mst compare``: mean ± std over the seeds, and the count when a seed is missing; one seed
    has no spread, so it shows the mean alone with "n=1" (a "± 0.00" would read as a measured spread)."""
    if cell is None:
        return "–"
    mean, std, n, _ = cell
    if n == 1:
        return f"{mean:.2f} (n=1)"
    return f"{mean:.2f} ± {std:.2f}" + (f" (n={n})" if n != seeds else "")


def metrics_table(report: dict) -> Table:
    if "miou" in report:
        return segmentation_table(report)
    method = report["method"] + (f" ({report['teacher']} teacher)" if report.get("teacher") else "")
    table = Table(
        title="test accuracy",
        caption=f"{report['student']} student, {method}, split group {report['split_group']}, n={report['n_test']}",
    )
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    for name, value in report["per_class_accuracy"].items():
        table.add_row(name, "-" if value is None else f"{value:.1%}")
    table.add_section()
    table.add_row("[bold]overall", f"[bold]{report['accuracy']:.2%}")
    table.add_row("macro-F1", f"{report['macro_f1']:.4f}")
    return table


def segmentation_table(report: dict) -> Table:
    """Per-class IoU and accuracy (recall) of a dense student, then pixel accuracy, mean class accuracy, mIoU."""
    method = report["method"] + (f" ({report['teacher']} teacher)" if report.get("teacher") else "")
    table = Table(
        title="test segmentation",
        caption=f"{report['student']} student, {method}, split group {report['split_group']}, "
        f"{report['n_test']} frames, {report['n_pixels']} labelled pixels",
    )
    table.add_column("class")
    table.add_column("IoU", justify="right")
    table.add_column("accuracy", justify="right")
    for name, iou in report["per_class_iou"].items():
        recall = report["per_class_accuracy"][name]
        table.add_row(name, "-" if iou is None else f"{iou:.1%}", "-" if recall is None else f"{recall:.1%}")
    table.add_section()
    table.add_row("[bold]mIoU", f"[bold]{report['miou']:.2%}", "")
    table.add_row("pixel accuracy", "", f"{report['accuracy']:.2%}")
    table.add_row("mean class accuracy", "", f"{report['mean_class_accuracy']:.2%}")
    return table


def compare_table(grid: Any) -> Table:
    """The benchmark grid of `mst compare` (stages/compare.py's ``Grid``), best mean per column in bold."""
    table = Table(
        title=f"test {grid.metric} (%), mean ± std over seeds",
        caption=f"seeds {', '.join(map(str, grid.seeds))}; best per column in bold; "
        "the student alone and MST-Distill stand under both teacher groups",
    )
    table.add_column("method")
    for group, direction in grid.columns:
        table.add_column(f"{group.upper()} teacher\n{direction}", justify="right")
    for name, cells in grid.rows:
        texts = [cell_text(c, len(grid.seeds)) for c in cells]
        table.add_row(
            name, *(f"[bold]{t}[/bold]" if c is not None and c[3] else t for t, c in zip(texts, cells, strict=True))
        )
    return table


def predictions_table(report: Ranked, top: int) -> Table:
    """The Rich table of ``mst predict``: per input, the predicted class and the ``top`` classes with probabilities."""
    table = Table(title=f"predictions of the {report.student} student ({report.checkpoint})")
    for column in ("input", "class", "probability", f"top {top}"):
        table.add_column(column)
    for prediction in report.predictions:
        ranked = report.top(prediction, top)
        table.add_row(
            prediction.file,
            ranked[0][0],
            f"{ranked[0][1]:.1%}",
            ", ".join(f"{name} {p:.1%}" for name, p in ranked),
        )
    return table
