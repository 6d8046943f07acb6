"""The head shared by the RAVDESS, VGGSound and CrisisMMD nets: fc1 -> ReLU -> fc2 -> ReLU -> fc3.

The layers live directly on the net (``net.fc1``, ...) because MaskNets hook ``fc1`` and ``fc2`` by name, as
the reference does (docs/method.md §2.3); the hooks see the outputs before the ReLU.
"""

from __future__ import annotations

import torch
from torch import nn


class ThreeLinearHead(nn.Module):
    """Base for nets ending in the three-linear head; subclasses call ``add_head`` and ``head``."""

    mask_layers = ("fc1", "fc2")
    classifier = "fc3"

    def add_head(self, width: int, hidden: tuple[int, int], num_classes: int) -> None:
        self.fc1 = nn.Linear(width, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], num_classes)
        self.act = nn.ReLU()

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail("fc1", self.fc1(x))

    def tail(self, layer: str, z: torch.Tensor) -> torch.Tensor:
        """The rest of the forward from the output ``z`` of mask layer ``layer``: what lets S2 cache the frozen part
        before a mask and S3 share one teacher forward among its specialized teachers."""
        if layer == "fc1":
            z = self.fc2(self.act(z))
        elif layer != "fc2":
            raise KeyError(layer)
        return self.fc3(self.act(z))


def flat_size(module: nn.Module, shape: tuple[int, ...]) -> int:
    """Width of ``module``'s flattened output for one input of per-sample ``shape`` (BN in eval mode)."""
    was_training = module.training
    module.eval()
    with torch.no_grad():
        width = int(module(torch.zeros(1, *shape)).flatten(1).shape[1])
    module.train(was_training)
    return width
