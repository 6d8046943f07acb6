"""``mst report [RUN]``: the figures of a run and ``results/<run>/report.md`` embedding them.

It reads only what the pipeline left: the stages' dvclive logs (``results/<run>/{train,fit_masks,distill}``), the
test metrics and predictions of ``mst eval`` (``metrics.json``, ``confusion.csv``), and, for the mask figure, the
stage-1 nets, the MaskNets and the validation split of the feature file. Figures go to ``results/<run>/figures/``:

- ``curves.png``: loss and accuracy per epoch of S1, S2 and S3, train and validation;
- ``routing.png``: the share of each specialized teacher among GateNet's choices per S3 epoch (the paper's figure);
- ``confusion.png``: the test confusion matrix, row-normalised, with the class names;
- ``masks.png``: each MaskNet's mean mask value per channel on the validation split.

A figure whose inputs are missing (a run distilled with a comparison method has no routing) is left out of the
page with a line saying why; a run with no metrics at all is a user error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mstcli.atomic_write import write_text
from mstcli.engine.logbook import read_curves, routing_teachers
from mstcli.engine.run_lock import run_lock
from mstcli.errors import UserError
from mstcli.stages.paths import RunPaths

LOG_FOLDERS = ("train", "fit_masks", "distill")
#: the settings shown on the page (section, key); all of them are in metrics.json's provenance
KEY_SETTINGS = (
    ("common", "dataset"),
    ("common", "student"),
    ("common", "seed"),
    ("train", "epochs"),
    ("fit_masks", "epochs"),
    ("fit_masks", "layers"),
    ("distill", "method"),
    ("distill", "teacher"),
    ("distill", "epochs"),
    ("distill", "k"),
    ("distill", "lr"),
    ("distill", "batch_size"),
    ("prepare", "num_samples"),
    ("prepare", "image_energy"),
)


@dataclass
class Report:
    page: Path
    figures: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # figure -> why it is not there
    drawn: dict[str, Any] = field(default_factory=dict)  # what each figure function returned


def read_confusion(path: Path, class_names: list[str]) -> np.ndarray:
    """Counts (actual x predicted) from eval's ``confusion.csv``."""
    index = {name: i for i, name in enumerate(class_names)}
    counts = np.zeros((len(class_names), len(class_names)), dtype=np.int64)
    lines = path.read_text().splitlines()
    header = lines[0].split(",") if lines else []
    if len(header) > 2:  # a dense run's class x class matrix (engine/segmentation.py); void is not a class here
        for line in lines[1:]:
            actual, *values = line.split(",")
            for predicted, value in zip(header[1:], values, strict=True):
                if actual in index and predicted in index:
                    counts[index[actual], index[predicted]] += int(value)
        return counts
    for line in lines[1:]:
        actual, predicted = line.rsplit(",", 1) if line.count(",") > 1 else line.split(",")
        counts[index[actual], index[predicted]] += 1
    return counts


def report(run: RunPaths, features_path: Path, batch_size: int = 1024) -> Report:
    """The figures and the page of ``run``, holding the run's lock while writing them (engine/run_lock.py)."""
    with run_lock(run.models, run.run, "mst report"):
        from mstcli.report import figures

        metrics_path = run.results / "metrics.json"
        if not metrics_path.exists():
            raise UserError(f"no {metrics_path}: run the pipeline (or `mst eval`) for run '{run.run}' first")
        metrics = json.loads(metrics_path.read_text())
        out = Report(run.results / "report.md")
        folder = run.results / "figures"

        stages = {name: read_curves(run.results / name) for name in LOG_FOLDERS if (run.results / name).is_dir()}
        if any(stages.values()):
            out.figures["curves"] = folder / "curves.png"
            out.drawn["curves"] = figures.curves_figure(stages, out.figures["curves"])
        else:
            out.skipped["curves"] = f"no stage logs under {run.results}"

        teachers = routing_teachers(run.results / "distill")
        if teachers:
            out.figures["routing"] = folder / "routing.png"
            out.drawn["routing"] = figures.routing_figure(stages.get("distill", []), teachers, out.figures["routing"])
        else:
            out.skipped["routing"] = f"S3 of method '{metrics.get('method')}' routes to no specialized teachers"

        confusion = run.results / "confusion.csv"
        class_names = list(metrics.get("per_class_accuracy", {}))
        if confusion.exists() and class_names:
            out.figures["confusion"] = folder / "confusion.png"
            out.drawn["confusion"] = figures.confusion_figure(
                read_confusion(confusion, class_names), class_names, out.figures["confusion"]
            )
        else:
            out.skipped["confusion"] = f"no {confusion}"

        if run.stage1.exists() and run.masks.exists():
            means = _mask_means(run, features_path, metrics["split_group"], batch_size)
            out.figures["masks"] = folder / "masks.png"
            out.drawn["masks"] = figures.masks_figure(means, out.figures["masks"])
        else:
            out.skipped["masks"] = f"no {run.stage1} or {run.masks}"

        write_text(out.page, render_page(run, metrics, out))
        return out


