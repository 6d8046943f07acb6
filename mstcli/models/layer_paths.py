"""Layers of a net by dotted path: what users name in ``models.mask_layers`` / ``hint_layers`` / ``freeze``.

A user writes paths as the net they chose has them: ``layer3`` for a torchvision ResNet student or CM teacher,
``image.layer3`` for the image branch of the MM teacher, ``fc1`` for the fusion head. Inside mst those nets sit
under ``encoder.backbone.`` (student, CM) or ``encoders.<modality>.backbone.`` (MM); :func:`resolve_layer` maps a
user's path to the full one and refuses an unknown one with the nearest names.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from torch import nn

from mstcli.errors import UserError


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def short_names(net: nn.Module) -> dict[str, str]:
    """User-facing name -> full module path, for every module of ``net``."""
    names: dict[str, str] = {}
    aliases: Sequence[tuple[str, str]] = getattr(net, "path_aliases", ())
    for full, _ in net.named_modules():
        if not full:
            continue
        names.setdefault(full, full)
        for short_prefix, full_prefix in aliases:
            if full.startswith(full_prefix + "."):
                names[short_prefix + full[len(full_prefix) + 1 :]] = full
    return names


def resolve_layer(net: nn.Module, path: str, setting: str) -> str:
    """The full module path of ``path`` in ``net``, or a one-line error naming the nearest paths."""
    names = short_names(net)
    if path in names:
        return names[path]
    near = difflib.get_close_matches(path, list(names), n=3, cutoff=0.5)
    hint = f"; nearest: {', '.join(near)}" if near else ""
    raise UserError(f"{setting}: {type(net).__name__} has no layer '{path}'{hint}")


def display_name(net: nn.Module, full: str) -> str:
    """The shortest user-facing name of a full module path (for logs)."""
    names = [short for short, target in short_names(net).items() if target == full]
    return min(names, key=len) if names else full


def last_blocks(backbone: nn.Module, count: int = 2, skip: Sequence[str] = ()) -> list[str]:
    """The last ``count`` blocks of a backbone: the children of its largest repeated-block container (an
    ``nn.Sequential`` or ``nn.ModuleList`` with at least two children that have weights: a ResNet stage, ViT's
    encoder layers, BERT's ``encoder.layer``, MobileNet's ``features``), else its own last children with weights.
    ``skip`` names subtrees that are not the encoder's (a dropped classification head)."""
    best, best_size = "", -1
    for name, module in backbone.named_modules():
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        if isinstance(module, (nn.Sequential, nn.ModuleList)):
            weighted = [c for c in module.children() if parameter_count(c)]
            size = parameter_count(module)
            if len(weighted) >= 2 and size > best_size:
                best, best_size = name, size
    container = backbone.get_submodule(best) if best_size >= 0 else backbone
    prefix = f"{best}." if best_size >= 0 and best else ""
    children = [
        f"{prefix}{n}" for n, c in container.named_children()
        if parameter_count(c) and not any(f"{prefix}{n}" == s for s in skip)
    ]
    return children[-count:]


def parameters_up_to(net: nn.Module, full: str) -> list[str]:
    """Names of the parameters of ``net`` registered up to the last one inside module ``full`` (registration order
    follows the forward in the nets people freeze partly: ResNets, ViTs, BERT, MobileNets)."""
    names = [name for name, _ in net.named_parameters()]
    inside = [i for i, name in enumerate(names) if name.startswith(full + ".")]
    if not inside:
        raise KeyError(full)
    return names[: inside[-1] + 1]
