"""S2's cache of frozen teacher outputs at the masked layers.

During S2 only the MaskNets learn; everything of a teacher before its masked layer is frozen and in eval mode,
so that part gives the same output for a sample in every epoch. It is computed once per split (one pass per
teacher, all its layers at once) and each step runs only ``MaskNet -> the teacher's tail``. Layers are cached in
order while their outputs fit the memory budget; the others are recomputed each batch with the mask plugged in
by a hook, as the reference does. A net without ``tail`` is always recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mstcli.engine import distributed
from mstcli.engine.splits import Split
from mstcli.models.taps import layer_tensor, supports_tail
from mstcli.models.trio import ModalNet

SlotKey = tuple[str, str]  # (teacher key, layer name)


def plan_cache(
    slots: Sequence[tuple[SlotKey, tuple[int, ...]]], teachers: dict[str, ModalNet], rows: int, budget_mb: int
) -> list[SlotKey]:
    """The (teacher, layer) outputs to cache: in order, each one that still fits ``budget_mb`` for ``rows`` rows."""
    chosen, left = [], budget_mb * 2**20
    for key, shape in slots:
        size = 4 * rows * math.prod(shape)
        if supports_tail(teachers[key[0]].net, [key[1]]) and size <= left:
            chosen.append(key)
            left -= size
    return chosen


@torch.no_grad()
def layer_outputs(teacher: ModalNet, layers: Sequence[str], split: Split, batch_size: int) -> dict[str, torch.Tensor]:
    """The outputs of ``layers`` of ``teacher`` for every row of ``split``, in order (one pass; under torchrun each
    process computes its share of the rows and gets all of them)."""
    modules = dict(teacher.net.named_modules())
    current: dict[str, torch.Tensor] = {}
    handles = [
        modules[name].register_forward_hook(lambda _m, _i, out, name=name: current.__setitem__(name, layer_tensor(out)))
        for name in layers
    ]
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    try:
        for rows in distributed.shard_batches(len(split), batch_size, split.labels.device):
            teacher(split.batch(rows).inputs)
            for name in layers:
                parts[name].append(current[name])
    finally:
        for handle in handles:
            handle.remove()
    return {name: distributed.gather_rows(torch.cat(chunks), len(split)) for name, chunks in parts.items()}


def build_layer_cache(
    teachers: dict[str, ModalNet], keys: Sequence[SlotKey], split: Split, batch_size: int
) -> dict[SlotKey, torch.Tensor]:
    cache: dict[SlotKey, torch.Tensor] = {}
    for teacher_key in dict.fromkeys(key for key, _ in keys):
        layers = [layer for key, layer in keys if key == teacher_key]
        for layer, out in layer_outputs(teachers[teacher_key], layers, split, batch_size).items():
            cache[(teacher_key, layer)] = out
    return cache