def _mask_means(run: RunPaths, features_path: Path, group: int, batch_size: int) -> list[tuple[str, np.ndarray]]:
    import torch

    from mstcli.data.store import FeatureFile
    from mstcli.engine.checkpoints import MasksCheckpoint
    from mstcli.engine.splits import load_splits
    from mstcli.methods.mst.experts import masks_from_records
    from mstcli.methods.mst.mask_stats import mean_masks
    from mstcli.methods.tasks import task_kind
    from mstcli.models.trio import load_frozen_trio

    device = torch.device("cpu")
    features = FeatureFile.open(features_path)
    trio = load_frozen_trio(run.stage1, features, group, device)
    batch_size = task_kind(trio.spec.task).forward_batch(batch_size)  # a dense batch is B x C x H x W per layer
    checkpoint = MasksCheckpoint.load(run.masks)
    checkpoint.check_stage1(run.masks, trio.fingerprint)
    masks = masks_from_records(checkpoint.masks)
    val = load_splits(features, group, list(trio.spec.modalities), device, names=("val",))["val"]
    return [
        (f"{slot.teacher}@{slot.layer}", values.numpy()) for slot, values in mean_masks(trio, masks, val, batch_size)
    ]


def render_page(run: RunPaths, metrics: dict[str, Any], out: Report) -> str:
    origin = metrics.get("provenance", {})
    settings = origin.get("settings", {})
    code = origin.get("code", {})
    versions = origin.get("versions", {})
    method = metrics["method"] + (f" ({metrics['teacher']} teacher)" if metrics.get("teacher") else "")
    lines = [
        f"# Run `{run.run}`: {metrics['student']} student, {method}",
        "",
        f"Test accuracy **{metrics['accuracy']:.2%}**, macro-F1 {metrics['macro_f1']:.4f} on {metrics['n_test']} test "
        f"samples of split group {metrics['split_group']} (the student alone, on its own modality; best S3 epoch "
        f"{metrics.get('best_epoch', 0) + 1}).",
        "",
        "| class | test accuracy |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {'–' if v is None else f'{v:.1%}'} |" for name, v in metrics["per_class_accuracy"].items()]
    if "miou" in metrics:  # a dense run: accuracy is per labelled pixel, samples are frames
        lines[2] += (
            f" Per pixel: mIoU **{metrics['miou']:.2%}**, mean class accuracy {metrics['mean_class_accuracy']:.2%}"
            f" over {metrics['n_pixels']} labelled pixels."
        )
    lines += ["", "## Key settings", "", "| setting | value |", "|---|---|"]
    for section, key in KEY_SETTINGS:
        if key in settings.get(section, {}):
            lines.append(f"| `{section}.{key}` | {settings[section][key]} |")
    data = origin.get("data") or {}
    lines += [
        f"| data | {data.get('dataset')} `{data.get('feature_file')}` (fingerprint {data.get('features')}) |",
        f"| code | commit {code.get('commit')}, uncommitted changes: {code.get('dirty')} |",
        f"| software | mstcli {versions.get('mstcli')}, torch {versions.get('torch')}, "
        f"Python {versions.get('python')} |",
        f"| device | {origin.get('device')} (trained on {(origin.get('student') or {}).get('device')}) |",
        "",
        "All settings, the method's constants and the versions are in `metrics.json` under `provenance`.",
        "",
    ]
    captions = {
        "curves": "Loss and accuracy per epoch of S1, S2 and S3 (solid: train, dashed: validation).",
        "routing": "Routing dynamics: the share of GateNet's top-k choices that went to each specialized teacher, "
        "per S3 epoch.",
        "confusion": "Test confusion matrix, row-normalised (each row sums to 1).",
        "masks": "What S2 learned to suppress: each MaskNet's mean mask value per channel on the validation "
        "split, channels sorted.",
    }
    for name, caption in captions.items():
        lines += [f"## {name.capitalize()}", ""]
        if name in out.figures:
            lines += [f"![{name}]({out.figures[name].relative_to(run.results).as_posix()})", "", caption, ""]
        else:
            lines += [f"Not drawn: {out.skipped[name]}.", ""]
    return "\n".join(lines)
