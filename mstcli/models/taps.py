"""Read a net's intermediate features without changing its code: forward hooks that keep the last output.

Feature-based distillation methods (FitNet, RKD, CRD, ...) need the penultimate features or the hint layers of
the student and of a teacher. Every registered net names them: ``classifier`` is its last linear layer (the
penultimate features are that layer's input) and ``mask_layers`` are the layers S2 masks (usable as hints).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

PENULTIMATE = "penultimate"


def layer_tensor(out):
    """The tensor a hooked layer produced: its output, or the first item when it returns a tuple (a transformers
    layer may return (hidden states, attentions, ...)): masks and hints act on that tensor."""
    return out[0] if isinstance(out, (tuple, list)) else out


def with_layer_tensor(out, tensor: torch.Tensor):
    """``out`` with its tensor replaced by ``tensor`` (what a replacing forward hook returns), in the layer's own
    shape: a MaskNet squeezes a 1 x 1 map to a vector (as the reference's does), which the layers after it in a
    torchvision net (an average pool) would not take."""
    original = layer_tensor(out)
    if tensor.shape != original.shape and tensor.numel() == original.numel():
        tensor = tensor.reshape(original.shape)
    if isinstance(out, tuple):
        return (tensor, *out[1:])
    if isinstance(out, list):
        return [tensor, *out[1:]]
    return tensor


def supports_tail(net: nn.Module, layers: Sequence[str]) -> bool:
    """Whether ``net.tail`` can continue the forward from each of ``layers``: only from the layers its class
    names (mst's own nets; a user's renamed layers go through hooks)."""
    own = getattr(type(net), "mask_layers", ())
    return hasattr(net, "tail") and set(layers) <= set(own)


def hint_layers(net: nn.Module) -> tuple[str, ...]:
    """The layers the feature methods tap: ``models.hint_layers`` where given, else the net's mask layers."""
    return tuple(getattr(net, "hint_layers", None) or net.mask_layers)


class FeatureTap:
    """Keeps, after every forward of ``net``, the outputs of ``layers`` and (key ``"penultimate"``) the input of
    its classifier. Gradients flow through the kept tensors, so a loss on them trains the net. ``close()``
    removes the hooks."""

    def __init__(self, net: nn.Module, layers: Sequence[str] = (), penultimate: bool = True) -> None:
        self.features: dict[str, torch.Tensor] = {}
        modules = dict(net.named_modules())
        missing = [name for name in layers if name not in modules]
        if missing:
            raise KeyError(f"{type(net).__name__} has no layer {', '.join(missing)}")
        self._handles = [
            modules[name].register_forward_hook(
                lambda _m, _i, out, name=name: self.features.__setitem__(name, layer_tensor(out))
            )
            for name in layers
        ]
        if penultimate:
            head = modules[net.classifier]
            self._handles.append(
                head.register_forward_pre_hook(
                    lambda _m, args: self.features.__setitem__(PENULTIMATE, args[0].flatten(1))
                )
            )

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.features[name]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def penultimate_size(net: nn.Module) -> int:
    """Width of the penultimate features (the classifier's input)."""
    return dict(net.named_modules())[net.classifier].in_features
