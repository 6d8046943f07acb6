"""Shared helpers of the comparison methods: a frozen teacher's logits, and a trainable copy of a stage-1 net."""

from __future__ import annotations

import copy
import math

import torch

from mstcli.engine.bank import logit_bank, rows_of
from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext
from mstcli.models.trio import ALL_TEACHERS, ModalNet, Trio


class AveragedTeachers:
    """Every stage-1 teacher as one: logits whose softmax at temperature tau is the mean of the teachers' softmaxes
    at tau, i.e. tau log(mean_i softmax(z_i / tau)). KD from them is KD towards the average of all teachers' soft
    labels, the plain multi-teacher baseline (``distill.teacher=all``)."""

    def __init__(self, teachers: list[ModalNet], temperature: float) -> None:
        self.teachers, self.temperature = teachers, temperature

    @torch.no_grad()
    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        tau = self.temperature
        log_probs = torch.stack([torch.log_softmax(net(inputs).float() / tau, dim=1) for net in self.teachers])
        return tau * (torch.logsumexp(log_probs, dim=0) - math.log(len(self.teachers)))


def teacher_net(trio: Trio, key: str, temperature: float) -> ModalNet | AveragedTeachers:
    """The frozen teacher under ``key`` (a key of the run, or ``all``: every teacher averaged at ``temperature``)."""
    if key == ALL_TEACHERS:
        return AveragedTeachers([trio.teacher(k) for k in trio.spec.teacher_keys], temperature)
    return trio.teacher(key)


def teacher_of(context: DistillContext) -> ModalNet | AveragedTeachers:
    """The frozen teacher ``distill.teacher`` names (already resolved to a key of the run by the distill stage)."""
    return teacher_net(context.trio, context.settings.teacher, context.settings.temperature)


class FrozenTeacher:
    """The logits of the frozen stage-1 teacher ``distill.teacher`` for a batch: gathered from a bank computed once
    for the train split (engine/bank.py), or recomputed without a graph when ``distill.bank`` is false."""

    def __init__(self, context: DistillContext) -> None:
        self.net = teacher_of(context)
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
