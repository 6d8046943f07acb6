"""Shared helpers of the comparison methods: a frozen teacher's logits, and a trainable copy of a stage-1 net."""

from __future__ import annotations

import copy

import torch

from mstcli.engine.bank import logit_bank, rows_of
from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext
from mstcli.models.trio import ModalNet


class FrozenTeacher:
    """The logits of the frozen stage-1 teacher ``distill.teacher`` for a batch: gathered from a bank computed once
    for the train split (engine/bank.py), or recomputed without a graph when ``distill.bank`` is false."""

    def __init__(self, context: DistillContext) -> None:
        self.net = context.trio.teacher(context.settings.teacher)
        self.bank = logit_bank(self.net, context.splits["train"], 1024) if context.settings.bank else None

    @torch.no_grad()
    def __call__(self, batch: Split) -> torch.Tensor:
        return self.bank[rows_of(batch)] if self.bank is not None else self.net(batch.inputs)


def trainable_copy(net: ModalNet) -> ModalNet:
    """A deep copy of a frozen stage-1 net, unfrozen and in train mode, for methods that train their teacher
    (DML, C2KD, MGDFR). The stage-1 checkpoint itself stays untouched."""
    peer = copy.deepcopy(net)
    peer.requires_grad_(True)
    return peer.train()
