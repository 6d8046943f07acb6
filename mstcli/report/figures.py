"""The PNG figures of ``mst report`` and ``mst compare``, drawn with matplotlib's Agg backend (no display).

Every figure has a fixed size in pixels (``SIZES``: width, height at ``DPI``), so a page that embeds it lays out
the same way every time, and every function returns what it drew (series labels, cell counts) so that a test can
check the data behind the picture, not only that a file exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mstcli.atomic_write import atomic_path  # noqa: E402

DPI = 100
SIZES = {  # inches at DPI: the PNG's pixel size is 100x these
    "curves": (13.0, 7.0),
    "routing": (8.0, 4.5),
    "confusion": (6.5, 5.5),
    "masks": (9.0, 5.0),
    "compare": (10.0, 5.5),
}

Rows = list[dict[str, Any]]


def pixel_size(kind: str) -> tuple[int, int]:
    """(width, height) in pixels of a figure of ``kind``."""
    width, height = SIZES[kind]
    return round(width * DPI), round(height * DPI)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)


def _mean_of(prefix: str) -> Callable[[dict[str, Any]], float | None]:
    """A derived series: the mean of every key starting with ``prefix`` (per-teacher terms of S2)."""

    def value(row: dict[str, Any]) -> float | None:
        values = [v for k, v in row.items() if k.startswith(prefix)]
        return sum(values) / len(values) if values else None

    return value


@dataclass(frozen=True)
class Series:
    label: str
    value: str | Callable[[dict[str, Any]], float | None]  # a row key, or a function of the row
    split: str  # "train" (solid) or "val" (dashed)

    def points(self, rows: Rows) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for row in rows:
            y = self.value(row) if callable(self.value) else row.get(self.value)
            if y is not None:
                xs.append(int(row["epoch"]) + 1)
                ys.append(float(y))
        return xs, ys


@dataclass(frozen=True)
class StagePanels:
    """What the curves figure draws for one stage: a loss panel and an accuracy panel."""

    title: str
    loss: tuple[Series, ...]
    accuracy: tuple[Series, ...]


#: the stages of a run, by the name of their log folder (results/<run>/<folder>)
STAGE_PANELS = {
    "train": StagePanels(
        "S1 collaborative training",
        (Series("train loss (CE + mutual KL)", "loss", "train"), Series("train CE", "ce", "train")),
        tuple(
            s
            for key, name in (("mm", "MM teacher"), ("student", "student"), ("cm", "CM teacher"))
            for s in (Series(f"{name} train", f"{key}_acc", "train"), Series(f"{name} val", f"val_{key}_acc", "val"))
        ),
    ),
    "fit_masks": StagePanels(
        "S2 MaskNets (specialized teachers)",
        (
            Series("train KL to student (mean)", _mean_of("train_kl_"), "train"),
            Series("val KL to student (mean)", _mean_of("val_kl_"), "val"),
        ),
        (
            Series("masked teachers train", "masked_acc", "train"),
            Series("masked teachers val", "val_masked_acc", "val"),
        ),
    ),
    "distill": StagePanels(
        "S3 routed distillation",
        (Series("train loss", "loss", "train"), Series("val CE", "val_ce", "val")),
        (Series("student train", "acc", "train"), Series("student val", "val_acc", "val")),
    ),
}


def _more_cm_teachers(rows: Rows) -> tuple[Series, ...]:
    """S1's accuracy series of the CM teachers of a run with three or more modalities (curves ``cm_<modality>_acc``)."""
    modalities = dict.fromkeys(k[3:-4] for row in rows for k in row if k.startswith("cm_") and k.endswith("_acc"))
    return tuple(
        s
        for m in modalities
        for s in (
            Series(f"CM teacher ({m}) train", f"cm_{m}_acc", "train"),
            Series(f"CM teacher ({m}) val", f"val_cm_{m}_acc", "val"),
        )
    )


def curves_figure(stages: dict[str, Rows], path: Path) -> dict[str, list[str]]:
    """Loss (top) and accuracy (bottom) per epoch for each stage with rows; returns the labels drawn per panel."""
    present = [name for name in STAGE_PANELS if stages.get(name)]
    fig, axes = plt.subplots(2, max(len(present), 1), figsize=SIZES["curves"], squeeze=False, layout="constrained")
    drawn: dict[str, list[str]] = {}
    for column, name in enumerate(present):
        panels, rows = STAGE_PANELS[name], stages[name]
        accuracy = panels.accuracy + (_more_cm_teachers(rows) if name == "train" else ())
        for row_index, (series, ylabel) in enumerate(((panels.loss, "loss"), (accuracy, "accuracy"))):
            ax = axes[row_index][column]
            labels = []
            for i, s in enumerate(series):
                xs, ys = s.points(rows)
                if not xs:
                    continue
                if ylabel == "accuracy":
                    ys = [100 * y for y in ys]
                color = f"C{i // 2}" if ylabel == "accuracy" else f"C{i}"  # accuracy: train and val pairs
                ax.plot(
                    xs,
                    ys,
                    marker="o",
                    markersize=3,
                    linestyle="-" if s.split == "train" else "--",
                    color=color,
                    label=s.label,
                )
                labels.append(s.label)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel + (" (%)" if ylabel == "accuracy" else ""))
            ax.grid(alpha=0.3)
            if labels:
                ax.legend(fontsize=8)
            if row_index == 0:
                ax.set_title(panels.title)
            drawn[f"{name}/{ylabel}"] = labels
    fig.suptitle("training curves: solid = train, dashed = validation")
    _save(fig, path)
    return drawn


