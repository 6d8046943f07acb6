"""The nets a user chooses in ``models``: an encoder plus a linear classifier (student, CM teacher) and the MM
teacher that fuses one encoder per modality, plus what ``models`` says about any net's layers (masks, hints,
freezing), applied to mst's own nets as well.

Both nets name their ``mask_layers`` and ``classifier`` like mst's own, so S2, S3 and the feature methods need
nothing new; they have no ``tail``, so S2 and S3 reach a masked layer by a forward hook that replaces its output
(models/taps.py). Only the fusion head keeps the fast path (its ``fc1``/``fc2`` are the built-in head's).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mstcli.config import ModelsParams, NetChoice, parse_net_choice
from mstcli.errors import UserError
from mstcli.models.encoders.base import Encoder, EncoderRequest
from mstcli.models.encoders.registry import build_encoder
from mstcli.models.heads import ThreeLinearHead
from mstcli.models.layer_paths import display_name, last_blocks, parameters_up_to, resolve_layer

FUSION_HIDDEN = (256, 128)


class EncoderClassifier(nn.Module):
    """A chosen encoder and a linear classifier (``head``); masks default to the encoder's last two blocks."""

    classifier = "head"

    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.width, num_classes)
        self.path_aliases = (("", "encoder.backbone"),)
        skip = (getattr(encoder, "head_name", ""),) if getattr(encoder, "head_name", "") else ()
        self.mask_layers = tuple(f"encoder.backbone.{p}" for p in last_blocks(encoder.backbone, 2, skip))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class FusionNet(ThreeLinearHead):
    """The MM teacher of chosen encoders: their vectors concatenated in the data's modality order, then the
    three-linear head (fc1 256 -> fc2 128 -> fc3) of mst's own fusion nets; masks default to fc1 and fc2."""

    def __init__(self, encoders: dict[str, Encoder], num_classes: int) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.add_head(sum(e.width for e in encoders.values()), FUSION_HIDDEN, num_classes)
        self.path_aliases = tuple((f"{m}.", f"encoders.{m}.backbone") for m in encoders)
        self.mask_layers = ("fc1", "fc2")

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        parts = [encoder(x) for encoder, x in zip(self.encoders.values(), inputs, strict=True)]
        return self.head(torch.cat(parts, dim=1))


# ---- what the run records: the models settings, and what the nets were built for ---------------------------


def nets_record(models: ModelsParams, dtypes: dict[str, str], base_dir: Path) -> dict[str, Any]:
    """The ``nets`` entry of a RunSpec: empty when every net is mst's own and nothing is renamed (the built-in
    path, whose checkpoints stay as they were), else the models settings and what they were built against."""
    if models.all_auto:
        return {}
    from dataclasses import asdict

    return {"models": asdict(models), "dtypes": dict(dtypes), "base_dir": str(base_dir.resolve())}


def models_of(record: dict[str, Any]) -> ModelsParams:
    return ModelsParams(**record["models"]) if record else ModelsParams()


def setting_for(table: dict[str, Any], key: str, modality: str | None = None) -> Any:
    """A per-net entry of a ``models`` mapping: by its key (``mm``, ``student``, ``cm:<m>``), a two-modality
    run's one CM teacher also by plain ``cm``."""
    if key in table:
        return table[key]
    if key.startswith("cm:") and "cm" in table:
        return table["cm"]
    if key == "cm" and modality is not None and f"cm:{modality}" in table:
        return table[f"cm:{modality}"]
    return None


def request_for(record: dict[str, Any], modality: str, shape: tuple[int, ...], weights_key: str, load: bool):
    models = models_of(record)
    weights = models.weights.get(weights_key)
    return EncoderRequest(
        modality=modality,
        shape=tuple(shape),
        dtype=record.get("dtypes", {}).get(modality, "float32"),
        weights=Path(weights).expanduser() if weights else None,
        pooling=models.pooling,
        load_weights=load,
        base_dir=Path(record.get("base_dir", ".")),
    )


