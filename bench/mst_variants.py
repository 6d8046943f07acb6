"""What moves MST-Distill against KD and the student alone (issue 11, item 4), measured on the same S1 per seed.

For each student direction and seed it runs, with the settings of ``--params`` (the quick preset by default) and
any ``-S`` overrides, in one process:

- S1 (``mst train``) and S2 (``mst fit-masks``), and two more S2 runs on the same S1: ``s2_label``
  (``fit_masks.label_weight=1``: the masked teachers also keep their CE on the labels) and ``s2_long``
  (twice the S2 epochs);
- the comparison students on that S1: the student alone and KD from the MM and from the CM net, from scratch for
  train.epochs + distill.epochs epochs (the baselines' budget);
- S3 (MST-Distill, continuing the S1 student) in each variant of VARIANTS: the reference's defaults, each of its
  four quirks switched off, k = 2, routing on the student's features, the two S2 variants, and combinations.

Every student is kept at its lowest validation CE and tested on its test split. It prints, per direction, each
variant's test accuracy (mean ± std over the seeds) and its paired difference (over seeds) against KD with the
MM teacher, KD with the CM teacher and the student alone; the last stdout line is one JSON object
``{direction: {variant: {"acc": [mean, std], "vs_kd_mm": [mean, std], "vs_kd_cm": ..., "vs_none": ...}}}``.
Files: ``--models``/<direction>-s<seed>/ and ``--results``/<direction>-s<seed>/<variant>/metrics.json (rerun with
``--skip-done`` to continue).

    python bench/mst_variants.py [--seeds 0 1 2] [--directions image audio] [--variants ...] [-S key=value]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from mstcli.config import load_params
from mstcli.stages.distill import distill, with_baseline_budget
from mstcli.stages.evaluate import evaluate
from mstcli.stages.fit_masks import fit_masks
from mstcli.stages.prepare import feature_path, prepare
from mstcli.stages.train import train

#: S2 runs on the same S1: name -> overrides (``masks`` is the plain one)
MASKS = {"masks": [], "s2_label": ["fit_masks.label_weight=1.0"], "s2_long": ["fit_masks.epochs={double}"]}
#: S3 variants: name -> (masks to use, overrides)
VARIANTS = {
    "reference": ("masks", []),
    "single": ("masks", ["distill.compose=single"]),
    "weighted_gate": ("masks", ["distill.gate_signal=weighted"]),
    "plain_lb": ("masks", ["distill.lb_scale=plain"]),
    "shifted_decay": ("masks", ["distill.decay=shifted"]),
    "no_decay": ("masks", ["distill.decay=off"]),
    "k2": ("masks", ["distill.k=2"]),
    "feature_gate": ("masks", ["distill.gate_input=features"]),
    "s2_label": ("s2_label", []),
    "s2_long": ("s2_long", []),
    "label+weighted+no_decay": ("s2_label", ["distill.gate_signal=weighted", "distill.decay=off"]),
    "label+feature_gate+weighted": ("s2_label", ["distill.gate_input=features", "distill.gate_signal=weighted"]),
}
BASELINES = {"none": ["distill.method=none"], "kd_mm": ["distill.method=kd", "distill.teacher=mm"],
             "kd_cm": ["distill.method=kd", "distill.teacher=cm"]}  # fmt: skip
#: the same students in bench/baseline_table.py's layout (--reuse): label -> its folder name there
TABLE_NAMES = {"none": "none", "kd_mm": "kd-mm", "kd_cm": "kd-cm", "reference": "mst-mm+cm"}


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_cell(args, features: Path, direction: str, seed: int) -> dict[str, float]:
    """Test accuracy (%) of every baseline and variant for one direction and seed."""
    name = f"{direction}-s{seed}"
    models, results = args.models / name, args.results / name
    base = [*args.overrides, f"common.student={direction}", f"common.seed={seed}", f"common.run=variants/{name}"]
    params = load_params(args.params, base)
    stage1 = models / "stage1.pt"
    started = time.perf_counter()
    if not (args.skip_done and stage1.exists()):
        train(params, features, stage1, results / "train")
    fitted: dict[str, Path] = {}

    def masks_file(masks_name: str) -> Path:
        """The S2 run ``masks_name`` on this S1, fitted the first time a variant needs it."""
        if masks_name not in fitted:
            path = models / ("masks.pt" if masks_name == "masks" else f"masks_{masks_name}.pt")
            extra = [o.replace("{double}", str(2 * params.fit_masks.epochs)) for o in MASKS[masks_name]]
            if not (args.skip_done and path.exists()):
                fit_masks(load_params(args.params, base + extra), features, stage1, path, results / masks_name)
            fitted[masks_name] = path
        return fitted[masks_name]

    log(f"{name}: S1 in {time.perf_counter() - started:.0f} s")
    accuracy = {}

    def student(label: str, p, masks: str | None) -> None:
        out, folder = models / f"student_{label}.pt", results / label
        if args.reuse is not None and label in TABLE_NAMES:  # the same run, made by bench/baseline_table.py
            reused = args.reuse / name / TABLE_NAMES[label]
            if (reused / "metrics.json").exists():
                folder = reused
        if not (args.skip_done and (folder / "metrics.json").exists()):
            t0 = time.perf_counter()
            distill(p, features, stage1, None if masks is None else masks_file(masks), out, folder / "distill")
            evaluate(p, features, out, folder / "metrics.json", folder / "confusion.csv")
            log(f"  {name} {label:<28} ({time.perf_counter() - t0:.0f} s)")
        accuracy[label] = 100 * json.loads((folder / "metrics.json").read_text())["accuracy"]

    for label, extra in BASELINES.items():
        student(label, with_baseline_budget(load_params(args.params, base + extra)), None)
    for variant in args.variants:
        masks_name, extra = VARIANTS[variant]
        student(variant, load_params(args.params, base + extra), masks_name)
    log(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in accuracy.items()))
    return accuracy


def mean_std(values: list[float]) -> list[float]:
    return [round(statistics.mean(values), 2), round(statistics.stdev(values), 2) if len(values) > 1 else 0.0]


def summarize(cells: list[dict[str, float]], variants: list[str]) -> dict[str, dict[str, list[float]]]:
    table = {}
    for name in [*BASELINES, *variants]:
        row = {"acc": mean_std([c[name] for c in cells])}
        if name in variants:
            for baseline in BASELINES:
                row[f"vs_{baseline}"] = mean_std([c[name] - c[baseline] for c in cells])
        table[name] = row
    return table


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=None, help="settings file (default ./params.yaml)")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--directions", nargs="+", default=["image", "audio"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--models", type=Path, default=Path("models/variants"))
    parser.add_argument("--results", type=Path, default=Path("results/variants"))
    parser.add_argument("--skip-done", action="store_true", help="keep S1/S2 files and students already evaluated")
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="results folder of bench/baseline_table.py on the same --models: its none, kd and mst students are read"
        " from there instead of trained again",
    )
    args = parser.parse_args(argv)
    params = load_params(args.params, args.overrides)
    features = feature_path(params.common.dataset)
    if not features.exists():
        prepare(params, features)
    table = {}
    for direction in args.directions:
        cells = [run_cell(args, features, direction, seed) for seed in args.seeds]
        table[direction] = summarize(cells, args.variants)
        print(f"\n{direction} student, seeds {' '.join(map(str, args.seeds))}: test accuracy (%) and paired differences")
        print("| variant | accuracy | − KD (MM) | − KD (CM) | − alone |")
        print("|---|---:|---:|---:|---:|")
        for name, row in table[direction].items():
            diffs = [f"{row[k][0]:+.2f} ± {row[k][1]:.2f}" if k in row else "" for k in ("vs_kd_mm", "vs_kd_cm", "vs_none")]
            print(f"| {name} | {row['acc'][0]:.2f} ± {row['acc'][1]:.2f} | " + " | ".join(diffs) + " |")
    print(json.dumps(table), flush=True)
    return table


if __name__ == "__main__":
    main()
