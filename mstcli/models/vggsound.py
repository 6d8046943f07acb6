"""The VGGSound-50k family (docs/method.md §3.3, the reference's "-VGGS" nets): conv nets over pre-extracted
per-second features, hidden widths 320 and 160, and the intermediate-fusion MM teacher DSCNN-VGGS-I.

Inputs: visual ``10 x 7 x 7 x 512`` (segments x H x W x channels), audio ``10 x 128`` (segments x VGGish).
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from mstcli.models.ravdess import DSCNNI, BranchNet


class VisualFeatureBranch(nn.Module):
    """Permuted to channels x segments x H x W; Conv3d k3 p1 C -> 256 -> 128 -> 64 with BN and ReLU, max-pool 2
    after the first two (10x7x7 -> 5x3x3 -> 2x1x1); flattened (128 at the reference shape)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        widths = (shape[-1], 256, 128, 64)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(pairwise(widths)):
            layers += [nn.Conv3d(a, b, 3, padding=1), nn.BatchNorm3d(b), nn.ReLU()]
            if i < 2:
                layers.append(nn.MaxPool3d(2))
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.permute(0, 4, 1, 2, 3)).flatten(1)


class AudioFeatureBranch(nn.Module):
    """The segments as channels over the 128-d embedding: Conv1d k3 p1 10 -> 16 -> 32 -> 64, BN, ReLU, pool 3."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        widths = (shape[0], 16, 32, 64)
        self.blocks = nn.Sequential(
            *(
                nn.Sequential(nn.Conv1d(a, b, 3, padding=1), nn.BatchNorm1d(b), nn.ReLU(), nn.MaxPool1d(3))
                for a, b in pairwise(widths)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).flatten(1)


class VisualBranchNetVGGS(BranchNet):
    branch_type = VisualFeatureBranch


class AudioBranchNetVGGS(BranchNet):
    branch_type = AudioFeatureBranch


class DSCNNVGGSI(DSCNNI):
    """concat [audio 256, visual 128] -> 320 -> 160 -> classes."""

    branches = (VisualFeatureBranch, AudioFeatureBranch)
