"""Commands that put a trained student to use: predict on new files, export a graph."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mstcli.cli.frame import (
    PARTIAL_EXIT_CODE,
    ParamsOption,
    SetOption,
    app,
    feature_file,
    load_settings,
    run_paths,
    user_errors,
)


@app.command()
@user_errors
def predict(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="images (PNG/JPEG/BMP/WebP), clips (WAV/FLAC/OGG/MP3), texts (.txt), .npy feature arrays or folders"
            " of them"
        ),
    ] = None,
    text: Annotated[
        list[str] | None, typer.Option("--text", help="a text to classify, for a text student (repeatable)")
    ] = None,
    student: Annotated[
        Path | None, typer.Option(help="student checkpoint (default models/<run>/student.pt)")
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="classes shown per input")] = 3,
    batch_size: Annotated[int, typer.Option(min=1, help="inputs per forward pass")] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of the table")] = False,
    params_file: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Run the student on new files through the feature step of its data set; print the top classes.

    Bad inputs are listed with their reason and the others still predicted. Exit code: 0 every input predicted,
    3 some inputs skipped (the rest predicted), 2 nothing predicted (no usable input, no student)."""
    import json

    params = load_settings(params_file, overrides)
    from mstcli.stages.predict import predict_files

    if not inputs and not text:
        from mstcli.errors import UserError

        raise UserError("give files or folders to predict (or --text for a text student)")
    student = student or run_paths(params).student
    report = predict_files(inputs or [], student, feature_file(params), batch_size, text or [])
    if as_json:
        typer.echo(json.dumps(report.to_dict(top)))
    else:
        from rich.console import Console

        from mstcli.report.tables import predictions_table

        Console(width=200).print(predictions_table(report, top))
        for file, reason in report.failures:
            typer.echo(f"skipped {file}: {reason}", err=True)
    if report.failures:
        raise typer.Exit(PARTIAL_EXIT_CODE)


@app.command()
@user_errors
def export(
    run: Annotated[str | None, typer.Argument(help="the run whose student to export (default common.run)")] = None,
    out: Annotated[Path | None, typer.Option(help="folder to write (default models/<run>/export)")] = None,
    params_file: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Write the run's student as files that run without mst: student.pt2 (torch.export), student.onnx (checked
    with onnxruntime), manifest.json, run_onnx.py; the feature step is in the graph where the data set has one."""
    params = load_settings(params_file, overrides, {"common.run": run})
    from mstcli.stages.export import export as run_export

    paths = run_paths(params)
    out = out or paths.models / "export"
    manifest = run_export(paths.student, feature_file(params), out, paths.results / "metrics.json")
    sizes = ", ".join(f"{name} {record['bytes'] / 1024:.0f} KiB" for name, record in manifest["files"].items())
    check = manifest["check"]
    typer.echo(
        f"wrote {out}/: {sizes}; inputs {', '.join(i['name'] for i in manifest['inputs'])}; onnxruntime within "
        f"{check['max_abs_diff_onnx']:.1e} of torch on {check['inputs']} inputs"
    )
