"""name -> distillation method. A new method is one module with a class and one line here."""

from __future__ import annotations

from typing import Callable

from mstcli.errors import UserError
from mstcli.methods.base import DistillContext, DistillMethod
from mstcli.methods.crd import ContrastiveRD
from mstcli.methods.fitnet import FitNet
from mstcli.methods.kd import HintonKD
from mstcli.methods.mst import MSTDistill
from mstcli.methods.none import StudentAlone
from mstcli.methods.ofa import OneForAll
from mstcli.methods.pkt import ProbabilisticKT
from mstcli.methods.rkd import RelationalKD

METHODS: dict[str, Callable[[DistillContext], DistillMethod]] = {
    "mst": MSTDistill,
    "none": StudentAlone,
    "kd": HintonKD,
    "fitnet": FitNet,
    "rkd": RelationalKD,
    "pkt": ProbabilisticKT,
    "crd": ContrastiveRD,
    "ofa": OneForAll,
}


def build_method(name: str, context: DistillContext) -> DistillMethod:
    if name not in METHODS:
        raise UserError(f"unknown distillation method '{name}' (known: {', '.join(METHODS)})")
    return METHODS[name](context)
