"""GateNet: the router of S3. It reads the student's logits and scores each specialized teacher."""

from __future__ import annotations

import torch
from torch import nn


class GateNet(nn.Module):
    """Linear(C -> 2C) then Linear(2C -> E), with no nonlinearity between them (as in the reference)."""

    def __init__(self, num_classes: int, num_experts: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(num_classes, 2 * num_classes)
        self.out = nn.Linear(2 * num_classes, num_experts)

    def forward(self, student_logits: torch.Tensor) -> torch.Tensor:
        """Routing probabilities, B x E."""
        return torch.softmax(self.out(self.hidden(student_logits)), dim=-1)
