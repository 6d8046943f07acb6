"""The pipeline's commands: prepare, S1 (train), S2 (fit-masks), S3 (distill), eval, compare, report,
and sweep (a grid of pipeline runs)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from mstcli.cli.frame import (
    CpusOption,
    ExecutorOption,
    GpusOption,
    JobsOption,
    ParamsOption,
    PartitionOption,
    RestartOption,
    SetOption,
    SlurmTimeOption,
    app,
    executor_options,
    feature_file,
    load_settings,
    run_paths,
    say,
    show,
    user_errors,
)


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
    params = load_settings(params_file, overrides, {"common.dataset": dataset, "prepare.source": source})
    from mstcli.stages.prepare import prepare as run_prepare

    started = time.perf_counter()
    path = run_prepare(params, out)
    say(f"wrote {path} in {time.perf_counter() - started:.1f} s")


@app.command()
@user_errors
def train(params_file: ParamsOption = None, overrides: SetOption = None, restart: RestartOption = False) -> None:
    """S1: train the MM teacher, the CM teacher and the student together (collaborative initialization).

    A killed run resumes after its last finished epoch when rerun with the same settings (see --restart)."""
    params = load_settings(params_file, overrides)
    from mstcli.stages.train import train as run_train

    paths = run_paths(params)
    last = run_train(params, feature_file(params), paths.stage1, paths.results / "train", restart)
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
    params = load_settings(params_file, overrides)
    from mstcli.stages.fit_masks import fit_masks as run_fit_masks

    paths = run_paths(params)
    results = paths.results / "fit_masks"
    summary = run_fit_masks(params, feature_file(params), paths.stage1, paths.masks, results, restart)
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
    params = load_settings(params_file, overrides, {"distill.method": method, "distill.teacher": teacher})
    from mstcli.stages.distill import distill as run_distill
    from mstcli.stages.distill import with_baseline_budget

    if same_passes:
        params = with_baseline_budget(params)
    paths = run_paths(params)
    out = out or paths.student
    results = results or paths.results
    summary = run_distill(
        params,
        feature_file(params),
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

    params = load_settings(params_file, overrides)
    from mstcli.report.tables import metrics_table
    from mstcli.stages.evaluate import evaluate as run_evaluate

    paths = run_paths(params)
    results = results or paths.results
    report = run_evaluate(
        params, feature_file(params), student or paths.student, results / "metrics.json", results / "confusion.csv"
    )
    if as_json:
        typer.echo(json.dumps({k: v for k, v in report.items() if k != "confusion"}))
        return
    show(metrics_table(report))
    figure = f"mIoU {report['miou']:.2%}, pixel accuracy" if "miou" in report else "test accuracy"
    say(f"{figure} of the {report['student']} student: {report['accuracy']:.2%} (wrote {results / 'metrics.json'})")


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
    params = load_settings(params_file, overrides, {"common.run": run})
    from mstcli.stages.report import report as run_report

    started = time.perf_counter()
    done = run_report(run_paths(params), feature_file(params), params.eval.batch_size)
    for name, why in done.skipped.items():
        from mstcli.ui import logger

        logger().warning(f"{name} figure not drawn: {why}")
    say(f"wrote {done.page} with {len(done.figures)} figures in {time.perf_counter() - started:.1f} s")


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

    options = executor_options(executor, jobs, slurm_partition, slurm_time, cpus_per_task, gpus_per_task)
    if options.kind == "dvc":
        raise UserError("--executor dvc: sweeps are not DVC stages; use local, slurm or debug")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {seeds}: expected integers separated by commas, e.g. 0,1,2") from None
    if not seed_list:
        raise UserError("--seeds: no seed given")
    axes = parse_axes(list(grid or []), params_file)
    params = load_settings(params_file, None)
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
