"""Weights from a local state_dict file, refused with a count of what does not fit when it is another net's."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from mstcli.errors import UserError


def read_state_dict(path: Path, setting: str) -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{setting}: {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        raise UserError(f"{setting}: {path} is not a torch state_dict file ({str(exc).splitlines()[0]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{setting}: {path} holds no state_dict (a mapping of names to tensors)")
    return state


def load_matching(net: nn.Module, path: Path, setting: str, optional: Iterable[str] = ()) -> None:
    """``path``'s weights into ``net``; keys starting with an ``optional`` prefix (the classification head the
    encoder drops) may be missing. Anything else missing, unexpected or of another shape is one line naming how
    many keys and the first few, so a file for another architecture is told apart from a damaged one."""
    state = read_state_dict(path, setting)
    own = net.state_dict()
    optional = tuple(optional)
    missing = [k for k in own if k not in state and not k.startswith(optional)]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or reshaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)):
            if keys:
                parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        raise UserError(f"{setting}: {path} does not fit {type(net).__name__}: keys {'; '.join(parts)}")
    net.load_state_dict({k: v for k, v in state.items()}, strict=False)
