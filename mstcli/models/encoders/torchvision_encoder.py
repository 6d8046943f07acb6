"""``torchvision:<builder>``: any classification builder of torchvision.models, its last linear layer removed.

Pixels stored as uint8 are scaled to [0, 1] and normalized with ImageNet's mean and std (every torchvision
classification weight uses them); float inputs (log-mels, features) go in as stored. A one-channel input is
repeated to the three channels the first convolution wants, which is what a grayscale image means to an RGB net.
"""

from __future__ import annotations

import difflib
import inspect

import torch
from torch import nn

from mstcli.errors import UserError
from mstcli.models.encoders.base import Encoder, EncoderRequest, measure_width, pool_to_vector
from mstcli.models.encoders.weights import load_matching

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_NAMES = ("fc", "classifier", "heads", "head")


def classification_builders() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _builder_options(name: str, request: EncoderRequest) -> dict:
    """Builder keywords that let a net take the stored size: ViTs are built for the image side; nets with
    auxiliary classifiers are built without them (one output per forward)."""
    import torchvision

    params = inspect.signature(torchvision.models.get_model_builder(name)).parameters
    options = {}
    kwargs_ok = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if name.startswith("vit_") and len(request.shape) == 3:
        options["image_size"] = int(request.shape[-1])
    if name in ("googlenet", "inception_v3") and kwargs_ok:
        options.update(aux_logits=False, init_weights=True)
    return options


def _drop_last_linear(model: nn.Module) -> str:
    """Replace the classification head's last linear layer by Identity; returns the head's attribute name."""
    for attr in HEAD_NAMES:
        head = getattr(model, attr, None)
        if head is None:
            continue
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Identity())
            return attr
        linears = [name for name, m in head.named_modules() if isinstance(m, nn.Linear)]
        if linears:
            parent_name, _, leaf = linears[-1].rpartition(".")
            parent = head.get_submodule(parent_name) if parent_name else head
            setattr(parent, leaf, nn.Identity())
            return attr
        setattr(model, attr, nn.Identity())  # a convolutional head (SqueezeNet): its maps are pooled instead
        return attr
    raise UserError(f"{type(model).__name__}: no classification head found ({', '.join(HEAD_NAMES)})")


def _input_channels(model: nn.Module) -> int | None:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else None


class TorchvisionEncoder(Encoder):
    def __init__(self, request: EncoderRequest, builder: str) -> None:
        super().__init__()
        import torchvision

        known = classification_builders()
        if builder not in known:
            near = difflib.get_close_matches(builder, known, n=1)
            hint = f" (nearest: {near[0]})" if near else ""
            raise UserError(f"torchvision:{builder}: no such torchvision classification builder{hint}")
        try:
            model = torchvision.models.get_model(builder, weights=None, **_builder_options(builder, request))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise UserError(f"torchvision:{builder}: cannot build it ({str(exc).splitlines()[0]})") from None
        if request.weights is not None and request.load_weights:
            load_matching(model, request.weights, f"models.weights for torchvision:{builder}", HEAD_NAMES)
        self.head_name = _drop_last_linear(model)
        self.backbone = model
        self.expand_to = _input_channels(model) if len(request.shape) == 3 else None
        if self.expand_to and request.shape[0] not in (1, self.expand_to):
            raise UserError(
                f"torchvision:{builder} takes {self.expand_to} input channels;"
                f" {request.modality} has {request.shape[0]}"
            )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.width = measure_width(self, request)

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x.dtype == torch.uint8
        x = x.float() / 255.0 if pixels else x
        if x.dim() == 3:  # (B, H, W): one channel
            x = x.unsqueeze(1)
        if self.expand_to and x.dim() == 4 and x.shape[1] == 1 and self.expand_to != 1:
            x = x.expand(-1, self.expand_to, -1, -1)
        if pixels and x.shape[1] == 3:
            x = (x - self.mean) / self.std
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return pool_to_vector(self.backbone(x))
