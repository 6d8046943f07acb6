"""Optional pretrained weights for the stage-1 nets, from a local file (``train.vgg16_weights``).

Only NYU-Depth-V2's FuseNets take any (VGG16 ImageNet weights in their encoders, models/nyudepth.py); the
reference's own initialisation discards them (docs/method.md §6.6-6), so by default none are loaded.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from mstcli.errors import UserError
from mstcli.models.nyudepth import _FuseNetBase, load_vgg16


def load_pretrained(trio: nn.Module, path: Path) -> None:
    """VGG16 weights into every FuseNet of ``trio`` (the MM teacher's two encoders, each branch's encoder)."""
    nets = [member.net for _, member in trio.members()]
    if not all(isinstance(net, _FuseNetBase) for net in nets):
        raise UserError(f"train.vgg16_weights applies to the FuseNets of nyudepth only, not to {trio.spec.dataset}")
    if not path.is_file():
        raise UserError(f"train.vgg16_weights not found: {path}")
    for net in nets:
        load_vgg16(net, path)