def routing_figure(rows: Rows, teachers: Sequence[str], path: Path) -> list[str]:
    """The share of samples routed to each specialized teacher per epoch of S3 (one line per teacher); returns
    the labels of the lines drawn."""
    fig, ax = plt.subplots(figsize=SIZES["routing"], layout="constrained")
    for i, teacher in enumerate(teachers):
        xs = [int(r["epoch"]) + 1 for r in rows if teacher in r]
        ys = [100 * float(r[teacher]) for r in rows if teacher in r]
        ax.plot(xs, ys, marker="o", markersize=3, color=f"C{i}", label=teacher)
    ax.set_xlabel("S3 epoch")
    ax.set_ylabel("share of routing choices (%)")
    ax.set_title("routing dynamics: how often GateNet picks each specialized teacher")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if teachers:
        ax.legend(title="teacher@masked layer", fontsize=8)
    labels = [line.get_label() for line in ax.get_lines()]
    _save(fig, path)
    return labels


def confusion_figure(counts: np.ndarray, class_names: Sequence[str], path: Path) -> np.ndarray:
    """The row-normalised confusion matrix (each row: where the test samples of one class went); returns it."""
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    fig, ax = plt.subplots(figsize=SIZES["confusion"], layout="constrained")
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45 if max(map(len, class_names)) > 3 else 0, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("actual class")
    ax.set_title("test confusion (row-normalised)")
    if len(class_names) <= 12:
        for (a, p), value in np.ndenumerate(normalised):
            ax.text(
                p, a, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value > 0.5 else "black"
            )
    fig.colorbar(image, ax=ax, fraction=0.046)
    _save(fig, path)
    return normalised


def masks_figure(means: Sequence[tuple[str, np.ndarray]], path: Path) -> list[str]:
    """Each MaskNet's mean mask value per channel on the validation split (one panel per MaskNet, channels
    sorted by value so the suppressed ones stand at the left); returns the panel titles."""
    n = max(len(means), 1)
    columns = min(n, 2)
    fig, axes = plt.subplots(-(-n // columns), columns, figsize=SIZES["masks"], squeeze=False, layout="constrained")
    titles = []
    for i, (label, values) in enumerate(means):
        ax = axes[i // columns][i % columns]
        ordered = np.sort(np.asarray(values, dtype=float))
        # one filled step line, not one bar per channel: the same picture, 3x faster to draw for 596 channels
        ax.stairs(ordered, np.arange(len(ordered) + 1) - 0.5, fill=True, color=f"C{i}")
        ax.axhline(float(ordered.mean()), color="black", linewidth=0.8, linestyle=":")
        spread = f"range {ordered[0]:.2f}-{ordered[-1]:.2f}"
        title = f"{label}: {len(ordered)} channels, mean {ordered.mean():.2f} ({spread})"
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_xlabel("channel (sorted by mean mask)")
        ax.set_ylabel("mean mask")
        titles.append(title)
    for j in range(len(means), axes.size):
        axes[j // columns][j % columns].axis("off")
    fig.suptitle("S2: mean mask per channel on the validation split (0 = suppressed, 1 = kept)")
    _save(fig, path)
    return titles


def compare_figure(
    columns: Sequence[str], rows: Sequence[tuple[str, list[tuple[float, float, int] | None]]], path: Path
) -> int:
    """The benchmark table as grouped bars: one group per method, one bar per (teacher, direction) column, the
    seed spread (std) as error bars; returns the number of bars drawn."""
    fig, ax = plt.subplots(figsize=SIZES["compare"], layout="constrained")
    width = 0.8 / max(len(columns), 1)
    bars = 0
    for c, column in enumerate(columns):
        xs, means, stds = [], [], []
        for r, (_, cells) in enumerate(rows):
            if cells[c] is not None:
                xs.append(r + (c - (len(columns) - 1) / 2) * width)
                means.append(cells[c][0])
                stds.append(cells[c][1])
        ax.bar(xs, means, width=width, yerr=stds, capsize=2, label=column, color=f"C{c}")
        bars += len(xs)
    ax.set_xticks(np.arange(len(rows)), [name for name, _ in rows], rotation=30, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("benchmark: mean over seeds, error bar = std over seeds")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return bars
