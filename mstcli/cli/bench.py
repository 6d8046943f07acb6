"""``mst bench``: commands that measure and print figures (run them on a quiet machine)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from mstcli.cli.frame import (
    CpusOption,
    ExecutorOption,
    GpusOption,
    JobsOption,
    ParamsOption,
    PartitionOption,
    SetOption,
    SlurmTimeOption,
    app,
    executor_options,
    feature_file,
    load_settings,
    say,
    show,
    user_errors,
)

bench_app = typer.Typer(
    name="bench",
    help="Benchmarks: commands that measure and print figures (run them on a quiet machine).",
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

    settings = load_settings(None, overrides)  # a bad setting stops here, before any folder is written
    chunk_mb = settings.prepare.chunk_mb
    figures = run_bench(pairs or [10000, 50000], workers, workdir, list(overrides or []), chunk_mb)
    if as_json:
        typer.echo(json.dumps([f.to_dict() for f in figures]))
        return
    from rich.table import Table

    table = Table(title=f"mst prepare on a folder of PNG + WAV pairs ({os.cpu_count()} cores)")
    for column in ("pairs", "workers", "prepare s", "pairs/s", "peak PSS of the tree MB", "peak parent RSS MB",
                   "feature file MB", "rows in flight bound MB"):  # fmt: skip
        table.add_column(column, justify="right")
    for f in figures:
        table.add_row(*map(str, (f.pairs, f.workers, f.seconds, f.pairs_per_second, f.peak_tree_pss_mb,
                                 f.peak_parent_rss_mb, f.feature_mb, f.rows_in_flight_bound_mb)))  # fmt: skip
    show(table)
    show(f"decoded rows in flight stay under 2 x workers x prepare.chunk_mb ({chunk_mb:g} MiB); the rest of the "
         "peak is the processes' libraries and the parent's output buffers")  # fmt: skip


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

    options = executor_options(executor, jobs, slurm_partition, slurm_time, cpus_per_task, gpus_per_task)
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

    params = load_settings(params_file, overrides)
    from mstcli.benchmarks.method_speed import measure

    figures = measure(params, feature_file(params), rounds, s1_epochs, s2_epochs, methods)
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
    features: Annotated[Path | None, typer.Option(help="a prepared feature file instead of random features")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="epochs per stage (the first is a warm-up)")] = 3,
    batch_size: Annotated[int, typer.Option(min=1, help="batch size of S1, S2 and S3")] = 512,
    factor: Annotated[int, typer.Option(min=1, help="MaskNet hidden_dim_factor (reference: 2)")] = 2,
    student: Annotated[str, typer.Option(help="the student's modality (common.student)")] = "image",
    s2_recompute: Annotated[bool, typer.Option("--s2-recompute", help="also time S2 without the layer cache")] = False,
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
    load_settings(params_file, overrides)  # a bad setting stops here, not in the first child process
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
    params = load_settings(params_file, overrides)
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
    params = load_settings(params_file, overrides)
    from mstcli.benchmarks.view_subsets import measure

    figures = measure(params, feature_file(params), epochs)
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
