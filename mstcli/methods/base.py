"""The contract every distillation method keeps (in the spirit of mdistiller's ``Distiller``).

A method is a class that turns one batch and the student's logits into a loss. The S3 stage owns everything
else: the student, the optimizer, the epoch loop, validation, selection, checkpoints and resume. What the stage
needs to know about a method is declared here as class attributes, so that the stage never asks for a method by
name:

- ``name``: the registry name (``methods/registry.py`` is the one list of names);
- ``continues_stage1``: with ``distill.student_init=auto`` the student continues from S1 (MST) or starts fresh
  (the reference's baselines);
- ``needs_masks``: the stage loads the S2 MaskNets (``masks.pt``) and hands them over in the context;
- the teacher a result is filed under comes from the registry (``mm+cm`` for MST, none for the student alone),
  else from ``distill.teacher``.

Trainable parts besides the student (a router, regressors, a co-trained teacher) are ``extra_modules``; the stage
optimizes them with the student and saves them for resume. Parts that must not learn, or must stop learning at
some point (MGDFR's teacher after its ranking), are ``frozen_modules``: ``train(mode)`` keeps them in eval mode, so
BatchNorm layers neither normalise with batch statistics nor update their running statistics. A method's own
state besides its modules (decayed loss weights, memory banks, routing counts) goes through ``state_dict`` /
``load_state_dict`` so that a resumed run continues exactly.

A comparison method's numeric constants (loss weights, embedding sizes, its optimizer where the reference uses
another one) are data, not code: ``CONSTANT_SETS`` maps a set name (``reference``, ``paper``) to an instance of
the method's frozen constants dataclass; ``self.constants`` is the set ``distill.baseline_settings`` with
``distill.constants.<name>`` applied (``methods/constants.py``), and every result records it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from mstcli.config import DistillParams
from mstcli.engine.optimizers import adam
from mstcli.engine.splits import Split
from mstcli.models.trio import ModalNet, RunSpec, Trio

LossTerms = dict[str, torch.Tensor | float]


@dataclass
class DistillContext:
    """Everything a method may need to set itself up."""

    settings: DistillParams
    trio: Trio  # the stage-1 nets, teachers frozen
    student: ModalNet  # the student being trained (hook it for features); trio.student is the stage-1 one
    splits: dict[str, Split]  # train and val; a batch's ``rows`` index into its split
    device: torch.device
    masks: list | None = None  # [(MaskSlot, MaskNet)] from masks.pt, loaded by the stage for ``needs_masks``
    compile: bool = False  # common.compile: a method may compile its own per-batch step too
    memory_mb: float = 4096  # common.memory_mb: the largest dense bank kept in memory (methods/tasks.py)


class DistillMethod(ABC):
    name: ClassVar[str]
    continues_stage1: ClassVar[bool] = False
    needs_masks: ClassVar[bool] = False
    takes_all_teachers: ClassVar[bool] = False  # accepts distill.teacher=all (several teachers at once)
    CONSTANT_SETS: ClassVar[dict[str, Any]] = {}  # set name -> the method's constants (a frozen dataclass)

    def __init__(self, context: DistillContext) -> None:
        self.settings = context.settings
        self.constants: Any = self.constants_for(context.settings)

    @classmethod  # noqa: B027 - an optional hook: most methods name nothing of the run
    def check_run(cls, settings: DistillParams, spec: RunSpec) -> None:
        """Refuse in one line settings that name something run ``spec`` lacks (a teacher, a modality). The stage
        calls it before anything slow (masks, splits, banks), so that a typo costs no waiting."""

    @classmethod
    def constants_for(cls, settings: DistillParams) -> Any:
        """The constants this method runs with under ``settings`` (None for a method without constants)."""
        from mstcli.methods.constants import resolve_constants

        if not cls.CONSTANT_SETS:
            return None
        overrides = settings.constants.get(cls.name, {}) if settings.constants else {}
        return resolve_constants(cls.name, cls.CONSTANT_SETS, settings.baseline_settings, overrides)

    def make_optimizer(self, parameters: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """The optimizer of the student and the extra modules: Adam at ``distill.lr`` (as every reference script
        but C2KD's and MGDFR's, which override this when their set asks for SGD)."""
        return adam(parameters, lr)

    def teacher_label(self, fixed_teacher: str | None) -> str | None:
        """What the checkpoint and metrics.json record as the teacher, given the registry's ``fixed_teacher`` of
        this method (the stage looks it up: the registry knows the methods, a method does not know the registry)."""
        return self.settings.teacher if fixed_teacher is None else (fixed_teacher or None)

    def extra_modules(self) -> list[nn.Module]:
        """Trainable modules besides the student; optimized with it and saved for resume."""
        return []

    def frozen_modules(self) -> list[nn.Module]:
        """Modules that must stay in eval mode while the student trains."""
        return []

    def train(self, mode: bool = True) -> None:
        """Put the trainable parts in ``mode`` and keep the frozen ones in eval mode."""
        for module in self.extra_modules():
            module.train(mode)
        for module in self.frozen_modules():
            module.eval()

    def start_epoch(self, epoch: int) -> None:  # noqa: B027 - an optional hook: most methods have no phases
        """Called before the batches of epoch ``epoch`` (0-based): phase switches keyed on the epoch go here, so
        that a resumed run is in the right phase without replaying earlier epochs."""

    def selectable(self, epoch: int) -> bool:
        """Whether the student after epoch ``epoch`` may be kept (the epoch of lowest validation CE among the
        selectable ones is). A method whose last phase trains with another loss than its first (MGDFR) keeps its
        student from the last phase only: validation CE does not compare students across a change of loss."""
        return True

    @abstractmethod
    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        """The training loss of one batch and its named terms (for the curves; tensors are averaged on the
        device, which spares a GPU sync per step)."""

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Called after each epoch (0-based); returns per-epoch statistics (all of them go into the curves; keys
        with "@" are routing frequencies of specialized teachers and also go to routing.tsv)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The method's own state besides its modules, as tensors and plain values."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional: the default state is empty
        """Restore what ``state_dict`` returned."""
