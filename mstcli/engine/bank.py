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
