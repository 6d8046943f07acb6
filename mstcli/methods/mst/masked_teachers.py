"""S2's model (docs/method.md §2.3): one MaskNet per (teacher, layer), each plugged alone into its frozen teacher.

:func:`build_masks` sizes a MaskNet for every masked layer of both teachers; :class:`MaskedTeachers` computes a
masked teacher's logits for a batch, from the S2 layer cache (methods/mst/layer_cache.py) where it holds the masked
layer's output, else by plugging the MaskNet into a full teacher forward; :func:`mask_records` and
``experts.masks_from_records`` turn MaskNets into the records of a MasksCheckpoint and back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mstcli.engine import distributed
from mstcli.engine.checkpoints import MaskRecord
from mstcli.engine.splits import Split
from mstcli.errors import UserError
from mstcli.methods.mst.experts import MaskSlot
from mstcli.methods.mst.masknet import MaskNet, layer_output_shapes, masknet_for, plugged
from mstcli.methods.tasks import CLASSIFICATION, TaskKind
from mstcli.models.trio import Trio


def build_masks(trio: Trio, sample: Split, layers: int, heads: int, factor: int) -> list[tuple[MaskSlot, MaskNet]]:
    masks = []
    for key in trio.spec.teacher_keys:
        teacher = trio.teacher(key)
        available = tuple(teacher.net.mask_layers)
        if getattr(teacher.net, "masks_named", False):  # models.mask_layers named them: every one is masked
            names = available
        elif layers > len(available):
            raise UserError(
                f"fit_masks.layers={layers} but {type(teacher.net).__name__} has {len(available)} mask layers"
                f" (models.mask_layers.{key} can name others)"
            )
        else:
            names = available[:layers]
        shapes = layer_output_shapes(teacher.net, names, *(sample.inputs[m] for m in teacher.reads))
        for name in names:
            where = f"{key} layer {name}"
            masks.append((MaskSlot(key, name, shapes[name]), masknet_for(shapes[name], heads, factor, where)))
    return masks


def mask_records(
    masks: list[tuple[MaskSlot, MaskNet]], states: list[dict], heads: int, factor: int
) -> list[MaskRecord]:
    """The MasksCheckpoint records of MaskNets, with the given (best-epoch) states."""
    return [
        MaskRecord(
            teacher=slot.teacher,
            layer=slot.layer,
            shape=tuple(slot.shape),
            dim=net.dim,
            heads=heads,
            hidden_dim_factor=factor,
            spatial=net.reduce is not None,
            state=state,
            parameters=sum(p.numel() for p in net.parameters()),
        )
        for (slot, net), state in zip(masks, states, strict=True)
    ]


class MaskedTeachers:
    """Computes each specialized teacher's logits for a batch of a split, from the layer cache where it holds the
    masked layer's input, else by plugging the MaskNet into the full teacher forward."""

    def __init__(self, trio: Trio, masks: list[tuple[MaskSlot, MaskNet]], cache: dict[str, dict]) -> None:
        self.trio, self.masks, self.cache = trio, masks, cache

    def logits(self, i: int, split_name: str, batch: Split) -> torch.Tensor:
        slot, net = self.masks[i]
        teacher = self.trio.teacher(slot.teacher)
        cached = self.cache.get(split_name, {}).get((slot.teacher, slot.layer))
        if cached is not None:
            return teacher.net.tail(slot.layer, net(cached[batch.rows]))
        with plugged(teacher.net, [(slot.layer, net)]):
            return teacher(batch.inputs)


def selection_score(slots: list[MaskSlot], val_kl: list[float]) -> float:
    """Mean validation KL over each teacher's MaskNets, summed over the teachers (the reference's criterion)."""
    score = 0.0
    for key in dict.fromkeys(slot.teacher for slot in slots):
        values = [kl for slot, kl in zip(slots, val_kl, strict=True) if slot.teacher == key]
        score += sum(values) / len(values) if values else 0.0
    return score


@torch.no_grad()
def validation_terms(
    masked: MaskedTeachers, split: Split, targets, temperature: float, batch_size: int, kind: TaskKind = CLASSIFICATION
) -> tuple[list[float], list[float], list[float]]:
    """(mean KL to the student, mean CE on the labels, accuracy on the labels) of every specialized teacher (its
    own mask only): the CE and the accuracy say what the mask costs the teacher.

    Two reductions, kept apart because their numbers must not move: per sample the sums are float32 over the
    samples; per pixel they are float64 over the labelled pixels (``kind.void`` left out)."""
    if kind.dense:
        return dense_validation_terms(masked, split, targets, temperature, batch_size, kind)
    kl = torch.zeros(len(masked.masks), device=targets.device)
    ce = torch.zeros(len(masked.masks), device=targets.device)
    right = torch.zeros(len(masked.masks), device=targets.device)
    for i, (_, net) in enumerate(masked.masks):
        net.eval()
        for index in distributed.shard_batches(len(split), batch_size, targets.device):  # this process's share
            batch = split.batch(index)
            logits = masked.logits(i, "val", batch).float()
            kl[i] += kind.kd_per_sample(logits, targets[index].float(), temperature).sum()
            ce[i] += F.cross_entropy(logits, batch.labels, reduction="sum")
            right[i] += (logits.argmax(1) == batch.labels).sum()
    if distributed.shard_range(len(split)) != (0, len(split)):
        kl, ce, right = (distributed.sum_over_ranks(t) for t in (kl, ce, right))
    return (kl / len(split)).tolist(), (ce / len(split)).tolist(), (right / len(split)).tolist()


@torch.no_grad()
def dense_validation_terms(
    masked: MaskedTeachers, split: Split, targets, temperature: float, batch_size: int, kind: TaskKind
) -> tuple[list[float], list[float], list[float]]:
    """:func:`validation_terms` for per-pixel logits: the KL is the per-pixel mean of each frame (void included,
    as in training) averaged over the frames; CE and accuracy are over the labelled pixels."""
    device = split.labels.device
    kl, ce, right = (torch.zeros(len(masked.masks), dtype=torch.float64, device=device) for _ in range(3))
    labelled = torch.zeros((), dtype=torch.float64, device=device)
    for i, (_, net) in enumerate(masked.masks):
        net.eval()
        for index in distributed.shard_batches(len(split), batch_size, device):
            batch = split.batch(index)
            logits = masked.logits(i, "val", batch).float()
            labels = batch.labels.long()
            kl[i] += kind.kd_per_sample(logits, targets[index].float(), temperature).sum()
            ce[i] += F.cross_entropy(logits, labels, ignore_index=kind.void, reduction="sum")
            valid = labels != kind.void
            right[i] += ((logits.argmax(1) == labels) & valid).sum()
            if i == 0:
                labelled += valid.sum()
    kl, ce, right, labelled = (distributed.sum_over_ranks(t) for t in (kl, ce, right, labelled))
    pixels = labelled.clamp_min(1)
    return (kl / len(split)).tolist(), (ce / pixels).tolist(), (right / pixels).tolist()
