"""The student alone: cross-entropy on its own modality (the reference's main-S.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms


class StudentAlone(DistillMethod):
    name = "none"

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.weight = context.settings.w_task

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        ce = F.cross_entropy(student_logits, batch.labels)
        return self.weight * ce, {"ce": ce.detach()}
