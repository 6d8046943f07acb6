"""name -> distillation method. A new method is one module with a class and one line here."""

from __future__ import annotations

from typing import Callable

from mstcli.errors import UserError
from mstcli.methods.base import DistillContext, DistillMethod
from mstcli.methods.c2kd import CustomizedCrossModalKD
from mstcli.methods.crd import ContrastiveRD
from mstcli.methods.dist import DistillationFromStrongerTeacher
from mstcli.methods.dkd import DecoupledKD
from mstcli.methods.dml import DeepMutualLearning
from mstcli.methods.fitnet import FitNet
from mstcli.methods.kd import HintonKD
from mstcli.methods.mgdfr import ModalityGeneralDecisiveFeatures
from mstcli.methods.mlld import MultiLevelLogitKD
from mstcli.methods.mst import MSTDistill
from mstcli.methods.none import StudentAlone
from mstcli.methods.ofa import OneForAll
from mstcli.methods.pkt import ProbabilisticKT
from mstcli.methods.rkd import RelationalKD

METHODS: dict[str, Callable[[DistillContext], DistillMethod]] = {
    "mst": MSTDistill,
    "none": StudentAlone,
    "kd": HintonKD,
    "dkd": DecoupledKD,
    "mlld": MultiLevelLogitKD,
    "dist": DistillationFromStrongerTeacher,
    "dml": DeepMutualLearning,
    "c2kd": CustomizedCrossModalKD,
    "mgdfr": ModalityGeneralDecisiveFeatures,
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
