"""The one list of distillation methods: settings validation, ``mst methods``, ``mst compare`` and the benchmark
all read it. A new method is one module in ``methods/baselines/`` with a ``DistillMethod`` subclass and one entry
here.

The list names each class by module path and is imported lazily, so reading it (``mst params``, validating
``distill.method``) does not import torch. ``tests/test_method_registry.py`` checks that every entry loads, is a
``DistillMethod`` whose ``name`` is its key, and that bench/matrix.yaml lists exactly the comparison methods.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mstcli.errors import UserError

if TYPE_CHECKING:
    from mstcli.methods.base import DistillContext, DistillMethod

NO_TEACHER = ""  # fixed_teacher of the student alone: it learns from nobody


@dataclass(frozen=True)
class MethodEntry:
    name: str
    display: str  # the row name in `mst compare`
    target: str  # "module:Class"
    role: Literal["mst", "baseline", "alone"]
    fixed_teacher: str | None = None  # None: the teacher is distill.teacher (mm or cm)
    # whether the method trains a copy of its teacher (a per-epoch cost no bank can remove) or keeps it frozen
    teacher_training: Literal["frozen", "trained", "none"] = "frozen"

    def load(self) -> type[DistillMethod]:
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)


_B = "mstcli.methods.baselines"
#: in the order of the paper's table (docs/method.md §5.2): the student alone, its baselines, then our extras, then MST
ENTRIES: tuple[MethodEntry, ...] = (
    MethodEntry("none", "Student w/o KD", f"{_B}.none:StudentAlone", "alone", NO_TEACHER, "none"),
    MethodEntry("kd", "KD", f"{_B}.kd:HintonKD", "baseline"),
    MethodEntry("mlld", "MLLD", f"{_B}.mlld:MultiLevelLogitKD", "baseline"),
    MethodEntry("fitnet", "FitNets", f"{_B}.fitnet:FitNet", "baseline"),
    MethodEntry("ofa", "OFA", f"{_B}.ofa:OneForAll", "baseline"),
    MethodEntry("rkd", "RKD", f"{_B}.rkd:RelationalKD", "baseline"),
    MethodEntry("crd", "CRD", f"{_B}.crd:ContrastiveRD", "baseline"),
    MethodEntry("dml", "DML", f"{_B}.dml:DeepMutualLearning", "baseline", teacher_training="trained"),
    MethodEntry(
        "mgdfr", "MGDFR", f"{_B}.mgdfr:ModalityGeneralDecisiveFeatures", "baseline", teacher_training="trained"
    ),
    MethodEntry("c2kd", "C2KD", f"{_B}.c2kd:CustomizedCrossModalKD", "baseline", teacher_training="trained"),
    MethodEntry("dkd", "DKD", f"{_B}.dkd:DecoupledKD", "baseline"),
    MethodEntry("dist", "DIST", f"{_B}.dist:DistillationFromStrongerTeacher", "baseline"),
    MethodEntry("pkt", "PKT", f"{_B}.pkt:ProbabilisticKT", "baseline"),
    MethodEntry("mst", "MST-Distill", "mstcli.methods.mst.dynamic_distillation:MSTDistill", "mst", "mm+cm"),
)
_BY_NAME = {e.name: e for e in ENTRIES}


def method_names() -> tuple[str, ...]:
    return tuple(_BY_NAME)


def comparison_methods() -> tuple[str, ...]:
    """The methods the benchmark runs with each teacher (MST-Distill and the student alone have their own runs)."""
    return tuple(e.name for e in ENTRIES if e.role == "baseline")


def entry(name: str) -> MethodEntry:
    """The entry of ``name``; an unknown name is the user's ``distill.method`` setting."""
    if name not in _BY_NAME:
        raise UserError(f"distill.method must be one of {', '.join(_BY_NAME)}, got {name!r}")
    return _BY_NAME[name]


def method_class(name: str) -> type[DistillMethod]:
    return entry(name).load()


def build_method(name: str, context: DistillContext) -> DistillMethod:
    return method_class(name)(context)
