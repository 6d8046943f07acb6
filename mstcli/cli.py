"""The ``mst`` command line. One thin function per command: read settings, call the stage, print a summary.

Heavy modules (torch, h5py, the stages) are imported inside the commands so ``mst --help`` is instant.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import time
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


def _offline_environment() -> None:
    """No network at run time: make Hugging Face fail at once instead of retrying for half a minute."""
    for key in (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "DVC_NO_ANALYTICS",
        "DVC_STUDIO_OFFLINE",
    ):
        os.environ.setdefault(key, "1")


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


def _load(params_file: Path | None, overrides: list[str] | None, extra: dict[str, Any] | None = None):
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


@app.command()
@user_errors
def prepare(
    dataset: Annotated[str | None, typer.Option(help="data set name (common.dataset)")] = None,
    source: Annotated[str | None, typer.Option(help="source file or folder (prepare.source)")] = None,
    out: Annotated[Path | None, typer.Option(help="output file (default data/features/<dataset>.h5)")] = None,
    params_file: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Turn a data set's source into a cached HDF5 feature file with the reference splits."""
    params = _load(params_file, overrides, {"common.dataset": dataset, "prepare.source": source})
    from mstcli.stages.prepare import prepare as run_prepare

    started = time.perf_counter()
    path = run_prepare(params, out)
    say(f"wrote {path} in {time.perf_counter() - started:.1f} s")


def _features(params) -> Path:
    from mstcli.stages.prepare import feature_path

    return feature_path(params.common.dataset)


def _paths(params):
    from mstcli.stages.paths import RunPaths

    return RunPaths(params.common.run)


@app.command()
@user_errors
def train(params_file: ParamsOption = None, overrides: SetOption = None, restart: RestartOption = False) -> None:
    """S1: train the MM teacher, the CM teacher and the student together (collaborative initialization).

    A killed run resumes after its last finished epoch when rerun with the same settings (see --restart)."""
    params = _load(params_file, overrides)
    from mstcli.stages.train import train as run_train

    paths = _paths(params)
    last = run_train(params, _features(params), paths.stage1, paths.results / "train", restart)
    names = {"mm": "MM", "student": "student", "cm": "CM"}
    accuracies = ", ".join(
        f"{names.get(net, net.replace('cm_', 'CM ', 1))} {value:.1%}"
        for net, value in (
            (key[4:-4], value) for key, value in last.items() if key.startswith("val_") and key.endswith("_acc")
        )
    )
    say(f"wrote {paths.stage1}: val acc {accuracies}")


@app.command("fit-masks")
@user_errors
def fit_masks(params_file: ParamsOption = None, overrides: SetOption = None, restart: RestartOption = False) -> None:
    """S2: fit one MaskNet per (teacher, layer) so each masked teacher matches the frozen student.

    A killed run resumes after its last finished epoch when rerun with the same settings (see --restart)."""
    params = _load(params_file, overrides)
    from mstcli.stages.fit_masks import fit_masks as run_fit_masks

    paths = _paths(params)
    summary = run_fit_masks(params, _features(params), paths.stage1, paths.masks, paths.results / "fit_masks", restart)
    say(f"wrote {paths.masks}: best epoch {summary['best_epoch']}, val KL score {summary['val_score']:.4f}")


@app.command()
@user_errors
def distill(
    method: Annotated[
        str | None, typer.Option(help="mst, none or a comparison method: see `mst methods` (distill.method)")
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(help="teacher of a comparison method: mm, cm, cm:<modality> (3+ modalities) or all (kd only)"),
    ] = None,
    same_passes: Annotated[
        bool,
        typer.Option(
            "--same-passes", help="train for train.epochs + distill.epochs epochs (the rule for baselines from scratch)"
        ),
    ] = False,
    out: Annotated[Path | None, typer.Option(help="student checkpoint (default models/<run>/student.pt)")] = None,
    results: Annotated[
        Path | None, typer.Option(help="folder whose distill/ gets the curves and routing (default results/<run>)")
    ] = None,
    params_file: ParamsOption = None,
    overrides: SetOption = None,
    restart: RestartOption = False,
) -> None:
    """S3: distill into the student from its top-k specialized teachers (or a comparison method).

    A killed run resumes after its last finished epoch when rerun with the same settings (see --restart)."""
    params = _load(params_file, overrides, {"distill.method": method, "distill.teacher": teacher})
    from mstcli.stages.distill import distill as run_distill
    from mstcli.stages.distill import with_baseline_budget

    if same_passes:
        params = with_baseline_budget(params)
    paths = _paths(params)
    out = out or paths.student
    results = results or paths.results
    summary = run_distill(
        params,
        _features(params),
        paths.stage1,
        paths.masks,
        out,
        results / "distill",
        restart,
    )
    say(f"wrote {out}: best epoch {summary['best_epoch']}, val CE {summary['val_ce']:.4f}")


