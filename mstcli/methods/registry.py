"""name -> distillation method. A new method is one module with a class and one line here."""

from __future__ import annotations

from typing import Callable

from mstcli.errors import UserError
from mstcli.methods.base import DistillContext, DistillMethod
from mstcli.methods.baselines.c2kd import CustomizedCrossModalKD
from mstcli.methods.baselines.crd import ContrastiveRD
from mstcli.methods.baselines.dist import DistillationFromStrongerTeacher
from mstcli.methods.baselines.dkd import DecoupledKD
from mstcli.methods.baselines.dml import DeepMutualLearning
from mstcli.methods.baselines.fitnet import FitNet
from mstcli.methods.baselines.kd import HintonKD
from mstcli.methods.baselines.mgdfr import ModalityGeneralDecisiveFeatures
from mstcli.methods.baselines.mlld import MultiLevelLogitKD
from mstcli.methods.mst.dynamic_distillation import MSTDistill
from mstcli.methods.baselines.none import StudentAlone
from mstcli.methods.baselines.ofa import OneForAll
from mstcli.methods.baselines.pkt import ProbabilisticKT
from mstcli.methods.baselines.rkd import RelationalKD

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
