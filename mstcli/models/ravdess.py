"""The RAVDESS family (docs/method.md §3.2): 1-D conv over MFCC time for audio, 3-D conv over frames for video,
and the intermediate-fusion MM teacher DSCNN-I. Hidden widths 320 and 160 as the reference.

Inputs: audio ``15 x T`` (MFCCs as channels), visual ``F x 3 x S x S`` (frames, BGR, square crop). Flatten
widths are measured from the shapes, so the same nets serve 224-pixel crops and the tests' tiny ones.
Layers are named ``fc1``/``fc2``/``fc3`` at the top level so MaskNets plug in where the reference's do.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from mstcli.models.heads import ThreeLinearHead, flat_size

HIDDEN = (320, 160)


class AudioBranch(nn.Module):
    """Conv1d k3 p1 over time, 15 -> 32 -> 128 -> 256 channels, each with BN, ReLU and max-pool 3; flattened."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        widths = (shape[0], 32, 128, 256)
        self.blocks = nn.Sequential(
            *(
                nn.Sequential(nn.Conv1d(a, b, 3, padding=1), nn.BatchNorm1d(b), nn.ReLU(), nn.MaxPool1d(3))
                for a, b in pairwise(widths)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).flatten(1)


class VisualBranch(nn.Module):
    """Frames permuted to channels x time x H x W; Conv3d k3 p1 3 -> 6 -> 12 -> 24 with BN, ReLU, max-pool 2."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        widths = (shape[1], 6, 12, 24)
        self.blocks = nn.Sequential(
            *(
                nn.Sequential(nn.Conv3d(a, b, 3, padding=1), nn.BatchNorm3d(b), nn.ReLU(), nn.MaxPool3d(2))
                for a, b in pairwise(widths)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.permute(0, 2, 1, 3, 4)).flatten(1)


class BranchNet(ThreeLinearHead):
    """A unimodal net: a branch, then fc1 (320) -> fc2 (160) -> fc3 (classes), ReLU after fc1 and fc2."""

    branch_type: type[nn.Module] = nn.Identity

    def __init__(self, shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.branch = self.branch_type(shape)
        self.add_head(flat_size(self.branch, shape), HIDDEN, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.branch(x))


class AudioBranchNet(BranchNet):
    branch_type = AudioBranch


class VisualBranchNet(BranchNet):
    branch_type = VisualBranch


class DSCNNI(ThreeLinearHead):
    """MM teacher: concat [audio branch, visual branch] (audio first, as the reference) -> fc1 -> fc2 -> fc3."""

    branches: tuple[type[nn.Module], type[nn.Module]] = (VisualBranch, AudioBranch)

    def __init__(self, shapes: tuple[tuple[int, ...], tuple[int, ...]], num_classes: int) -> None:
        super().__init__()
        self.visual_branch = self.branches[0](shapes[0])
        self.audio_branch = self.branches[1](shapes[1])
        width = flat_size(self.visual_branch, shapes[0]) + flat_size(self.audio_branch, shapes[1])
        self.add_head(width, HIDDEN, num_classes)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        fused = torch.cat([self.audio_branch(audio), self.visual_branch(visual)], dim=1)
        return self.head(fused)
