"""Nets for a user's folder, chosen by each modality's stored feature shape (no data set code to write).

* maps (C x H x W, or H x W read as one channel): a small CNN in the AV-MNIST manner, three 3x3 convolutions
  (32, 64, 128 channels, each max-pooled while the map is large enough), an adaptive average pool to 4 x 4 so any
  size works, then fc1 (128) and the classifier. A map whose shorter side exceeds 32 is first average-pooled by
  the smallest whole factor that brings that side to 32 or less (a 112 x 112 spectrogram is read at 28 x 28);
* anything else (vectors, and arrays of 4 or more axes, flattened): an MLP D -> 256 -> 128 -> classes.

The MM teacher runs one such encoder per modality (without its classifier), concatenates them and ends in the
three-linear head (fc1 256 -> fc2 128 -> fc3). Every net names its two MaskNet layers and classifier and has a
``tail``, as the built-in families do, so S2, S3 and every comparison method that taps features work unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mstcli.models.heads import ThreeLinearHead

ENCODER_WIDTH = 128
CONV3_CHANNELS = 128
POOLED = 4
# The map net is sized for maps of about 32 a side (AV-MNIST's audio CNN). Measured on a folder of noisy spoken
# digits stored as 112 x 112 log-mel arrays (docs/own-data.md, "Array modalities"): read at full size the net cost
# 24x more per epoch and learned slower per epoch (25.7 vs 31.0 % validation after 4 epochs, trained alone), so a
# larger map is average-pooled first. A user who needs the detail brings their own encoder (``models.encoders``).
STEM_SIDE = 32


def stem_factor(shape: Sequence[int]) -> int:
    """The average-pooling factor applied to a map before conv1: 1 up to 32 a side, else ceil(shorter side / 32)."""
    side = min(int(shape[-2]), int(shape[-1]))
    return 1 if side <= STEM_SIDE else -(-side // STEM_SIDE)


def is_map(shape: Sequence[int]) -> bool:
    return len(shape) in (2, 3)


def _as_map(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    return x.unsqueeze(1) if len(shape) == 2 else x


class MapEncoder(nn.Module):
    """[stem pool] -> conv1 -> pool -> conv2 -> pool -> conv3 -> pool -> adaptive pool -> fc1 (the hooks see conv3
    and fc1 before their ReLU). A conv is followed by 2x2 max-pooling while its map is at least 8 pixels a side, so
    a 32 x 32 input ends at 4 x 4 (the AV-MNIST audio CNN's stack) and an 8 x 8 array is not pooled to nothing.
    The stem pool (see ``stem_factor``) exists only for maps larger than 32 a side, so smaller ones are read as
    before, weight for weight."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        channels = 1 if len(shape) == 2 else int(shape[0])
        factor = stem_factor(shape)
        side = min(int(shape[-2]), int(shape[-1])) // factor
        self.shape = tuple(shape)
        self.stem = nn.AvgPool2d(factor, ceil_mode=True) if factor > 1 else nn.Identity()
        self.conv1 = nn.Conv2d(channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, CONV3_CHANNELS, 3, padding=1)
        pools = []
        for _ in range(3):
            pools.append(nn.MaxPool2d(2) if side >= 8 else nn.Identity())
            side = side // 2 if side >= 8 else side
        self.pools = nn.ModuleList(pools)
        self.squeeze = nn.AdaptiveAvgPool2d(POOLED)
        self.act = nn.ReLU()
        self.fc1 = nn.Linear(CONV3_CHANNELS * POOLED * POOLED, ENCODER_WIDTH)

    def below_conv3(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pools[0](self.act(self.conv1(self.stem(_as_map(x, self.shape)))))
        return self.pools[1](self.act(self.conv2(x)))

    def from_conv3(self, z: torch.Tensor) -> torch.Tensor:
        """fc1's output from conv3's (before fc1's ReLU)."""
        return self.fc1(self.squeeze(self.pools[2](self.act(z))).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.from_conv3(self.conv3(self.below_conv3(x))))


class VectorEncoder(nn.Module):
    """fc1 (256) -> fc2 (128) on the flattened input (the hooks see both before their ReLU)."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        width = 1
        for size in shape:
            width *= int(size)
        self.fc1 = nn.Linear(width, 256)
        self.fc2 = nn.Linear(256, ENCODER_WIDTH)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc2(self.act(self.fc1(x.flatten(1)))))


def encoder_for(shape: Sequence[int]) -> nn.Module:
    return MapEncoder(shape) if is_map(shape) else VectorEncoder(shape)


class FolderMapNet(nn.Module):
    """A unimodal net for maps: MapEncoder + classifier; MaskNets on conv3 (a map) and fc1."""

    mask_layers = ("encoder.conv3", "encoder.fc1")
    classifier = "fc2"

    def __init__(self, shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.encoder = MapEncoder(shape)
        self.fc2 = nn.Linear(ENCODER_WIDTH, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.encoder
        return self.tail("encoder.conv3", e.conv3(e.below_conv3(x)))

    def tail(self, layer: str, z: torch.Tensor) -> torch.Tensor:
        """The rest of the forward from the output ``z`` of mask layer ``layer`` (S2 caches what comes before)."""
        if layer == "encoder.conv3":
            z = self.encoder.from_conv3(z)
        elif layer != "encoder.fc1":
            raise KeyError(layer)
        return self.fc2(self.encoder.act(z))


class FolderVectorNet(ThreeLinearHead):
    """A unimodal net for vectors: the three-linear head on the flattened input (D -> 256 -> 128 -> classes)."""

    def __init__(self, shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        width = 1
        for size in shape:
            width *= int(size)
        self.add_head(width, (256, ENCODER_WIDTH), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1))


class FolderFusionNet(ThreeLinearHead):
    """The MM teacher: one encoder per modality (in the feature file's order), concatenated, then fc1 (256) ->
    fc2 (128) -> fc3; MaskNets on fc1 and fc2."""

    def __init__(self, shapes: tuple[tuple[int, ...], ...], num_classes: int) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(encoder_for(shape) for shape in shapes)
        self.add_head(ENCODER_WIDTH * len(shapes), (256, ENCODER_WIDTH), num_classes)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([encoder(x) for encoder, x in zip(self.encoders, inputs, strict=True)], dim=1))


def unimodal_net_name(shape: Sequence[int]) -> str:
    """The registry name (models/zoo.py) of the unimodal net for a modality of this shape."""
    return "folder_map_net" if is_map(shape) else "folder_vector_net"
