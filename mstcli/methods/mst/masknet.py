"""The MaskNet plug-in (docs/method.md §2.3): a learned soft channel mask applied to a frozen layer's output.

A forward hook replaces the layer's output by ``mask * output``; the teacher's weights are never touched
and removing the hook restores the teacher exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from mstcli.errors import UserError
from mstcli.models.taps import layer_tensor, with_layer_tensor


def hidden_size(dim: int, heads: int, factor: int) -> int:
    """h = floor(D / (factor * heads)) * heads (the reference's rule), at least one unit per head."""
    return max(heads, (dim // (factor * heads)) * heads)


class SpatialReduction(nn.Module):
    """B x D x H x W -> B x D: depthwise 3x3 (stride 2), pointwise 1x1, BatchNorm, ReLU, global mean."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.pointwise(self.depthwise(x)))).mean(dim=(2, 3))


class ChannelAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameters (same state_dict keys and maths).

    The reference's head width (h / heads, e.g. 297 / 3 = 99) is rarely a multiple of 8, which sends
    ``nn.MultiheadAttention`` to the slow, memory-hungry math kernel on the GPU. Here q, k and v are zero-padded
    to a multiple of 8 before ``scaled_dot_product_attention`` with the original scale: the padded channels add
    nothing to q.k and their outputs are dropped, so the result is the same and the fused kernels apply.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        width = dim // self.heads
        q, k, v = (
            t.view(batch, tokens, self.heads, width).transpose(1, 2)
            for t in F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        )
        pad = -width % 8
        if pad:
            q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=width**-0.5)[..., :width]
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class MaskNet(nn.Module):
    """mask = sigmoid(Linear(MHSA(Projector(v)))) with one token per feature channel; output = mask * z.

    ``spatial`` MaskNets read feature maps (their mask is broadcast over H and W); the others read vectors.
    A 1x1 map is squeezed to a vector first, and the squeezed tensor is returned (as the reference does).
    ``tokens`` MaskNets read token sequences (B, T, D): the mask is computed from the tokens' mean and is one
    channel mask over D shared by every token (not in the reference, whose nets have no token layers).
    """

    def __init__(
        self, dim: int, heads: int = 3, hidden_dim_factor: int = 2, spatial: bool = False, tokens: bool = False
    ) -> None:
        super().__init__()
        self.dim = dim
        self.tokens = tokens
        self.hidden = hidden_size(dim, heads, hidden_dim_factor)
        self.reduce = SpatialReduction(dim) if spatial else None
        self.projector = nn.Linear(dim, dim * self.hidden)
        self.attention = ChannelAttention(self.hidden, heads)
        self.score = nn.Linear(self.hidden, 1)

    def mask(self, z: torch.Tensor) -> torch.Tensor:
        v = self.reduce(z) if self.reduce is not None else z.mean(dim=1) if self.tokens else z
        tokens = self.projector(v).view(len(v), self.dim, self.hidden)
        attended = self.attention(tokens)
        return torch.sigmoid(self.score(attended).squeeze(-1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 4 and z.shape[-2:] == (1, 1):
            z = z.flatten(1)
        m = self.mask(z)
        if self.tokens:
            return m[:, None, :] * z
        return m[:, :, None, None] * z if z.dim() == 4 else m * z


def layer_output_shapes(model: nn.Module, layers: Sequence[str], *inputs: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """The per-sample output shape of each named layer, from one probe forward."""
    shapes: dict[str, tuple[int, ...]] = {}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(layer_tensor(out).shape[1:]))
        )
        for name in layers
    ]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def masknet_for(shape: tuple[int, ...], heads: int, hidden_dim_factor: int, where: str = "") -> MaskNet:
    """A MaskNet for a layer whose per-sample output has ``shape``: (D,) a vector mask, (C, H, W) a channel mask
    over the map, (T, D) a channel mask over D shared by the tokens; other ranks are refused in one line."""
    if len(shape) == 2:
        return MaskNet(shape[1], heads, hidden_dim_factor, tokens=True)
    if len(shape) not in (1, 3):
        raise UserError(
            f"{where or 'a masked layer'} gives outputs of shape (B, {', '.join(map(str, shape))}): MaskNets take"
            " (B, D), (B, T, D) or (B, C, H, W); name another layer in models.mask_layers"
        )
    spatial = len(shape) == 3 and shape[1:] != (1, 1)
    return MaskNet(shape[0], heads, hidden_dim_factor, spatial)


@contextmanager
def plugged(model: nn.Module, masks: Sequence[tuple[str, MaskNet]]) -> Iterator[nn.Module]:
    """Run ``model`` with each (layer name, MaskNet) active; all hooks are removed on exit."""
    modules = dict(model.named_modules())
    handles = [
        modules[layer].register_forward_hook(
            lambda _m, _i, out, net=net: with_layer_tensor(out, net(layer_tensor(out)))
        )
        for layer, net in masks
    ]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
