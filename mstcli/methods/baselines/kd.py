"""Hinton KD from one stage-1 teacher (MM or CM): (1 - alpha) CE + alpha tau^2 KL, alpha = 0.5, tau = 4."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.losses import kd_loss
from mstcli.methods.baselines.teachers import FrozenTeacher


class HintonKD(DistillMethod):
    name = "kd"

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.settings = context.settings
        self.teacher = FrozenTeacher(context)

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        target = self.teacher(batch)
        ce = F.cross_entropy(student_logits, batch.labels)
        kd = kd_loss(student_logits, target, self.settings.temperature)
        alpha = self.settings.kd_alpha
        return (1 - alpha) * ce + alpha * kd, {"ce": ce.detach(), "kd": kd.detach()}
