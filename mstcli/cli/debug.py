"""``mst debug``: diagnostics that explain a run's numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mstcli.cli.frame import (
    app,
    show,
    user_errors,
)

debug_app = typer.Typer(
    name="debug", help="Diagnostics: commands that explain a run's numbers", no_args_is_help=True
)
app.add_typer(debug_app)


@debug_app.command("collapse")
@user_errors
def debug_collapse(
    students: Annotated[
        list[Path], typer.Argument(metavar="STUDENT", help="student checkpoints (e.g. models/<run>/student.pt)")
    ],
    features: Annotated[
        Path, typer.Option(help="the feature file the students were trained on")
    ] = Path("data/features/avdigits.h5"),
    as_json: Annotated[bool, typer.Option("--json", help="print only the figures as one JSON object")] = False,
) -> None:
    """Why a feature-based student sits at chance: on the first 512 validation rows of its split group, the share
    of zero penultimate units, the units that never fire, the mean feature norm and the logits' spread across
    samples (near 0: the same prediction for every input)."""
    import json

    from mstcli.debug.feature_collapse import collapse

    figures = collapse(students, features)
    if as_json:
        typer.echo(json.dumps(figures))
        return
    from rich.table import Table

    table = Table(title=f"penultimate features and logits on validation rows of {figures['features']}")
    table.add_column("student")
    for column in ("zero units", "dead units", "feature norm", "logit std across samples"):
        table.add_column(column, justify="right")
    for r in figures["students"]:
        table.add_row(r["student"], f"{r['zero_units']:.1%}", f"{r['dead_units']}/{r['units']}",
                      f"{r['feature_norm']:.3g}", f"{r['logit_std']:.3g}")  # fmt: skip
    show(table)