@app.command("eval")
@user_errors
def evaluate(
    student: Annotated[
        Path | None, typer.Option(help="student checkpoint (default models/<run>/student.pt)")
    ] = None,
    results: Annotated[Path | None, typer.Option(help="folder for metrics.json and confusion.csv")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print only the metrics as one JSON object (what metrics.json holds)")
    ] = False,
    params_file: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Test the student alone, on its own modality: accuracy, macro-F1, per-class accuracy, confusion matrix."""
    import json

    params = _load(params_file, overrides)
    from mstcli.report.tables import metrics_table
    from mstcli.stages.evaluate import evaluate as run_evaluate

    paths = _paths(params)
    results = results or paths.results
    report = run_evaluate(
        params, _features(params), student or paths.student, results / "metrics.json", results / "confusion.csv"
    )
    if as_json:
        typer.echo(json.dumps({k: v for k, v in report.items() if k != "confusion"}))
        return
    show(metrics_table(report))
    figure = f"mIoU {report['miou']:.2%}, pixel accuracy" if "miou" in report else "test accuracy"
    say(f"{figure} of the {report['student']} student: {report['accuracy']:.2%} (wrote {results / 'metrics.json'})")


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

    params = _load(params_file, overrides)
    from mstcli.stages.predict import predict_files

    if not inputs and not text:
        from mstcli.errors import UserError

        raise UserError("give files or folders to predict (or --text for a text student)")
    report = predict_files(inputs or [], student or _paths(params).student, _features(params), batch_size, text or [])
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
    params = _load(params_file, overrides, {"common.run": run})
    from mstcli.stages.export import export as run_export

    paths = _paths(params)
    out = out or paths.models / "export"
    manifest = run_export(paths.student, _features(params), out, paths.results / "metrics.json")
    sizes = ", ".join(f"{name} {record['bytes'] / 1024:.0f} KiB" for name, record in manifest["files"].items())
    check = manifest["check"]
    typer.echo(
        f"wrote {out}/: {sizes}; inputs {', '.join(i['name'] for i in manifest['inputs'])}; onnxruntime within "
        f"{check['max_abs_diff_onnx']:.1e} of torch on {check['inputs']} inputs"
    )


@app.command()
@user_errors
def compare(
    folder: Annotated[Path, typer.Argument(help="folder searched for metrics.json files of `mst eval`")] = Path(
        "results"
    ),
    out: Annotated[Path, typer.Option(help="folder for compare.md and compare.json")] = Path("results"),
    as_json: Annotated[
        bool, typer.Option("--json", help="print only the JSON object method -> teacher -> direction -> [mean, std]")
    ] = False,
) -> None:
    """The benchmark table: test accuracy per method, teacher and student direction, mean ± std over seeds."""
    import json

    from mstcli.report.tables import compare_table
    from mstcli.stages.compare import compare as run_compare
    from mstcli.ui import logger

    table, grid, warnings = run_compare(folder, out)
    for warning in warnings:
        logger().warning(warning)
    if as_json:
        typer.echo(json.dumps(table))
        return
    show(compare_table(grid))
    say(f"wrote {out / 'compare.md'}, {out / 'compare.json'}, {out / 'compare_paired.json'} and {out / 'compare.png'}")


@app.command()
@user_errors
def report(
    run: Annotated[str | None, typer.Argument(help="the run to describe (default common.run)")] = None,
    params_file: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Figures of a run (curves, routing dynamics, confusion, S2 masks) and results/<run>/report.md embedding them."""
    params = _load(params_file, overrides, {"common.run": run})
    from mstcli.stages.report import report as run_report

    started = time.perf_counter()
    done = run_report(_paths(params), _features(params), params.eval.batch_size)
    for name, why in done.skipped.items():
        from mstcli.ui import logger

        logger().warning(f"{name} figure not drawn: {why}")
    say(f"wrote {done.page} with {len(done.figures)} figures in {time.perf_counter() - started:.1f} s")


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
    import sys

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

    values = _load(params_file, overrides).to_dict()
    table = Table(title="settings")
    for column in ("key", "value", "help"):
        table.add_column(column)
    for key, _default, help_text in describe_params():
        section, name = key.split(".", 1)
        table.add_row(key, repr(values[section][name]), help_text)
    Console().print(table)


bench_app = typer.Typer(
    name="bench", help="Benchmarks: commands that measure and print figures (run them on a quiet machine).",
    no_args_is_help=True,
)
app.add_typer(bench_app)


@bench_app.command("folder")
@user_errors
def bench_folder(
    pairs: Annotated[
        list[int] | None, typer.Option("--pairs", min=1, help="folder sizes to measure (repeatable)")
    ] = None,
    workers: Annotated[int, typer.Option(min=0, help="prepare.workers (0: one per core)")] = 0,
    workdir: Annotated[
        Path | None, typer.Option(help="where the example folders are written (default: the temp folder)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as one JSON list")] = False,
    overrides: SetOption = None,
) -> None:
    """`mst prepare` on example folders of PNG + WAV pairs: pairs per second and peak memory, per folder size.

    Writes each folder with `mst example-folder` (from the embedded AV-Digits data, so run it from the repository's
    root), prepares it in a child process while sampling the memory of its whole process tree, then deletes both.
    -S settings go to that prepare (e.g. -S prepare.image_size=224 -S prepare.image_mode=rgb: rows the size of
    224 x 224 RGB photos)."""
    import json

    from mstcli.benchmarks.folder_prepare import run as run_bench

    _load(None, overrides)  # a bad setting stops here, before any folder is written
    figures = run_bench(pairs or [10000, 50000], workers, workdir, list(overrides or []))
    if as_json:
        typer.echo(json.dumps([f.to_dict() for f in figures]))
        return
    from rich.table import Table

    table = Table(title=f"mst prepare on a folder of PNG + WAV pairs ({os.cpu_count()} cores)")
    for column in ("pairs", "workers", "prepare s", "pairs/s", "peak PSS of the tree MB", "peak parent RSS MB",
                   "feature file MB"):  # fmt: skip
        table.add_column(column, justify="right")
    for f in figures:
        table.add_row(*map(str, (f.pairs, f.workers, f.seconds, f.pairs_per_second, f.peak_tree_pss_mb,
                                 f.peak_parent_rss_mb, f.feature_mb)))  # fmt: skip
    show(table)


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


def _executor_options(kind: str, jobs: int, partition: str | None, minutes: int, cpus: int, gpus: int):
    from mstcli.errors import UserError
    from mstcli.experiments.executors import EXECUTORS, ExecutorOptions

    if kind not in (*EXECUTORS, "dvc"):
        raise UserError(f"--executor {kind}: unknown (known: {', '.join([*EXECUTORS, 'dvc'])})")
    return ExecutorOptions(kind, jobs, Path(".mst/jobs"), partition, minutes, cpus, gpus)


@bench_app.command("accuracy")
@user_errors
def bench_accuracy(
    students: Annotated[list[str] | None, typer.Option("--student", help="only these directions (repeatable)")] = None,
    seeds: Annotated[list[int] | None, typer.Option("--seed", help="only these seeds (repeatable)")] = None,
    methods: Annotated[list[str] | None, typer.Option("--method", help="only these comparison methods")] = None,
    teachers: Annotated[list[str] | None, typer.Option("--teacher", help="only these teachers (mm, cm)")] = None,
    dry: Annotated[
        bool, typer.Option("--dry", help="list the cells with their state in DVC (done, stale, missing); run nothing")
    ] = False,
    executor: ExecutorOption = "local",
    jobs: JobsOption = 1,
    slurm_partition: PartitionOption = None,
    slurm_time: SlurmTimeOption = 240,
    cpus_per_task: CpusOption = 2,
    gpus_per_task: GpusOption = 0,
) -> None:
    """The comparison table: every cell of bench/matrix.yaml (methods x teachers x directions x seeds) through the
    stages of bench/dvc.yaml, S1 and S2 once per (direction, seed) and the cells after them, on a local pool, on
    SLURM or sequentially; a finished cell (up to date in DVC) is skipped, a killed or partly failed matrix
    continues, each finished cell is recorded in dvc.lock; ends with `mst compare results/bench`."""
    from mstcli.benchmarks.accuracy_matrix import RESULTS, Matrix
    from mstcli.errors import UserError
    from mstcli.experiments.dvc_stages import plan_stages
    from mstcli.experiments.matrix_run import reproduce_sequentially, run_stage_grid
    from mstcli.ui import logger

    options = _executor_options(executor, jobs, slurm_partition, slurm_time, cpus_per_task, gpus_per_task)
    matrix = Matrix.read().narrowed(students=students, seeds=seeds, methods=methods, teachers=teachers)
    cells = matrix.cells()
    targets = [stage for stage, _ in cells]
    if dry:
        states = plan_stages(targets, Path(".")).states
        for stage in targets:
            typer.echo(f"{stage}\t{states[stage]}")
        return
    started = time.perf_counter()
    failed = []
    if options.kind == "dvc":
        reproduce_sequentially(targets)
    else:
        report = run_stage_grid(targets, options, Path("."), say, lambda line: logger().warning(line))
        failed = report.failed
        if report.outcomes:
            say(
                f"{len(report.outcomes)} jobs in {report.wall_s:.0f} s (their own times add up to"
                f" {report.job_seconds:.0f} s)"
            )
    from mstcli.report.tables import compare_table
    from mstcli.stages.compare import compare as run_compare

    _, grid, notes = run_compare(RESULTS, Path("results"))
    show(compare_table(grid))
    for note in notes:
        logger().warning(note)
    say(f"the matrix took {time.perf_counter() - started:.0f} s; wrote results/compare.md and results/compare.json")
    if failed:
        raise UserError(f"{len(failed)} of the matrix's jobs failed or were not run; the table lists them (compare.md)")


@app.command("sweep")
@user_errors
def sweep(
    grid: Annotated[
        list[str] | None,
        typer.Option("--set", "-S", help="an axis of the grid: key=value1,value2,... (repeatable)"),
    ] = None,
    seeds: Annotated[str, typer.Option("--seeds", help="seeds of every point, e.g. 0,1,2")] = "0",
    method: Annotated[str | None, typer.Option("--method", help="the method (default: distill.method)")] = None,
    teacher: Annotated[str | None, typer.Option("--teacher", help="teacher of a comparison method: mm, cm")] = None,
    name: Annotated[str, typer.Option("--name", help="results/sweep/<name>/ and models/sweep/<name>/")] = "sweep",
    rerun: Annotated[bool, typer.Option("--rerun", help="run finished cells again (e.g. after a code change)")] = False,
    executor: ExecutorOption = "local",
    jobs: JobsOption = 1,
    slurm_partition: PartitionOption = None,
    slurm_time: SlurmTimeOption = 240,
    cpus_per_task: CpusOption = 2,
    gpus_per_task: GpusOption = 0,
    params_file: ParamsOption = None,
) -> None:
    """A grid of settings x seeds (e.g. -S distill.k=1,2,3 -S distill.lr=1e-3,3e-4 --seeds 0,1,2), S1 and S2
    shared where the settings allow, on a local pool, on SLURM or in this process; ends with a table of the grid,
    mean ± std over seeds, the best marked (results/sweep/<name>/sweep.md)."""
    from rich.table import Table

    from mstcli.errors import UserError
    from mstcli.experiments.executors import executor_for
    from mstcli.experiments.matrix_run import record_outcome
    from mstcli.experiments.sweep import mean_text, parse_axes, plan_sweep, record_cell, sweep_rows, write_table
    from mstcli.methods.registry import entry
    from mstcli.ui import logger

    options = _executor_options(executor, jobs, slurm_partition, slurm_time, cpus_per_task, gpus_per_task)
    if options.kind == "dvc":
        raise UserError("--executor dvc: sweeps are not DVC stages; use local, slurm or debug")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {seeds}: expected integers separated by commas, e.g. 0,1,2") from None
    if not seed_list:
        raise UserError("--seeds: no seed given")
    axes = parse_axes(list(grid or []), params_file)
    params = _load(params_file, None)
    method = method or params.distill.method
    chosen = entry(method)
    from mstcli.methods.registry import method_class

    needs_masks = method_class(method).needs_masks
    teacher = teacher if chosen.fixed_teacher is None else None
    root = Path(".")
    plan = plan_sweep(name, axes, seed_list, method, teacher, needs_masks, params_file, rerun, root)
    by_name = {job.name: job for job in plan.jobs}
    say(
        f"{len(plan.cells)} cells ({len(plan.skipped)} finished before), {len(plan.jobs)} jobs on the"
        f" {options.kind} executor"
    )
    runner = executor_for(options)
    finished = 0

    def on_done(outcome) -> None:
        nonlocal finished
        finished += 1
        job = by_name[outcome.name]
        record_outcome(job, outcome, root)
        if outcome.ok and job.results is not None:
            record_cell(root, job.results, plan.definition[job.name])
        where = f"[{finished}/{len(plan.jobs)}] {outcome.name}"
        if outcome.ok:
            say(f"{where} done in {outcome.seconds:.0f} s")
        else:
            logger().warning(f"{where} {'skipped' if outcome.skipped else 'failed'}: {outcome.error}")

    outcomes = runner.run(plan.jobs, root, on_done) if plan.jobs else []
    rows, metric = sweep_rows(plan, root)
    path = write_table(plan, rows, metric, seed_list, root)
    table = Table(title=f"{name}: test {metric} (%), mean ± std over seeds {seeds}")
    keys = [key for key, _ in rows[0].point] if rows else []
    for column in [*keys, *(f"seed {s}" for s in seed_list), "mean ± std", "best"]:
        table.add_column(column, justify="right")
    for row in rows:
        per_seed = [f"{row.values[s]:.2f}" if s in row.values else "failed" for s in seed_list]
        table.add_row(*(v for _, v in row.point), *per_seed, mean_text(row), "★" if row.best else "")
    show(table)
    say(f"wrote {path} and {path.with_suffix('.json')}")
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise UserError(f"{len(failed)} of the sweep's jobs failed or were not run; see {path}")


@bench_app.command("speed")
@user_errors
def bench_speed(
    rounds: Annotated[
        int, typer.Option(min=2, help="epochs of every method, taken in turns (the first is a warm-up)")
    ] = 3,
    s1_epochs: Annotated[
        int, typer.Option(min=1, help="S1 epochs before timing (the teachers' quality is irrelevant)")
    ] = 1,
    s2_epochs: Annotated[int, typer.Option(min=1, help="S2 epochs before timing")] = 1,
    methods: Annotated[
        list[str] | None,
        typer.Option("--method", help="time only these methods (repeatable; the student alone is always timed)"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="also write the JSON object here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
    params_file: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Every method's S3 epoch time next to the student alone's, measured in one run on the same data (the run's
    feature file and settings, e.g. -S common.student=audio -S distill.teacher=cm, or other nets:
    -S models.student=torchvision:resnet18), and the peak memory."""
    import json

    params = _load(params_file, overrides)
    from mstcli.benchmarks.method_speed import measure

    figures = measure(params, _features(params), rounds, s1_epochs, s2_epochs, methods)
    if out is not None:
        from mstcli.atomic_write import write_json

        write_json(out, figures)
    if as_json:
        typer.echo(json.dumps(figures))
        return
    from rich.table import Table

    table = Table(title=f"S3 epoch per method, {figures['device']}, {figures['n_train']} train rows, "
                        f"{figures['student']} student, {figures['teacher']} teacher")  # fmt: skip
    on_gpu = any("gpu_peak_mb" in m for m in figures["methods"].values())
    for column in ("method", "s / epoch", "x student alone", "teacher", "set-up s", *(["GPU peak MB"] * on_gpu)):
        table.add_column(column, justify="right")
    for name, m in figures["methods"].items():
        gpu = [f"{m.get('gpu_peak_mb', 0.0):.0f}"] if on_gpu else []
        table.add_row(
            name, f"{m['seconds_per_epoch']:.3f}", f"{m['over_student']:.2f}", m["teacher"], f"{m['setup_s']:.2f}",
            *gpu,
        )  # fmt: skip
    show(table)
    frozen = (
        f"frozen-teacher methods: median {figures['frozen_teacher_median_over_student']}x, largest "
        f"{figures['frozen_teacher_max_over_student']}x the student alone; "
        if figures["frozen_teacher_median_over_student"] is not None
        else ""
    )
    say(
        f"{frozen}S1 {figures['s1_epoch_s']:.2f} s, S2 {figures['s2_epoch_s']:.2f} s per epoch; "
        f"peak resident memory {figures['peak_rss_mb']:.0f} MB (the whole run)"
    )



def _emit(figures: Any, out: Path | None, as_json: bool) -> bool:
    """Write the figures to ``out`` (if given) and, under ``--json``, print them as one JSON object; True when the
    command is done (no table to show)."""
    import json

    if out is not None:
        from mstcli.atomic_write import write_json

        write_json(out, figures)
    if as_json:
        typer.echo(json.dumps(figures))
    return as_json


OutOption = Annotated[Path | None, typer.Option(help="also write the JSON object here")]
JsonOption = Annotated[bool, typer.Option("--json", help="print only the JSON object")]
WorkdirOption = Annotated[
    Path | None, typer.Option(help="where the run's files go (default: a new temporary folder, kept)")
]


def _seconds(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@bench_app.command("full-run")
@user_errors
def bench_full_run(
    n: Annotated[int, typer.Option("--n", min=1, help="pairs in all (70000 = AV-MNIST)")] = 70000,
    spec_size: Annotated[int, typer.Option(min=1, help="spectrogram side (112 = AV-MNIST)")] = 112,
    student: Annotated[str, typer.Option(help="the student's modality (common.student)")] = "image",
    epochs: Annotated[
        tuple[int, int, int] | None,
        typer.Option(metavar="S1 S2 S3", help="change the schedule: the epochs of S1, S2 and S3"),
    ] = None,
    scale_to: Annotated[
        tuple[int, int, int] | None,
        typer.Option(metavar="S1 S2 S3", help="also extrapolate (not measured) to these epochs of S1, S2 and S3"),
    ] = None,
    synthetic: Annotated[
        bool, typer.Option("--synthetic", help="random features of those shapes instead of prepare")
    ] = False,
    mode: Annotated[
        str, typer.Option(help="process: every stage called in this process; cli: `python -m mstcli <stage>` each")
    ] = "process",
    no_report: Annotated[bool, typer.Option("--no-report", help="leave out the report stage (figures)")] = False,
    workdir: WorkdirOption = None,
    out: OutOption = None,
    as_json: JsonOption = False,
    params_file: Annotated[
        Path, typer.Option("--params", "-p", help="the schedule's settings (the reference's 100/100/100 epochs)")
    ] = Path("presets/full.yaml"),
    overrides: SetOption = None,
) -> None:
    """The whole pipeline, prepare -> S1 -> S2 -> S3 -> eval -> report, at a given size and schedule, timed per
    stage, in one process (--mode process) or one `python -m mstcli` process per stage (--mode cli).

    The data are the embedded AV-Digits source (run it from the repository's root) prepared at --n pairs and
    --spec-size, or random features of those shapes (--synthetic)."""
    from mstcli.benchmarks.full_run import measure

    epochs = epochs if epochs and None not in epochs else None
    scale_to = scale_to if scale_to and None not in scale_to else None
    out = out.resolve() if out is not None else None
    summary = measure(params_file, overrides, n, spec_size, student, epochs, scale_to, synthetic,
                      mode, not no_report, workdir)  # type: ignore[arg-type]  # fmt: skip
    if _emit(summary, out, as_json):
        return
    from rich.table import Table

    table = Table(title=f"the whole pipeline, {summary['device']}, torch {summary['torch']}, precision "
                        f"{summary['precision']}, mode {summary['mode']}")  # fmt: skip
    for column in ("stage", "epochs", "s / epoch", "wall s"):
        table.add_column(column, justify="right")
    for stage, wall in summary["wall_s"].items():
        table.add_row(stage, str(summary["epochs"].get(stage, "")), _seconds(summary["epoch_s"].get(stage)),
                      f"{wall:.1f}")  # fmt: skip
    table.add_section()
    table.add_row("total", "", "", f"{summary['total_s']:.1f}")
    show(table)
    say(f"test accuracy {summary['test_accuracy']}; the run's files are in {summary['workdir']}")
    if "extrapolated" in summary:
        extrapolated = summary["extrapolated"]
        say(f"extrapolated to {list(extrapolated['epochs'].values())} epochs (not measured): "
            f"{extrapolated['total_s']} s")  # fmt: skip


@bench_app.command("stages")
@user_errors
def bench_stages(
    n: Annotated[int, typer.Option("--n", min=1, help="pairs in all (70000 = AV-MNIST; 60% train)")] = 6000,
    spec_size: Annotated[int, typer.Option(min=1, help="spectrogram side (112 = AV-MNIST)")] = 32,
    features: Annotated[
        Path | None, typer.Option(help="a prepared feature file instead of random features")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="epochs per stage (the first is a warm-up)")] = 3,
    batch_size: Annotated[int, typer.Option(min=1, help="batch size of S1, S2 and S3")] = 512,
    factor: Annotated[int, typer.Option(min=1, help="MaskNet hidden_dim_factor (reference: 2)")] = 2,
    student: Annotated[str, typer.Option(help="the student's modality (common.student)")] = "image",
    s2_recompute: Annotated[
        bool, typer.Option("--s2-recompute", help="also time S2 without the layer cache")
    ] = False,
    interleave: Annotated[int, typer.Option(min=0, help="rounds of alternating S3 and student epochs")] = 5,
    workdir: WorkdirOption = None,
    out: OutOption = None,
    as_json: JsonOption = False,
    params_file: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Seconds per epoch of S1, S2, S3 (with the expert bank and recomputing the teachers) and the student alone,
    all in this process on the same device, plus S3 / student from alternated epochs (--interleave).

    The data are random features with AV-MNIST's shapes (--n pairs, --spec-size) unless --features is given."""
    from mstcli.benchmarks.stage_speed import measure

    if features is not None and not features.is_file():
        from mstcli.errors import UserError

        raise UserError(f"feature file not found: {features}")
    summary = measure(params_file, overrides, n, spec_size, features, epochs, batch_size, factor, student,
                      s2_recompute, workdir, interleave)  # fmt: skip
    if _emit(summary, out, as_json):
        return
    from rich.table import Table

    table = Table(title=f"seconds per epoch, {summary['device']}, torch {summary['torch']}, precision "
                        f"{summary['precision']}, {summary['n_train']} train rows")  # fmt: skip
    for column in ("stage", "s / epoch", "samples / s", "wall s"):
        table.add_column(column, justify="right")
    for name, wall in summary["wall_s"].items():
        seconds = summary[f"{name}_epoch_s"]
        table.add_row(name, f"{seconds:.3f}", f"{summary['n_train'] / seconds:.0f}", f"{wall:.1f}")
    show(table)
    interleaved = summary["s3_over_student_interleaved"]
    say(
        f"S3 / student alone {summary['s3_over_student']} (interleaved: {interleaved}); bank speed-up "
        f"{summary['bank_speedup']}x; S3 set-up {summary['s3_setup_s']} s"
        + (f"; S2 layer cache speed-up {summary['cache_speedup']}x" if "cache_speedup" in summary else "")
    )


@bench_app.command("resume-cost")
@user_errors
def bench_resume_cost(
    n: Annotated[int, typer.Option("--n", min=1, help="pairs in all (60% train)")] = 6000,
    spec_size: Annotated[int, typer.Option(min=1, help="spectrogram side (112 = AV-MNIST)")] = 32,
    batch_size: Annotated[int, typer.Option(min=1, help="batch size of S1, S2 and S3")] = 128,
    factor: Annotated[int, typer.Option(min=1, help="fit_masks.hidden_dim_factor")] = 16,
    epochs: Annotated[int, typer.Option(min=1, help="epochs per stage")] = 2,
    device: Annotated[str, typer.Option(help="common.device: auto, cpu, cuda, ...")] = "auto",
    scale_to: Annotated[
        int, typer.Option(min=0, help="also report the epoch scaled to this many train rows (0: no)")
    ] = 0,
    out: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """What resume costs: seconds to write one end-of-epoch resume state of S1, S2 and S3 (MST-Distill), and
    its size, against the epoch itself; on random features with AV-MNIST's layout."""
    from mstcli.benchmarks.resume_cost import measure

    report = measure(n, spec_size, batch_size, factor, epochs, device, scale_to)
    if _emit(report, out, as_json):
        return
    from rich.table import Table

    table = Table(title=f"resume state writes, {report['n_train']} train rows, spectrograms {report['spec_size']}, "
                        f"batch {report['batch_size']}")  # fmt: skip
    columns = ["stage", "save s (median)", "state MB", "epoch s", "save / epoch"]
    if scale_to:
        columns += [f"epoch s at {scale_to} rows (extrapolated)", "save / that epoch"]
    for column in columns:
        table.add_column(column, justify="right")
    for name in ("s1", "s2", "s3"):
        entry = report[name]
        row = [name, f"{entry['save_s']:.3f}", f"{entry['state_mb']:.1f}", f"{entry['epoch_s']:.2f}",
               f"{entry['share']:.2%}"]  # fmt: skip
        if scale_to:
            row += [f"{entry['epoch_s_scaled']:.1f}", f"{entry['share_scaled']:.2%}"]
        table.add_row(*row)
    show(table)


@bench_app.command("torchrun")
@user_errors
def bench_torchrun(
    procs: Annotated[
        list[int] | None, typer.Option("--procs", min=1, help="process counts to measure (repeatable; default 1 and 2)")
    ] = None,
    out: OutOption = None,
    as_json: JsonOption = False,
    params_file: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Seconds per epoch of S1, S2 and S3 with 1 process (`python -m mstcli`) and under torchrun with N processes
    (`torchrun --nproc_per_node N -m mstcli`), each count in its own run models/speed-n<N>/ (--restart).

    common.threads stays 0, so each process takes cores // N threads; the figure is the median of the stage's
    epoch_s over its epochs after the first."""
    _load(params_file, overrides)  # a bad setting stops here, not in the first child process
    from mstcli.benchmarks.torchrun_speed import STAGES, measure

    figures = measure(procs or [1, 2], params_file, overrides)
    if _emit(figures, out, as_json):
        return
    from rich.table import Table

    table = Table(title="seconds per epoch by process count")
    table.add_column("stage")
    for count in figures["procs"]:
        table.add_column(f"{count} process{'es' if count > 1 else ''}", justify="right")
    for stage, _, _ in STAGES:
        table.add_row(stage, *(f"{figures['epoch_s'][stage][str(c)]:.2f}" for c in figures["procs"]))
    show(table)


@bench_app.command("dense")
@user_errors
def bench_dense(
    frames: Annotated[int, typer.Option(min=1, help="frames in all (60% train)")] = 14,
    height: Annotated[int, typer.Option(min=1, help="frame height")] = 96,
    width: Annotated[int, typer.Option(min=1, help="frame width")] = 128,
    divisor: Annotated[int, typer.Option(min=1, help="train.width_divisor (1: VGG16 widths)")] = 1,
    epochs: Annotated[int, typer.Option(min=1, help="epochs per stage (S3: the first is a warm-up)")] = 2,
    batch_size: Annotated[int, typer.Option(min=1, help="batch size (reference: 6)")] = 4,
    factor: Annotated[int, typer.Option(min=1, help="MaskNet hidden_dim_factor (reference: 2)")] = 2,
    student: Annotated[str, typer.Option(help="the student's modality (common.student)")] = "rgb",
    workdir: WorkdirOption = None,
    reuse: Annotated[
        bool, typer.Option("--reuse", help="keep --workdir's data, S1 and S2 of an earlier run; time S3 only")
    ] = False,
    child: Annotated[str | None, typer.Option("--child", hidden=True)] = None,
    out: OutOption = None,
    as_json: JsonOption = False,
    params_file: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Seconds and peak memory of one S3 epoch on NYU-Depth-V2-shaped random frames, with the float16 expert bank
    and recomputing the teachers (each S3 in its own child process, for its own peak memory)."""
    from mstcli.benchmarks.dense_speed import CHILDREN, DenseSizes, measure, s3_child

    sizes = DenseSizes(frames, height, width, divisor, epochs, batch_size, factor, student, list(overrides or []))
    if child is not None:  # one S3 run, started by this command itself: its figures as the last stdout line
        import json

        from mstcli.errors import UserError

        if child not in CHILDREN or workdir is None:
            raise UserError("--child takes bank or recompute, with --workdir")
        typer.echo(json.dumps(s3_child(child, sizes, workdir, params_file)))  # type: ignore[arg-type]
        return
    figures = measure(sizes, workdir, reuse, params_file)
    if _emit(figures, out, as_json):
        return
    from rich.table import Table

    table = Table(title=f"one S3 epoch, {figures['frame']} frames, {figures['n_train']} train, {figures['device']}")
    for column in ("S3", "s / epoch", "wall s", "peak RSS MB", "peak CUDA MB"):
        table.add_column(column, justify="right")
    for name in CHILDREN:
        cuda = figures[f"s3_{name}_peak_cuda_mb"]
        table.add_row(name, f"{figures[f's3_{name}_epoch_s']:.3f}", f"{figures[f's3_{name}_wall_s']:.1f}",
                      f"{figures[f's3_{name}_peak_rss_mb']:.1f}", "-" if cuda is None else f"{cuda:.1f}")  # fmt: skip
    show(table)
    say(
        f"bank speed-up {figures['bank_speedup']}x; bank {figures['bank_mb_float16']} MiB as float16 "
        f"({figures['bank_mb_float16_per_frame']} per frame); S1 {figures['s1_wall_s']} s, S2 {figures['s2_wall_s']} s"
    )


@bench_app.command("export")
@user_errors
def bench_export(
    runs: Annotated[
        list[str] | None,
        typer.Argument(metavar="RUN", help="runs to measure (models/<run>/student.pt; default common.run)"),
    ] = None,
    repeats: Annotated[int, typer.Option(min=1, help="timed calls per figure (the median is reported)")] = 20,
    out: OutOption = None,
    as_json: JsonOption = False,
    params_file: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """How fast a student predicts, and what exporting it buys: `mst export`'s time and file sizes, `mst predict`
    (stage call and whole command) on real digits, and the exported graph in torch eager, .pt2 and onnxruntime,
    one thread each."""
    params = _load(params_file, overrides)
    from mstcli.benchmarks.export_speed import BATCHES, measure

    settings = (["-p", str(params_file)] if params_file is not None else []) + [
        part for item in overrides or [] for part in ("-S", item)
    ]
    figures = measure(runs or [params.common.run], params, repeats, settings)
    if _emit(figures, out, as_json):
        return
    from rich.table import Table

    names = list(figures["runs"])
    table = Table(title=f"{figures['machine']}; python {figures['python']}, torch {figures['torch']}, 1 thread, "
                        f"median of {figures['repeats']} calls")  # fmt: skip
    table.add_column("")
    for run in names:
        r = figures["runs"][run]
        table.add_column(f"{run}: {r['modality']} student ({r['net']})", justify="right")

    def row(label: str, cell: Callable[[dict], str]) -> None:
        table.add_row(label, *(cell(figures["runs"][run]) for run in names))

    row("graph inputs", lambda r: "; ".join(r["inputs"]))
    row("test accuracy", lambda r: "-" if r["test_accuracy"] is None else f"{r['test_accuracy']:.2%}")
    row("files (bytes)", lambda r: ", ".join(f"{k} {v:,}" for k, v in r["file_bytes"].items()))
    row("mst export (in process)", lambda r: f"{r['export_s']:.1f} s")
    row("onnxruntime within", lambda r: f"{r['max_abs_diff_onnx']:.1e}")
    row("mst predict, 1 file (stage call)", lambda r: f"{r['predict']['one_input_ms']:.1f} ms")
    row("mst predict, 256 files, per file", lambda r: f"{r['predict']['per_input_of_256_ms']:.2f} ms")
    row("mst predict FILE, the whole command", lambda r: f"{r['predict']['command_s']:.2f} s")
    for n in BATCHES:
        per = "" if n == 1 else ", per input"
        row(f"graph, batch {n}{per}: eager / .pt2 / onnxruntime",
            lambda r, n=n: "{eager_ms:.3f} / {pt2_ms:.3f} / {onnxruntime_ms:.3f} ms".format(
                **r["graph"][str(n)]))  # fmt: skip
        row(f"graph, batch {n}: feature step alone (eager)",
            lambda r, n=n: f"{r['graph'][str(n)]['feature_step_ms']:.3f} ms")  # fmt: skip
        row(f"graph, batch {n}: onnxruntime x eager",
            lambda r, n=n: f"{r['graph'][str(n)]['onnxruntime_over_eager']:.1f}")  # fmt: skip
    show(table)


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


@bench_app.command("views")
@user_errors
def bench_views(
    epochs: Annotated[int, typer.Option(min=1, help="epochs of every net (the lowest validation CE is kept)")] = 15,
    out: OutOption = None,
    as_json: JsonOption = False,
    params_file: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Test accuracy of a net trained with CE alone on every modality, every pair and all of them (the run's
    feature file, split group common.seed): how much each view of a data set tells."""
    params = _load(params_file, overrides)
    from mstcli.benchmarks.view_subsets import measure

    figures = measure(params, _features(params), epochs)
    if _emit(figures, out, as_json):
        return
    from rich.table import Table

    table = Table(title=f"{figures['dataset']}: CE alone, {epochs} epochs, split group {figures['split_group']}, "
                        f"{figures['n_train']} train / {figures['n_test']} test rows")  # fmt: skip
    for column in ("modalities", "test accuracy", "best epoch"):
        table.add_column(column, justify="right")
    for name, v in figures["views"].items():
        table.add_row(name, f"{100 * v['test_accuracy']:.2f} %", str(v["best_epoch"] + 1))
    show(table)


def main() -> None:
    _offline_environment()
    app(prog_name="mst")


if __name__ == "__main__":
    sys.exit(main())
