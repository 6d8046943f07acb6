"""Logit banks: the outputs of frozen nets, computed once per split instead of once per batch and epoch.

In S3 the specialized teachers (frozen teachers with frozen MaskNets, eval mode) and in KD the frozen teacher
give the same logits for a sample in every epoch, since the features carry no on-the-fly augmentation. The
reference code recomputes them for every batch; a bank computes them once (no grad, large batches) and a batch
reads its rows by one index gather.
"""

from __future__ import annotations

from typing import Callable

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
