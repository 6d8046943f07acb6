"""GateNet: the router of S3. It reads the student's logits (the reference) or, with ``distill.gate_input:
features``, the student's penultimate features, and scores each specialized teacher."""

from __future__ import annotations

import torch
from torch import nn


class GateNet(nn.Module):
    """Linear(C -> 2C) then Linear(2C -> E), with no nonlinearity between them (as in the reference); C is the
    width of what it reads (the number of classes for logits)."""

    def __init__(self, num_inputs: int, num_experts: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(num_inputs, 2 * num_inputs)
        self.out = nn.Linear(2 * num_inputs, num_experts)

    def forward(self, student_signal: torch.Tensor) -> torch.Tensor:
        """Routing probabilities, B x E."""
        return torch.softmax(self.out(self.hidden(student_signal)), dim=-1)
