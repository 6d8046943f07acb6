"""Per-pixel evaluation (docs/method.md §3.5-3.6): one confusion matrix over every test pixel, and what it gives.

The confusion matrix is counted with ``torch.bincount`` on the device, batch by batch, so the 290 x 41 x 480 x 640
test logits (15 GB as float32) never exist at once. torchmetrics would do the same count; it is not a dependency
of mst and a bincount plus the few lines below are easy to check by hand (tests/test_nyudepth.py).

Class 0 is void: void pixels are left out of every figure (their row of the matrix stays zero), a prediction of
void on a labelled pixel counts as wrong. The figures are over the other classes:

* ``accuracy``: pixel accuracy (the reference's OA), right pixels / labelled pixels;
* ``mean_class_accuracy``: mean per-class recall over the classes present in the labels (AA);
* ``miou``: mean IoU = TP / (TP + FP + FN) over the classes present in labels or predictions (nan-mean, as the
  reference); ``per_class_iou``, ``per_class_accuracy``: per class, null where undefined;
* ``macro_f1`` over the present classes, so the keys of a classification metrics.json are all there too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mstcli.engine import distributed
from mstcli.engine.splits import Split

VOID = 0


def confusion_counts(predicted: torch.Tensor, actual: torch.Tensor, classes: int) -> torch.Tensor:
    """classes x classes counts (row = actual, column = predicted) of the pixels whose label is not void."""
    valid = actual != VOID
    index = actual[valid].long() * classes + predicted[valid].long()
    return torch.bincount(index, minlength=classes * classes).view(classes, classes)


@torch.no_grad()
def dense_confusion(
    net: Callable[[dict[str, torch.Tensor]], torch.Tensor], split: Split, batch_size: int, classes: int
) -> torch.Tensor:
    """The confusion matrix of ``net``'s per-pixel argmax over ``split`` (int64, on the CPU); under torchrun
    each process counts its share of the frames and the counts are summed."""
    device = split.labels.device
    total = torch.zeros(classes, classes, dtype=torch.int64, device=device)
    for rows in distributed.shard_batches(len(split), batch_size, device):
        batch = split.batch(rows)
        total += confusion_counts(net(batch.inputs).argmax(1), batch.labels, classes)
    return distributed.sum_over_ranks(total).cpu()


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    return np.divide(top, bottom, out=np.full(len(top), np.nan), where=bottom > 0)


def segmentation_metrics(confusion: np.ndarray, class_names: list[str], frames: int) -> dict:
    """The figures of a confusion matrix (see the module docstring); class 0 (void) is left out."""
    confusion = np.asarray(confusion, dtype=np.int64)
    names = class_names[1:]
    true_pos = np.diag(confusion)[1:].astype(float)
    support = confusion[1:].sum(axis=1).astype(float)  # labelled pixels of each class
    called = confusion[1:, 1:].sum(axis=0).astype(float)  # labelled pixels predicted as each class
    recall = _ratio(true_pos, support)
    iou = _ratio(true_pos, support + called - true_pos)
    precision = np.nan_to_num(_ratio(true_pos, called))
    f1 = np.nan_to_num(_ratio(2 * precision * np.nan_to_num(recall), precision + np.nan_to_num(recall)))
    present = support > 0
    labelled = int(support.sum())

    def by_class(values: np.ndarray) -> dict:
        return {name: (None if np.isnan(v) else float(v)) for name, v in zip(names, values, strict=True)}

    return {
        "accuracy": float(true_pos.sum() / labelled) if labelled else 0.0,
        "mean_class_accuracy": float(np.nanmean(recall)) if present.any() else 0.0,
        "miou": float(np.nanmean(iou)) if (~np.isnan(iou)).any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_accuracy": by_class(recall),
        "per_class_iou": by_class(iou),
        "n_test": int(frames),
        "n_pixels": labelled,
        "confusion": confusion,
    }


def confusion_csv(confusion: np.ndarray, class_names: list[str]) -> str:
    """The matrix as CSV: one row per labelled class (void left out), one column per predicted class."""
    lines = ["actual," + ",".join(class_names)]
    for name, row in zip(class_names[1:], np.asarray(confusion)[1:], strict=True):
        lines.append(name + "," + ",".join(str(int(v)) for v in row))
    return "\n".join(lines) + "\n"