def chosen_unimodal(
    record: dict[str, Any], choice: NetChoice, modality: str, shape, num_classes: int, weights_key: str, load: bool
) -> EncoderClassifier:
    setting = "models.student" if weights_key == "student" else f"models.encoders.{modality}"
    encoder = build_encoder(choice, request_for(record, modality, shape, weights_key, load), setting)
    return EncoderClassifier(encoder, num_classes)


def chosen_fusion(
    record: dict[str, Any], modalities: Sequence[str], shapes: dict[str, tuple[int, ...]], num_classes: int, load: bool
) -> FusionNet:
    models = models_of(record)
    encoders = {
        m: build_encoder(
            models.choice(m), request_for(record, m, shapes[m], m, load), f"models.encoders.{m}"
        )
        for m in modalities
    }
    return FusionNet(encoders, num_classes)


def mm_is_chosen(record: dict[str, Any], modalities: Sequence[str]) -> bool:
    models = models_of(record)
    return any(models.choice(m).kind != "auto" for m in modalities)


def configure(net: nn.Module, key: str, record: dict[str, Any], modality: str | None = None) -> list[str]:
    """Apply ``models.mask_layers`` / ``hint_layers`` / ``freeze`` for the net under ``key`` (resolved to full
    paths; an unknown path is a one-line error with the nearest names). Returns the log lines that say what was
    chosen. A net whose masks are named gets ``masks_named`` (S2 masks them all, whatever fit_masks.layers)."""
    if not record:
        return []
    models = models_of(record)
    notes = []
    named = setting_for(models.mask_layers, key, modality)
    if named is not None:
        if not named:
            raise UserError(f"models.mask_layers.{key}: name at least one layer")
        net.mask_layers = tuple(resolve_layer(net, p, f"models.mask_layers.{key}") for p in named)
        net.masks_named = True
    elif isinstance(net, (EncoderClassifier, FusionNet)) and key != "student":
        shown = ", ".join(display_name(net, f) for f in net.mask_layers)
        notes.append(f"{key}: MaskNets on {shown} (models.mask_layers.{key} names others)")
    hints = setting_for(models.hint_layers, key, modality)
    if hints is not None:
        net.hint_layers = tuple(resolve_layer(net, p, f"models.hint_layers.{key}") for p in hints)
    freeze = setting_for(models.freeze, key, modality)
    if freeze and freeze != "none":
        notes.append(_freeze(net, key, freeze))
    return notes


def _freeze(net: nn.Module, key: str, how: str) -> str:
    """Fix the net's encoder (``all``: everything but the classifier or fusion head) or everything up to a named
    layer; the fixed modules stay in eval mode (models/trio.ModalNet.train), so their BatchNorm statistics are
    not updated either."""
    head = {getattr(net, "classifier", "")} | ({"fc1", "fc2", "fc3"} if isinstance(net, ThreeLinearHead) else set())
    if how == "all":
        names = [n for n, _ in net.named_parameters() if n.split(".")[0] not in head]
        what = "all but its classifier"
    else:
        full = resolve_layer(net, how, f"models.freeze.{key}")
        names = parameters_up_to(net, full)
        what = f"up to {display_name(net, full)}"
    frozen = set(names)
    net.frozen_parameters = tuple(sorted(frozen))
    keep_frozen(net)
    net.frozen_modules = tuple(
        name for name, m in net.named_modules()
        if name and list(m.parameters(recurse=False))
        and all(f"{name}.{p}" in frozen for p, _ in m.named_parameters(recurse=False))
    )
    return f"{key}: {len(frozen)} of {len(list(net.parameters()))} weight tensors fixed ({what})"


def keep_frozen(net: nn.Module) -> None:
    """Fix again what ``models.freeze`` fixed (after a stage made the whole net trainable)."""
    frozen = set(getattr(net, "frozen_parameters", ()))
    for name, parameter in net.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)


def chosen_for_student(record: dict[str, Any]) -> NetChoice:
    return parse_net_choice("models.student", models_of(record).student)
