"""The MM teacher of AV-Digits-3: CNN-I (models/avmnist.py) with a third branch for the 8x8 scan.

The image branch is CNN-I's own (LeNet5's 84-d features), the audio branch the audio student's conv stack with a
linear layer to 128 (see AudioConvEncoder for why not CNN-I's), the scan branch the folder nets' MLP encoder
(64 -> 256 -> 128); their concatenation goes through CNN-I's head (fc1 to half the width, fc2, no ReLU between),
with MaskNets on the concatenation and on fc1 as in CNN-I.

``views`` builds the same net on a subset of the three views (``mst bench views`` measures what each subset tells
with one architecture); the teacher of a run always has all three.
"""

from __future__ import annotations

import torch
from torch import nn

from mstcli.models.avmnist import FusionHead, LeNet5Features, ThreeLayerCNNA
from mstcli.models.folder import ENCODER_WIDTH, VectorEncoder

VIEWS = ("image", "audio", "scan")
BRANCH_WIDTH = {"image": 84, "audio": ENCODER_WIDTH, "scan": ENCODER_WIDTH}


class AudioConvEncoder(nn.Module):
    """The audio student's conv stack (ThreeLayerCNNA: 32/64/128 channels, each max-pooled), flattened, then a
    linear layer to 128 with ReLU. CNN-I's own audio branch (five convolutions up to 512 channels, global mean,
    no normalization) hardly moved in 20 epochs of CE here: the image + audio net stayed at the image's accuracy."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.convs = ThreeLayerCNNA(shape, 1)  # its classifier (to one output) is not used
        self.fc = nn.Linear(self.convs.fc.in_features, ENCODER_WIDTH)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(self.convs._conv_stack(x).flatten(1)))


class ThreeViewCNNI(FusionHead):
    """[LeNet5 84-d, audio CNN 512-d, scan MLP 128-d] -> concat -> fc1 -> fc2 (of the views it is built for)."""

    takes_views = True  # mst bench views may build it on a subset of VIEWS

    def __init__(
        self, shapes: tuple[tuple[int, ...], ...], num_classes: int, views: tuple[str, ...] = VIEWS
    ) -> None:
        super().__init__()
        if len(shapes) != len(views):
            raise ValueError(f"{len(views)} views need {len(views)} shapes, got {len(shapes)}")
        self.views = tuple(views)
        makers = {"image": LeNet5Features, "audio": AudioConvEncoder, "scan": VectorEncoder}
        self.branches = nn.ModuleDict({v: makers[v](shape) for v, shape in zip(views, shapes, strict=True)})
        self.concat_identity = nn.Identity()
        width = sum(BRANCH_WIDTH[v] for v in views)
        self.fc1 = nn.Linear(width, width // 2)
        self.fc2 = nn.Linear(width // 2, num_classes)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        parts = [self.branches[v](x) for v, x in zip(self.views, inputs, strict=True)]
        return self.tail("concat_identity", self.concat_identity(torch.cat(parts, dim=1)))
