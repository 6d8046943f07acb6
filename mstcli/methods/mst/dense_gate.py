"""GateNet_dense: S3's router for per-pixel logits (docs/method.md §2.4, NYU-Depth-V2)."""

from __future__ import annotations

import torch
from torch import nn


class DenseGateNet(nn.Module):
    """1x1 conv C -> 2C, ReLU, depthwise 3x3 conv (stride 2, pad 1), ReLU, global average pool, Linear 2C -> E,
    softmax: one routing distribution per frame from its B x C x H x W logits (C = 41 for NYU)."""

    def __init__(self, num_inputs: int, num_experts: int) -> None:
        super().__init__()
        width = 2 * num_inputs
        self.pointwise = nn.Conv2d(num_inputs, width, 1)
        self.depthwise = nn.Conv2d(width, width, 3, stride=2, padding=1, groups=width)
        self.out = nn.Linear(width, num_experts)

    def forward(self, student_signal: torch.Tensor) -> torch.Tensor:
        """Routing probabilities, B x E."""
        x = torch.relu(self.depthwise(torch.relu(self.pointwise(student_signal))))
        return torch.softmax(self.out(x.mean(dim=(2, 3))), dim=-1)
