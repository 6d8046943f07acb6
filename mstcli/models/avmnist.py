"""The AV-MNIST family (docs/method.md §3.1): LeNet5 for images, a three-layer CNN for spectrograms and the
intermediate-fusion MM teacher CNN-I. Also used for AV-Digits, which has the same two modalities.

Layer names follow the reference so that MaskNets plug into the same places: a hook on ``conv3`` or
``fc1`` sees the layer's output before its ReLU. Each net's ``tail(layer, z)`` runs the rest of its forward from
a mask layer's output, and ``forward`` is written through it, so the two cannot drift apart. Flatten sizes are
measured from the input shape, so the same nets serve 28x28 images with 32x32 or 112x112 spectrograms.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn


def _flat_size(module: nn.Module, shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(module(torch.zeros(1, *shape)).flatten(1).shape[1])


class LeNet5Features(nn.Module):
    """LeNet5 up to its 84-d hidden layer (after ReLU); the image branch of CNN-I."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(shape[0], 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.conv3 = nn.Conv2d(16, 120, 5)
        self.pool = nn.AvgPool2d(2)
        self.act = nn.ReLU()
        self.fc1 = nn.Linear(_flat_size(self._conv_stack, shape), 84)

    def below_conv3(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)))
        return self.pool(self.act(self.conv2(x)))

    def _conv_stack(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.below_conv3(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc1(self._conv_stack(x).flatten(1)))


class LeNet5(nn.Module):
    mask_layers = ("features.conv3", "features.fc1")
    classifier = "fc2"

    def __init__(self, shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.features = LeNet5Features(shape)
        self.fc2 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail("features.conv3", self.features.conv3(self.features.below_conv3(x)))

    def tail(self, layer: str, z: torch.Tensor) -> torch.Tensor:
        """The rest of the forward from the output ``z`` of mask layer ``layer`` (S2 caches what comes before)."""
        f = self.features
        if layer == "features.conv3":
            z = f.fc1(f.act(z).flatten(1))
        elif layer != "features.fc1":
            raise KeyError(layer)
        return self.fc2(f.act(z))


class ThreeLayerCNNA(nn.Module):
    """Three conv3x3 blocks (32, 64, 128 channels) with max-pooling, then one linear layer."""

    mask_layers = ("conv2", "conv3")
    classifier = "fc"

    def __init__(self, shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(shape[0], 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()
        self.fc = nn.Linear(_flat_size(self._conv_stack, shape), num_classes)

    def _conv_stack(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.conv1, self.conv2, self.conv3):
            x = self.pool(self.act(conv(x)))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail("conv2", self.conv2(self.pool(self.act(self.conv1(x)))))

    def tail(self, layer: str, z: torch.Tensor) -> torch.Tensor:
        """The rest of the forward from the output ``z`` of mask layer ``layer`` (S2 caches what comes before)."""
        if layer == "conv2":
            z = self.conv3(self.pool(self.act(z)))
        elif layer != "conv3":
            raise KeyError(layer)
        return self.fc(self.pool(self.act(z)).flatten(1))


class FiveLayerAudioFeatures(nn.Module):
    """The audio branch of CNN-I: conv3x3 1-32-64-128-256-512, max-pool after the first four, global mean."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        widths = (shape[0], 32, 64, 128, 256, 512)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in pairwise(widths))
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = self.act(conv(x))
            if i < 4 and min(x.shape[-2:]) >= 2:
                x = self.pool(x)
        return x.mean(dim=(2, 3))


class FusionHead(nn.Module):
    """CNN-I's end: the concatenated branch features (``concat_identity``) -> fc1 -> fc2, no ReLU between the FCs;
    MaskNets on the concatenation and on fc1. Subclasses set ``concat_identity``, ``fc1`` and ``fc2``."""

    mask_layers = ("concat_identity", "fc1")
    classifier = "fc2"

    def tail(self, layer: str, z: torch.Tensor) -> torch.Tensor:
        """The rest of the forward from the output ``z`` of mask layer ``layer`` (S2 caches what comes before)."""
        if layer == "concat_identity":
            z = self.fc1(z)
        elif layer != "fc1":
            raise KeyError(layer)
        return self.fc2(z)


class CNNI(FusionHead):
    """Intermediate-fusion MM teacher: [LeNet5 84-d, audio CNN 512-d] -> fc1 -> fc2, no ReLU between the FCs."""

    def __init__(self, shapes: tuple[tuple[int, ...], tuple[int, ...]], num_classes: int) -> None:
        super().__init__()
        self.image_branch = LeNet5Features(shapes[0])
        self.audio_branch = FiveLayerAudioFeatures(shapes[1])
        self.concat_identity = nn.Identity()
        width = 84 + 512
        self.fc1 = nn.Linear(width, width // 2)
        self.fc2 = nn.Linear(width // 2, num_classes)

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        fused = self.concat_identity(torch.cat([self.image_branch(image), self.audio_branch(audio)], dim=1))
        return self.tail("concat_identity", fused)

