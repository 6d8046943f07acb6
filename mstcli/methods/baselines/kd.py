"""Hinton KD from one stage-1 teacher (MM or CM): (1 - alpha) CE + alpha tau^2 KL, tau = distill.temperature.

Constants: the reference's main-KD.py uses alpha = 0.5. Hinton et al. give no single value; they report that a
"considerably lower weight" on the hard-label CE than on the tau^2-scaled soft term worked best, which the
``paper`` set reads as alpha = 0.9 (our reading, not a number from the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.baselines.teachers import FrozenTeacher
from mstcli.methods.losses import kd_loss


@dataclass(frozen=True)
class KDConstants:
    alpha: float  # loss = (1 - alpha) CE + alpha tau^2 KL


class HintonKD(DistillMethod):
    name = "kd"
    takes_all_teachers = True  # distill.teacher=all: KD towards the average of every teacher's soft labels
    CONSTANT_SETS = {"reference": KDConstants(alpha=0.5), "paper": KDConstants(alpha=0.9)}

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.teacher = FrozenTeacher(context)

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        target = self.teacher(batch)
        ce = F.cross_entropy(student_logits, batch.labels)
        kd = kd_loss(student_logits, target, self.settings.temperature)
        alpha = self.constants.alpha
        return (1 - alpha) * ce + alpha * kd, {"ce": ce.detach(), "kd": kd.detach()}
