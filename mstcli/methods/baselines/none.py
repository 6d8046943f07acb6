"""The student alone: cross-entropy on its own modality (the reference's main-S.py)."""

from __future__ import annotations

import torch

from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.tasks import task_kind


class StudentAlone(DistillMethod):
    name = "none"

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.weight = context.settings.w_task
        self.ce = task_kind(context.trio.spec.task).ce  # per sample, or per labelled pixel (methods/tasks.py)

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        ce = self.ce(student_logits, batch.labels)
        return self.weight * ce, {"ce": ce.detach()}
