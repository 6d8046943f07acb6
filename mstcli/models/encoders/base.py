"""The encoder contract: stored tensor in, (B, D) out; ``backbone`` is the user's module, where layer paths point."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class EncoderRequest:
    """What a builder is told: the modality, the stored per-sample shape and dtype, where weights come from.

    ``load_weights`` is False when the nets are rebuilt from a checkpoint, whose state replaces any weights (an
    ``hf:`` folder then gives only its config, a weights file is not read). ``base_dir`` is where a factory's file
    is looked for (the folder of params.yaml)."""

    modality: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    weights: Path | None = None
    pooling: str = "auto"
    load_weights: bool = True
    base_dir: Path = Path(".")


def pool_to_vector(out: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> channel means, (B, T, D) -> token means, (B, D) as is: every encoder ends in one vector."""
    if out.dim() == 4:
        return out.mean(dim=(2, 3))
    if out.dim() == 3:
        return out.mean(dim=1)
    return out.flatten(1)


def as_unit_float(x: torch.Tensor) -> torch.Tensor:
    """Stored uint8 pixels -> float in [0, 1]; other dtypes unchanged (float features, token ids)."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class Encoder(nn.Module):
    """Base of the chosen encoders: ``adapt`` turns the stored tensor into what ``backbone`` takes, ``encode``
    runs it and pools to (B, D). ``width`` (D) is measured by one probe forward at build time."""

    width: int
    backbone: nn.Module

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        return as_unit_float(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return pool_to_vector(first_tensor(self.backbone(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(self.adapt(x))


def first_tensor(out) -> torch.Tensor:
    """The tensor a module returned: itself, the first of a tuple, or a model output's first field."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out:
        return first_tensor(out[0])
    if hasattr(out, "to_tuple"):
        return first_tensor(out.to_tuple())
    raise TypeError(f"the net returned {type(out).__name__}, not a tensor")


def probe_input(request: EncoderRequest, batch: int = 2) -> torch.Tensor:
    """A dummy batch of the stored form: zeros, or for token ids (int64, 2 x L) ids 0 with a full attention mask."""
    dtype = getattr(torch, request.dtype)
    x = torch.zeros(batch, *request.shape, dtype=dtype)
    if dtype == torch.int64 and len(request.shape) == 2 and request.shape[0] == 2:
        x[:, 1] = 1
    return x


@torch.no_grad()
def measure_width(encoder: Encoder, request: EncoderRequest) -> int:
    was = encoder.training
    encoder.eval()
    try:
        width = int(encoder(probe_input(request)).shape[1])
    finally:
        encoder.train(was)
    return width
