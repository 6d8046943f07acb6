"""What S2 learned to suppress: each MaskNet's mean mask value per channel over a split.

A MaskNet's mask depends on the sample (it reads the frozen layer's output), so its effect is summarized as the
mean over the split's samples, one value in (0, 1) per channel of the masked layer: near 1 the channel passes,
near 0 the specialized teacher has learned to drop it.
"""

from __future__ import annotations

import torch

from mstcli.engine.splits import Split, batches
from mstcli.methods.mst.experts import MaskSlot
from mstcli.methods.mst.masknet import MaskNet
from mstcli.models.trio import Trio


@torch.no_grad()
def mean_masks(
    trio: Trio, masks: list[tuple[MaskSlot, MaskNet]], split: Split, batch_size: int = 1024
) -> list[tuple[MaskSlot, torch.Tensor]]:
    """Per MaskNet, the mean over ``split`` of its mask (a vector of the masked layer's channel count)."""
    means = []
    for slot, net in masks:
        net.eval()
        teacher = trio.teacher(slot.teacher)
        layer = dict(teacher.net.named_modules())[slot.layer]
        total = torch.zeros(net.dim, device=split.labels.device)
        seen: list[torch.Tensor] = []
        handle = layer.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out))
        try:
            for index in batches(len(split), batch_size, None, split.labels.device):
                seen.clear()
                teacher(split.batch(index).inputs)
                z = seen[0]
                if z.dim() == 4 and z.shape[-2:] == (1, 1):
                    z = z.flatten(1)
                total += net.mask(z).float().sum(0)
        finally:
            handle.remove()
        means.append((slot, (total / len(split)).cpu()))
    return means
