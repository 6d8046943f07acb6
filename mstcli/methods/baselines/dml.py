"""DML, deep mutual learning (Zhang, Xiang, Hospedales and Lu, CVPR 2018).

There is no fixed teacher: the student and a peer learn together, each with its own CE plus
KL(p_other || p_self) at temperature 1 (the paper has no temperature), the other's prediction taken as a constant.
Here the peer is a trainable copy of the stage-1 MM or CM net (``--teacher``), so an MM peer reads both
modalities; it is returned by ``extra_modules`` and trained by the S3 optimizer. The MST-Distill repository has
no DML script (docs/method.md §4), so there is no reference behaviour to differ from.

Simplification: the paper updates the two peers in turn within a mini-batch (the second one sees the first one's
updated prediction); here both are updated from the same forward pass in one optimizer step, which is what most
re-implementations do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.baselines.teachers import trainable_copy
from mstcli.methods.losses import kd_loss


def mutual_pair_loss(
    student: torch.Tensor, peer: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(student loss, peer loss): each CE + KL(other || self), the other's prediction detached."""
    student_loss = F.cross_entropy(student, labels) + kd_loss(student, peer.detach(), temperature)
    peer_loss = F.cross_entropy(peer, labels) + kd_loss(peer, student.detach(), temperature)
    return student_loss, peer_loss


@dataclass(frozen=True)
class DMLConstants:
    temperature: float  # the paper has none, i.e. 1


class DeepMutualLearning(DistillMethod):
    name = "dml"
    CONSTANT_SETS = {"reference": DMLConstants(1.0), "paper": DMLConstants(1.0)}  # no reference script

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.peer = trainable_copy(context.trio.teacher(context.settings.teacher))

    def extra_modules(self) -> list[nn.Module]:
        return [self.peer]

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        peer_logits = self.peer(batch.inputs)
        student_loss, peer_loss = mutual_pair_loss(
            student_logits, peer_logits, batch.labels, self.constants.temperature
        )
        return student_loss + peer_loss, {"student": student_loss.detach(), "peer": peer_loss.detach()}
