"""Specialized teachers: frozen teachers with their S2 MaskNets plugged in (docs/method.md §2.3-2.4)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mstcli.engine.checkpoints import MaskRecord
from mstcli.methods.mst.masknet import MaskNet, plugged
from mstcli.models.taps import layer_tensor, supports_tail, with_layer_tensor
from mstcli.models.trio import ModalNet


@dataclass(frozen=True)
class MaskSlot:
    """One MaskNet and where it plugs in."""

    teacher: str
    layer: str
    shape: tuple[int, ...]


def masks_from_records(records: list[MaskRecord]) -> list[tuple[MaskSlot, MaskNet]]:
    """The MaskNets of a MasksCheckpoint's records, each with its slot."""
    out = []
    for record in records:
        slot = MaskSlot(record.teacher, record.layer, tuple(record.shape))
        tokens = len(record.shape) == 2  # a (T, D) layer: one channel mask shared by the tokens
        net = MaskNet(record.dim, record.heads, record.hidden_dim_factor, record.spatial, tokens)
        net.load_state_dict(record.state)
        out.append((slot, net))
    return out


class SpecializedTeachers(nn.Module):
    """The E experts of S3, in the reference order [MM@l1, MM@l2, CM@l1, CM@l2] (with M >= 3 modalities every CM
    teacher's experts follow, in the order of ``teachers``).

    ``compose='cumulative'`` reproduces the reference code, where expert j of a teacher runs with the masks
    of layers 1..j all active (its hooks pile up); ``'single'`` runs each expert with its own mask only, as
    S2 trained it. Everything here is frozen and in eval mode.
    """

    def __init__(self, teachers: dict[str, ModalNet], masks: list[tuple[MaskSlot, MaskNet]], compose: str) -> None:
        super().__init__()
        self.teachers = nn.ModuleDict(teachers)
        self.masknets = nn.ModuleList(net for _, net in masks)
        self.experts: list[tuple[str, list[int]]] = []
        for key in teachers:
            own = [i for i, (slot, _) in enumerate(masks) if slot.teacher == key]
            for j, index in enumerate(own):
                active = own[: j + 1] if compose == "cumulative" else [index]
                self.experts.append((key, active))
        self.slots = [slot for slot, _ in masks]
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> SpecializedTeachers:
        return super().train(False)

    @property
    def names(self) -> list[str]:
        return [f"{key}@" + "+".join(self.slots[i].layer for i in active) for key, active in self.experts]

    def __len__(self) -> int:
        return len(self.experts)

    @torch.no_grad()
    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """E x B x C logits of every specialized teacher.

        A teacher's experts share their work: one forward of the teacher gives every mask's output, and each
        expert but the last continues from its own with the teacher's ``tail``. With cumulative masks the single
        forward runs with all of the teacher's masks plugged in (expert j's input at its layer has the masks
        before it applied, as in expert j's own forward) and is the last expert; with single masks it runs
        unmasked and every expert applies its one mask to the recorded layer output. Against one plugged forward
        per expert this saves, per teacher, a forward up to the first masked layer and, with cumulative masks,
        the first (for the MM teacher, the largest) MaskNet. A net without ``tail`` runs one forward per expert.
        """
        outs: list[torch.Tensor] = []
        for key, experts in self._by_teacher():
            teacher = self.teachers[key]
            layers = [self.slots[i].layer for active in experts for i in active]
            shared = self._shared(teacher, experts, inputs) if supports_tail(teacher.net, layers) else None
            outs.extend(shared if shared is not None else self._plugged(teacher, experts, inputs))
        return torch.stack(outs)

    @torch.no_grad()
    def forward_plugged(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The same logits, one full forward per expert with its masks plugged in by hooks, as the reference
        computes them: the definition that ``forward`` is tested against."""
        return torch.stack(
            [out for key, experts in self._by_teacher() for out in self._plugged(self.teachers[key], experts, inputs)]
        )

    def _by_teacher(self) -> list[tuple[str, list[list[int]]]]:
        """Each teacher's experts (their mask indices), in the expert order."""
        keys = dict.fromkeys(key for key, _ in self.experts)
        return [(key, [active for k, active in self.experts if k == key]) for key in keys]

    def _plugged(
        self, teacher: ModalNet, experts: list[list[int]], inputs: dict[str, torch.Tensor]
    ) -> list[torch.Tensor]:
        outs = []
        for active in experts:
            with plugged(teacher.net, [(self.slots[i].layer, self.masknets[i]) for i in active]):
                outs.append(teacher(inputs))
        return outs

    def _shared(
        self, teacher: ModalNet, experts: list[list[int]], inputs: dict[str, torch.Tensor]
    ) -> list[torch.Tensor] | None:
        """The experts of one teacher from one forward (see ``forward``); None when their masks are neither
        cumulative nor single."""
        cumulative = all(active == experts[-1][: len(active)] for active in experts)
        single = all(len(active) == 1 for active in experts)
        if not (cumulative or single):
            return None
        indices = list(dict.fromkeys(i for active in experts for i in active))
        modules = dict(teacher.net.named_modules())
        recorded: dict[int, torch.Tensor] = {}

        def record(index: int):
            net = self.masknets[index]

            def hook(_module, _inputs, out):
                recorded[index] = net(layer_tensor(out)) if cumulative else layer_tensor(out)
                return with_layer_tensor(out, recorded[index]) if cumulative else None  # None: goes on unmasked

            return hook

        handles = [modules[self.slots[i].layer].register_forward_hook(record(i)) for i in indices]
        try:
            full = teacher(inputs)
        finally:
            for handle in handles:
                handle.remove()
        tail = teacher.net.tail
        if cumulative:  # the full forward is the last expert; the others continue from their own masked output
            return [tail(self.slots[a[-1]].layer, recorded[a[-1]]) for a in experts[:-1]] + [full]
        return [tail(self.slots[a[0]].layer, self.masknets[a[0]](recorded[a[0]])) for a in experts]
