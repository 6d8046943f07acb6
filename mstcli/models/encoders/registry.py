"""One builder per kind of ``models`` setting (config.NET_KINDS): the one place that maps a setting to a net."""

from __future__ import annotations

from collections.abc import Callable

from mstcli.config import NetChoice
from mstcli.models.encoders.base import Encoder, EncoderRequest

Builder = Callable[[NetChoice, EncoderRequest, str], Encoder]  # (choice, request, setting name) -> encoder


def _auto(choice: NetChoice, request: EncoderRequest, setting: str) -> Encoder:
    from mstcli.models.encoders.auto_encoder import AutoEncoder

    return AutoEncoder(request)


def _torchvision(choice: NetChoice, request: EncoderRequest, setting: str) -> Encoder:
    from mstcli.models.encoders.torchvision_encoder import TorchvisionEncoder

    return TorchvisionEncoder(request, choice.target)


def _hf(choice: NetChoice, request: EncoderRequest, setting: str) -> Encoder:
    from mstcli.models.encoders.hf_encoder import HFEncoder

    return HFEncoder(request, choice.target)


def _factory(choice: NetChoice, request: EncoderRequest, setting: str) -> Encoder:
    from mstcli.models.encoders.factory_encoder import FactoryEncoder

    return FactoryEncoder(request, choice.target, setting)


BUILDERS: dict[str, Builder] = {"auto": _auto, "torchvision": _torchvision, "hf": _hf, "factory": _factory}


def build_encoder(choice: NetChoice, request: EncoderRequest, setting: str) -> Encoder:
    return BUILDERS[choice.kind](choice, request, setting)
