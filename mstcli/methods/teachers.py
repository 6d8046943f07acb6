"""Shared helpers of the comparison methods: a frozen teacher's logits, and a trainable copy of a stage-1 net."""

from __future__ import annotations

import copy

import torch

from mstcli.engine.data import Split
from mstcli.models.trio import ModalNet


@torch.no_grad()
def frozen_logits(teacher: ModalNet, batch: Split) -> torch.Tensor:
    """Logits of a frozen stage-1 teacher for one batch (no graph is kept: it does not learn)."""
    return teacher(batch.inputs)


def trainable_copy(net: ModalNet) -> ModalNet:
    """A deep copy of a frozen stage-1 net, unfrozen and in train mode, for methods that train their teacher
    (DML, C2KD, MGDFR). The stage-1 checkpoint itself stays untouched."""
    peer = copy.deepcopy(net)
    peer.requires_grad_(True)
    return peer.train()
