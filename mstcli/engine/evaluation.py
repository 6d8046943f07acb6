"""Predictions and metrics over whole splits."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mstcli.engine import distributed
from mstcli.engine.splits import Split


@torch.no_grad()
def predict(net: Callable[[dict[str, torch.Tensor]], torch.Tensor], split: Split, batch_size: int) -> torch.Tensor:
    """Logits of ``net`` (in eval mode) for every row of ``split``, in order; under torchrun each process computes
    its share of the rows and every process gets all of them (each sample counted once)."""
    n = len(split)
    outs = [net(split.batch(rows).inputs) for rows in distributed.shard_batches(n, batch_size, split.labels.device)]
    return distributed.gather_rows(torch.cat(outs), n)


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    return float(F.cross_entropy(logits, labels)), float((logits.argmax(1) == labels).float().mean())


def classification_metrics(predicted: np.ndarray, actual: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, macro-F1 and per-class accuracy (recall) from one confusion matrix."""
    classes = len(class_names)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (actual, predicted), 1)
    true_pos = np.diag(confusion).astype(float)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    recall = np.divide(true_pos, support, out=np.full(classes, np.nan), where=support > 0)
    precision = np.divide(true_pos, predicted_count, out=np.zeros(classes), where=predicted_count > 0)
    denom = precision + np.nan_to_num(recall)
    f1 = np.divide(2 * precision * np.nan_to_num(recall), denom, out=np.zeros(classes), where=denom > 0)
    present = support > 0
    return {
        "accuracy": float(true_pos.sum() / max(len(actual), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_accuracy": {
            name: (None if np.isnan(r) else float(r)) for name, r in zip(class_names, recall, strict=True)
        },
        "n_test": int(len(actual)),
        "confusion": confusion,
    }
