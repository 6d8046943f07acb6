"""``<module>:<factory>``: the user's own code. The contract (docs/own-networks.md):

* ``module`` is a Python file ``<module>.py`` beside params.yaml (dots for a package folder), or an importable
  module; ``factory`` is a callable in it;
* it is called as ``factory(shape, modality)``, or ``factory(shape)`` or ``factory()`` when it takes fewer
  parameters; ``shape`` is the stored per-sample shape (a tuple), ``modality`` its name;
* it returns an ``nn.Module`` that maps a float batch (B, *shape) to (B, D), (B, T, D) or (B, C, H, W); the last
  two are averaged to (B, D). Pixels stored as uint8 arrive scaled to [0, 1]; token ids as int64.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path

from torch import nn

from mstcli.errors import UserError
from mstcli.models.encoders.base import Encoder, EncoderRequest, measure_width


def _module(name: str, base_dir: Path, setting: str):
    path = base_dir.joinpath(*name.split(".")).with_suffix(".py")
    try:
        if path.is_file():
            spec = importlib.util.spec_from_file_location(f"mst_user_{name.replace('.', '_')}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name or path.name.startswith(str(exc.name)):
            raise UserError(f"{setting}: no module {name} ({path} not found, nor an installed module)") from None
        raise UserError(f"{setting}: importing {name} failed: {exc}") from None
    except Exception as exc:  # the user's module may raise anything while it is imported
        raise UserError(f"{setting}: importing {name} failed: {type(exc).__name__}: {exc}") from None


def call_factory(target: str, request: EncoderRequest, setting: str) -> nn.Module:
    name, _, attr = target.partition(":")
    module = _module(name, request.base_dir, setting)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"{setting}: {name} has no callable {attr}")
    try:
        positional = [
            p for p in inspect.signature(factory).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):
        positional = []
    takes = 2 if any(p.kind is p.VAR_POSITIONAL for p in positional) else min(len(positional), 2)
    args = (tuple(request.shape), request.modality)[:takes]
    try:
        net = factory(*args)
    except Exception as exc:  # the user's code may raise anything
        raise UserError(f"{setting}: {target}{args!r} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(net, nn.Module):
        raise UserError(f"{setting}: {target} returned {type(net).__name__}, not a torch nn.Module")
    return net


class FactoryEncoder(Encoder):
    def __init__(self, request: EncoderRequest, target: str, setting: str) -> None:
        super().__init__()
        self.backbone = call_factory(target, request, setting)
        try:
            self.width = measure_width(self, request)
        except UserError:
            raise
        except Exception as exc:  # the user's forward may raise anything on the probe batch
            raise UserError(
                f"{setting}: {target}'s net fails on a batch of shape (2, {', '.join(map(str, request.shape))}):"
                f" {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
