"""The student alone: cross-entropy on its own modality (the reference's main-S.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext


class StudentAlone:
    continues_stage1 = False
    teacher_label = None  # recorded in the checkpoint and metrics.json instead of distill.teacher

    def __init__(self, context: DistillContext) -> None:
        self.weight = context.settings.w_task

    def extra_modules(self) -> list:
        return []

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        ce = F.cross_entropy(student_logits, batch.labels)
        return self.weight * ce, {"ce": ce.detach()}

    def end_epoch(self, epoch: int) -> dict[str, float]:
        return {}
