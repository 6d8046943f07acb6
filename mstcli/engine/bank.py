"""Logit banks: the outputs of frozen nets, computed once per split instead of once per batch and epoch.

In S3 the specialized teachers (frozen teachers with frozen MaskNets, eval mode) and in KD the frozen teacher
give the same logits for a sample in every epoch, since the features carry no on-the-fly augmentation. The
reference code recomputes them for every batch; a bank computes them once (no grad, large batches) and a batch
reads its rows by one index gather.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mstcli.engine import distributed
from mstcli.engine.splits import Split


@torch.no_grad()
def logit_bank(
    net: Callable[[dict[str, torch.Tensor]], torch.Tensor], split: Split, batch_size: int, row_dim: int = 0
) -> torch.Tensor:
    """``net``'s outputs for every row of ``split``, in order, concatenated along ``row_dim`` (1 for E x B x C).
    Under torchrun each process computes its share of the rows and gets the whole bank."""
    device, n = split.labels.device, len(split)
    parts = [net(split.batch(rows).inputs) for rows in distributed.shard_batches(n, batch_size, device)]
    return distributed.gather_rows(torch.cat(parts, row_dim), n, row_dim)


def rows_of(batch: Split) -> torch.Tensor:
    if batch.rows is None:
        raise ValueError("a bank lookup needs a batch made by Split.batch (it carries its rows)")
    return batch.rows


@torch.no_grad()
def output_bank(
    net: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]], split: Split, batch_size: int
) -> dict[str, torch.Tensor]:
    """``logit_bank`` for a net whose call returns several named outputs (a teacher's logits and the features its
    hooks caught): one forward per batch, every output banked in row order."""
    n = len(split.labels)
    parts: dict[str, list[torch.Tensor]] = {}
    for rows in distributed.shard_batches(n, batch_size, split.labels.device):
        for name, value in net(split.batch(rows).inputs).items():
            parts.setdefault(name, []).append(value)
    return {name: distributed.gather_rows(torch.cat(values), n, 0) for name, values in parts.items()}


class SpilledBank:
    """``output_bank``'s outputs kept in a temporary HDF5 file instead of memory: for a bank larger than its
    memory budget, reading a batch's rows from disk is cheaper than running the teacher on the batch again.

    The file is written once (batch by batch, so memory stays at one batch of outputs), lives in ``folder`` (the
    system's temporary folder by default) and is removed when the bank is closed or garbage-collected. A batch's
    rows are read in ascending order (what HDF5 selections need) and put back in the batch's order."""

    def __init__(
        self,
        net: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
        split: Split,
        batch_size: int,
        folder: str | None = None,
    ) -> None:
        import tempfile
        import weakref

        import h5py

        handle, path = tempfile.mkstemp(prefix="mst-teacher-cache-", suffix=".h5", dir=folder)
        os.close(handle)
        self.path = path
        self._finalizer = weakref.finalize(self, _remove_file, path)
        n = len(split.labels)
        self.device = split.labels.device
        self.file = h5py.File(path, "w")
        self.datasets: dict[str, Any] = {}
        with torch.no_grad():
            for start in range(0, n, batch_size):
                rows = torch.arange(start, min(start + batch_size, n), device=self.device)
                for name, value in net(split.batch(rows).inputs).items():
                    array = value.detach().float().cpu().numpy()
                    if name not in self.datasets:
                        self.datasets[name] = self.file.create_dataset(
                            name, shape=(n, *array.shape[1:]), dtype="float32", chunks=(1, *array.shape[1:])
                        )
                    self.datasets[name][start : start + len(array)] = array
        self.file.flush()

    def rows(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every output at ``rows`` (in the order given), on the split's device."""
        order = rows.detach().cpu().numpy()
        unique, inverse = np.unique(order, return_inverse=True)
        return {
            name: torch.from_numpy(dataset[unique][inverse]).to(self.device) for name, dataset in self.datasets.items()
        }

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()
        self._finalizer()


def _remove_file(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
