"""Rich tables of results."""

from __future__ import annotations

from rich.table import Table


def metrics_table(report: dict) -> Table:
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
