"""Specialized teachers: frozen teachers with their S2 MaskNets plugged in (method.md §2.3-2.4)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mstcli.methods.mst.masknet import MaskNet, plugged
from mstcli.models.trio import ModalNet

TEACHER_ORDER = ("mm", "cm")


@dataclass(frozen=True)
class MaskSlot:
    """One MaskNet and where it plugs in."""

    teacher: str
    layer: str
    shape: tuple[int, ...]


def masks_from_entries(entries: list[dict]) -> list[tuple[MaskSlot, MaskNet]]:
    """The MaskNets of a MasksCheckpoint's ``masks`` entries, each with its slot."""
    out = []
    for entry in entries:
        slot = MaskSlot(entry["teacher"], entry["layer"], tuple(entry["shape"]))
        net = MaskNet(entry["dim"], entry["heads"], entry["hidden_dim_factor"], entry["spatial"])
        net.load_state_dict(entry["state"])
        out.append((slot, net))
    return out


class SpecializedTeachers(nn.Module):
    """The E experts of S3, in the reference order [MM@l1, MM@l2, CM@l1, CM@l2].

    ``compose='cumulative'`` reproduces the reference code, where expert j of a teacher runs with the masks
    of layers 1..j all active (its hooks pile up); ``'single'`` runs each expert with its own mask only, as
    S2 trained it. Everything here is frozen and in eval mode.
    """

    def __init__(self, teachers: dict[str, ModalNet], masks: list[tuple[MaskSlot, MaskNet]], compose: str) -> None:
        super().__init__()
        self.teachers = nn.ModuleDict(teachers)
        self.masknets = nn.ModuleList(net for _, net in masks)
        self.experts: list[tuple[str, list[int]]] = []
        for key in TEACHER_ORDER:
            own = [i for i, (slot, _) in enumerate(masks) if slot.teacher == key]
            for j, index in enumerate(own):
                active = own[: j + 1] if compose == "cumulative" else [index]
                self.experts.append((key, active))
        self.slots = [slot for slot, _ in masks]
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "SpecializedTeachers":
        return super().train(False)

    @property
    def names(self) -> list[str]:
        return [f"{key}@" + "+".join(self.slots[i].layer for i in active) for key, active in self.experts]

    def __len__(self) -> int:
        return len(self.experts)

    @torch.no_grad()
    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """E x B x C logits of every specialized teacher."""
        outs = []
        for key, active in self.experts:
            teacher = self.teachers[key]
            with plugged(teacher.net, [(self.slots[i].layer, self.masknets[i]) for i in active]):
                outs.append(teacher(inputs))
        return torch.stack(outs)
