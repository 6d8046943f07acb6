"""What every ``mst`` command shares: the Typer app, the options several commands take, the frame that turns a
UserError into ``error: <message>`` and exit code 2, the summary output, and reading the settings.

Heavy modules (torch, h5py, the stages) are imported inside the commands so ``mst --help`` is instant.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="mst",
    help="Cross-modal knowledge distillation by MST-Distill: a small unimodal student learns from paired data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PARTIAL_EXIT_CODE = 3  # mst predict: some inputs skipped, the others predicted (1 is Python's code for a crash)

ParamsOption = Annotated[
    Path | None, typer.Option("--params", "-p", help="settings file (default: ./params.yaml if present)")
]
RestartOption = Annotated[
    bool,
    typer.Option(
        "--restart", help="start from epoch 0 even if a killed run of the same stage left a state to resume from"
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="print nothing but errors")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="also print debug notes")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="override a setting, e.g. -S prepare.num_samples=500 (repeatable)"),
]


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Every command's frame: ``--quiet`` / ``--verbose`` (added to its options here, so no command can lack them)
    set up logging; a UserError becomes ``error: <message>`` on stderr and exit code 2, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, quiet: bool = False, verbose: bool = False, **kwargs: Any) -> Any:
        from mstcli.errors import UserError
        from mstcli.ui import close_live_displays, setup_logging

        setup_logging(quiet, verbose)
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            close_live_displays()
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(UserError.exit_code) from None
        except KeyboardInterrupt:
            close_live_displays()
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:  # under torchrun: a collective failed because another process stopped
            if "WORLD_SIZE" not in os.environ:
                raise
            from mstcli.engine.distributed import failure_message

            message = failure_message(exc)
            if message is None:
                raise
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(1) from None
        finally:
            close_live_displays()

    own = inspect.signature(command, eval_str=True)
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False, annotation=annotation)
        for name, annotation in (("quiet", QuietOption), ("verbose", VerboseOption))
    ]
    wrapper.__signature__ = own.replace(parameters=[*own.parameters.values(), *extra])  # type: ignore[attr-defined]
    return wrapper


def say(text: str) -> None:
    """A command's summary line on stdout: none under --quiet, and once per torchrun job (by rank 0)."""
    from mstcli.ui import is_quiet

    if not is_quiet() and os.environ.get("RANK", "0") == "0":
        typer.echo(text)


def show(renderable: Any) -> None:
    """A Rich table on stdout: none under --quiet, and once per torchrun job (by rank 0)."""
    from rich.console import Console

    from mstcli.ui import is_quiet

    if not is_quiet() and os.environ.get("RANK", "0") == "0":
        Console().print(renderable)


def load_settings(params_file: Path | None, overrides: list[str] | None, extra: dict[str, Any] | None = None):
    """The settings of params.yaml with the overrides, validated (distill.method against the method registry, so a
    typo stops every command at once, not only `mst distill`)."""
    from mstcli.config import load_params
    from mstcli.methods.constants import check_method_names
    from mstcli.methods.registry import entry, method_names

    items = list(overrides or [])
    for key, value in (extra or {}).items():
        if value is not None:
            items.append(f"{key}={value}")
    params = load_params(params_file, items)
    entry(params.distill.method)
    check_method_names(params.distill.constants, method_names())
    return params


def feature_file(params) -> Path:
    from mstcli.stages.prepare import feature_path

    return feature_path(params.common.dataset)


def run_paths(params):
    from mstcli.stages.paths import RunPaths

    return RunPaths(params.common.run)


ExecutorOption = Annotated[
    str,
    typer.Option(
        "--executor",
        help="where the jobs run: local (a pool of --jobs processes), slurm (sbatch, job arrays with afterok"
        " dependencies), debug (one after another in this process) or dvc (one `dvc repro`, sequential)",
    ),
]
JobsOption = Annotated[
    int, typer.Option("--jobs", min=0, help="local: processes at once; slurm: array tasks at once (0: no limit)")
]
PartitionOption = Annotated[str | None, typer.Option("--slurm-partition", help="slurm: the partition")]
SlurmTimeOption = Annotated[int, typer.Option("--slurm-time", min=1, help="slurm: minutes a job may run")]
CpusOption = Annotated[int, typer.Option("--cpus-per-task", min=1, help="slurm: CPUs of each job")]
GpusOption = Annotated[int, typer.Option("--gpus-per-task", min=0, help="slurm: GPUs of each job")]


def executor_options(kind: str, jobs: int, partition: str | None, minutes: int, cpus: int, gpus: int):
    from mstcli.errors import UserError
    from mstcli.experiments.executors import EXECUTORS, ExecutorOptions

    if kind not in (*EXECUTORS, "dvc"):
        raise UserError(f"--executor {kind}: unknown (known: {', '.join([*EXECUTORS, 'dvc'])})")
    return ExecutorOptions(kind, jobs, Path(".mst/jobs"), partition, minutes, cpus, gpus)
