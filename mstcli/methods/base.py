"""What every distillation method provides to the S3 loop (one small class per method, mdistiller-style)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from mstcli.config import DistillParams
from mstcli.engine.splits import Split
from mstcli.models.trio import ModalNet, Trio


@dataclass
class DistillContext:
    """Everything a method may need to set itself up."""

    settings: DistillParams
    trio: Trio  # the stage-1 nets, teachers frozen
    student: ModalNet  # the student being trained (hook it for features); trio.student is the stage-1 one
    splits: dict[str, Split]  # train and val, in memory; a batch's ``rows`` index into its split
    masks_path: Path | None
    device: torch.device


class DistillMethod(Protocol):
    #: the student starts from stage 1 (True) or from scratch (False) when distill.student_init is auto
    continues_stage1: bool
    # optional ``teacher_label``: what the checkpoint and metrics.json record as the teacher; methods without it
    # learn from distill.teacher ("mm" or "cm")

    def extra_modules(self) -> list[nn.Module]:
        """Trainable modules besides the student (e.g. the GateNet); optimized with the student."""

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss of one batch and its named terms (for the curves; tensors or floats: tensors are
        averaged on the device, which spares a GPU sync per step)."""

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Called after each epoch (0-based); returns per-epoch statistics such as routing frequencies."""
