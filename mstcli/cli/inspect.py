"""Commands that show what mst has and holds: a feature file, the data sets, the methods, the settings,
and an example folder to try the pipeline on."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from mstcli.cli.frame import (
    ParamsOption,
    SetOption,
    app,
    load_settings,
    say,
    user_errors,
)


@app.command()
@user_errors
def info(
    path: Annotated[Path, typer.Argument(help="a feature file written by `mst prepare`")],
    group: Annotated[int, typer.Option(help="split group (0-19) whose split sizes to show")] = 0,
) -> None:
    """Summarize a feature file: modalities, shapes, classes, split sizes and class balance."""
    from rich.console import Console

    from mstcli.data.store import FeatureFile
    from mstcli.data.summary import feature_tables

    console = Console()
    for table in feature_tables(FeatureFile.open(path), group):
        console.print(table)


@app.command("example-folder")
@user_errors
def example_folder(
    out: Annotated[Path, typer.Argument(help="the folder to create (new or empty)")] = Path("data/example_pairs"),
    pairs: Annotated[int, typer.Option(min=1, help="number of image + audio pairs")] = 1500,
    table: Annotated[str, typer.Option(help="the metadata format: csv or jsonl")] = "csv",
    split_column: Annotated[
        bool, typer.Option("--split-column", help="give every row a split (train/validation/test) in the table")
    ] = False,
    seed: Annotated[int, typer.Option(help="seed of the choice of images and clips")] = 0,
) -> None:
    """Write a folder of paired PNG digits and WAV spoken digits with a metadata table, from the embedded
    AV-Digits data: a worked example of `common.dataset: folder` (prepare it with -S prepare.source=FOLDER)."""
    from mstcli.errors import UserError
    from mstcli.stages.example_folder import write_example_folder

    if table not in ("csv", "jsonl"):
        raise UserError(f"--table must be csv or jsonl, got '{table}'")
    started = time.perf_counter()
    metadata = write_example_folder(out, pairs, table, split_column, seed)  # type: ignore[arg-type]
    say(f"wrote {pairs} pairs and {metadata} in {time.perf_counter() - started:.1f} s")


@app.command()
@user_errors
def datasets() -> None:
    """List the data sets mst can prepare."""
    from rich.console import Console
    from rich.table import Table

    from mstcli.data.sources import all_sources

    table = Table(title="data sets")
    for column in ("name", "modalities", "default source", "description"):
        table.add_column(column)
    for source in all_sources().values():
        modalities = ", ".join(source.modalities) or "named by the metadata's columns"
        table.add_row(source.name, modalities, source.default_source or "-", source.description)
    Console().print(table)


@app.command()
@user_errors
def methods(
    constants: Annotated[
        bool, typer.Option("--constants", help="show each method's constants in the reference and paper sets")
    ] = False,
) -> None:
    """List the distillation methods of `mst distill --method`."""

    from rich.console import Console
    from rich.table import Table

    from mstcli.methods.constants import SET_NAMES
    from mstcli.methods.records import constants_table_rows
    from mstcli.methods.registry import ENTRIES

    if constants:
        table = Table(
            title="constants of the comparison methods (distill.baseline_settings; change one with"
            " -S 'distill.constants={NAME: {KEY: VALUE}}')"
        )
        for column in ("method", "constant", *SET_NAMES):
            table.add_column(column)
        for method, key, values in constants_table_rows():
            style = "" if len(set(values)) == 1 else "bold"
            table.add_row(method, key, *values, style=style)
            table.add_section()
        Console().print(table)
        return
    table = Table(title="distillation methods (mst distill --method NAME [--teacher mm|cm|cm:<modality>|all])")
    for column in ("name", "what it is (first line of its module's docstring)"):
        table.add_column(column)
    for entry in ENTRIES:
        cls = entry.load()
        table.add_row(entry.name, (sys.modules[cls.__module__].__doc__ or "").strip().split("\n")[0])
    Console().print(table)


@app.command("params")
@user_errors
def show_params(params_file: ParamsOption = None, overrides: SetOption = None) -> None:
    """Show every setting with its value (after params.yaml and -S overrides) and what it does."""
    from rich.console import Console
    from rich.table import Table

    from mstcli.config import describe_params

    values = load_settings(params_file, overrides).to_dict()
    table = Table(title="settings")
    for column in ("key", "value", "help"):
        table.add_column(column)
    for key, _default, help_text in describe_params():
        section, name = key.split(".", 1)
        table.add_row(key, repr(values[section][name]), help_text)
    Console().print(table)
