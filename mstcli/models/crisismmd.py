"""The CrisisMMD-V2 family (docs/method.md §3.4): MLPs over pre-extracted image (ResNet-50, 2048-d) and text
(encoder pooled, 768-d for BERTweet) features. ReLU after every hidden Linear.

Unimodal MLP-Vb / MLP-Tb: D -> 1024 -> 512 -> classes (MaskNets on fc1 1024, fc2 512). MM MLP-I: each modality
D -> 1024 -> 512, concat 1024 -> 512 -> 256 -> classes (MaskNets on fc1 512, fc2 256).
"""

from __future__ import annotations

import torch
from torch import nn

from mstcli.models.heads import ThreeLinearHead


class MLPBranch(ThreeLinearHead):
    """The unimodal MLP-Vb / MLP-Tb."""

    def __init__(self, shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.add_head(int(shape[-1]), (1024, 512), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def _encoder(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU())


class MLPI(ThreeLinearHead):
    """MM teacher: image and text encoders to 512 each, concat, then fc1 (512) -> fc2 (256) -> fc3."""

    def __init__(self, shapes: tuple[tuple[int, ...], tuple[int, ...]], num_classes: int) -> None:
        super().__init__()
        self.image_encoder = _encoder(int(shapes[0][-1]))
        self.text_encoder = _encoder(int(shapes[1][-1]))
        self.add_head(1024, (512, 256), num_classes)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        fused = torch.cat([self.image_encoder(image), self.text_encoder(text)], dim=1)
        return self.head(fused)
