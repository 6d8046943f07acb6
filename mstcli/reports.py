"""Rich tables of results."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from mstcli.stages.predict import PredictReport


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


def compare_table(grid) -> Table:
    """The benchmark grid of `mst compare` (mstcli.stages.compare.Grid), best mean per column in bold."""
    from mstcli.stages.compare import cell_text

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


def predictions_table(report: PredictReport, top: int) -> Table:
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
