"""MST-Distill's S3 (docs/method.md §2.4): a GateNet on the student's logits routes each sample to its top-k
specialized teachers; loss = w_task CE + w_kl KD(chosen) + w_lb load balancing.

The reference code's quirks are the defaults, each with a switch in ``distill``:
``compose`` (cumulative masks), ``gate_signal`` (the router learns from load balancing only),
``lb_scale`` (the balancing KL divided by E) and ``decay`` (weights decayed from the end of epoch 0).
``gate_input: features`` (not in the reference) routes on the student's penultimate features instead of its
logits: ten logits say little about *why* a sample is hard, the features say more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mstcli.config import DistillParams
from mstcli.engine import distributed
from mstcli.engine.bank import rows_of
from mstcli.engine.runtime import CompiledOrEager
from mstcli.engine.splits import Split
from mstcli.errors import UserError
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.losses import kd_per_sample
from mstcli.methods.mst.experts import SpecializedTeachers
from mstcli.methods.mst.losses import chosen_kd, load_balance_cv, load_balance_kl
from mstcli.methods.mst.router import GateNet
from mstcli.methods.tasks import task_kind
from mstcli.models.taps import PENULTIMATE, FeatureTap, penultimate_size
from mstcli.models.trio import RunSpec


def decayed(schedule: str, epoch: int, every: int) -> bool:
    """Whether a weight is decayed after epoch ``epoch`` (0-based) on an ``every``-epoch rhythm."""
    if schedule == "reference":
        return epoch % every == 0  # the reference decays after epoch 0 already
    if schedule == "shifted":
        return (epoch + 1) % every == 0
    return False


@dataclass(frozen=True)
class RouterSettings:
    """The settings ``s3_terms`` reads, fixed for a run (a compiled step is specialised on them once)."""

    k: int
    temperature: float
    weighted: bool
    lb_mode: str
    divide_by_experts: bool
    # the run's task kind's CE and per-sample KD (methods/tasks.py: per labelled pixel / per-pixel mean if dense)
    ce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
    kd_per_sample: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] = kd_per_sample


def s3_terms(
    gate_net: GateNet,
    signal: torch.Tensor,
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    table: torch.Tensor,
    rows: torch.Tensor,
    settings: RouterSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """S3's loss terms of a batch: (CE, the routed KD, the load balancing, the chosen experts B x k).

    ``table`` holds the experts' logits, E x N x C, and ``rows`` the batch's rows in it (the expert bank and the
    batch's split rows, or this batch's experts and 0..B-1). The gate probabilities weight the KD only with
    ``gate_signal: weighted``; in the reference they only pick the experts. No side effects, and the loss
    weights (which decay) stay outside, so that it can be compiled once for the whole run.
    """
    gate = gate_net(signal)
    top = gate.topk(settings.k, dim=1)
    weights = top.values / top.values.sum(dim=1, keepdim=True) if settings.weighted else None
    chosen = table[top.indices, rows[:, None]]
    distill = chosen_kd(student_logits, chosen, settings.temperature, weights, settings.kd_per_sample)
    whole = distributed.global_batch(gate)  # the router's mean over the global batch under torchrun
    if settings.lb_mode == "kl":
        balance = load_balance_kl(whole, divide_by_experts=settings.divide_by_experts)
    else:
        balance = load_balance_cv(whole)
    return settings.ce(student_logits, labels), distill, balance, top.indices


def expert_teachers(spec: RunSpec, experts: str) -> list[str]:
    """The keys of the teachers whose specialized teachers S3 routes over (``distill.experts``), in the run's
    order: every teacher (``all``), the MM teacher (``mm``), every CM teacher (``cm``, one or M - 1 of them) or one
    named CM teacher (``cm:<modality>``; with two modalities that is ``cm``). A CM teacher the run lacks is a
    one-line error, worded as for ``distill.teacher``."""
    if experts == "all":
        return list(spec.teacher_keys)
    if experts in ("mm", "cm"):
        return [key for key in spec.teacher_keys if key.split(":")[0] == experts]
    return [spec.teacher_key(experts, setting="distill.experts")]


class MSTDistill(DistillMethod):
    name = "mst"
    continues_stage1 = True
    needs_masks = True

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        settings = self.settings
        if context.masks is None:
            raise UserError("--method mst needs the MaskNets of `mst fit-masks` (models/<run>/masks.pt)")
        keys = expert_teachers(context.trio.spec, settings.experts)
        # what the results file as the teacher: the group, or the one CM teacher by its key (cm with two modalities)
        self.expert_group = settings.experts if settings.experts in ("all", "mm", "cm") else keys[0]
        teachers = {key: context.trio.teacher(key) for key in keys}
        self.experts = SpecializedTeachers(teachers, context.masks, settings.compose)
        self.experts.to(context.device)
        if settings.k > len(self.experts):
            raise UserError(f"distill.k={settings.k} but there are only {len(self.experts)} specialized teachers")
        # E x N_train x C, computed once (see engine/bank.py); None recomputes every batch as the reference does
        # batches of the training size: the MaskNets' attention maps grow with the batch (B x D x D per head)
        train = context.splits["train"]
        self.kind = task_kind(context.trio.spec.task)  # per-sample or per-pixel (methods/tasks.py)
        self.bank = self.kind.expert_bank(self.experts, train, context) if settings.bank else None
        self.kind.check_gate_input(settings.gate_input)  # the penultimate features are per sample
        if settings.gate_input == "features":  # the features of the forward that made the logits, not detached
            self.tap: FeatureTap | None = FeatureTap(context.student.net, penultimate=True)
            width = penultimate_size(context.student.net)
        else:
            self.tap, width = None, context.trio.spec.num_classes
        self.gate = self.kind.gate(width, len(self.experts)).to(context.device)
        self.w_kl, self.w_lb = settings.w_kl, settings.w_lb
        self.counts = torch.zeros(len(self.experts), device=context.device)
        self._ones = torch.ones(settings.batch_size * settings.k, device=context.device)  # the counts' increments
        # S3's own step (GateNet, top-k, the chosen experts' KD, balancing, CE): a few dozen small kernels, compiled
        # into a few with common.compile (measured on the 2-core CPU: 0.50 -> 0.32 ms a step after 26 s of compiling)
        self.router = RouterSettings(
            settings.k,
            settings.temperature,
            settings.gate_signal == "weighted",
            settings.lb_mode,
            settings.lb_scale == "per_expert",
            self.kind.ce,
            self.kind.kd_per_sample,
        )
        self.terms = CompiledOrEager(s3_terms, context.compile, "S3 step")

    @property
    def expert_names(self) -> list[str]:
        return self.experts.names

    @classmethod
    def check_run(cls, settings: DistillParams, spec: RunSpec) -> None:
        expert_teachers(spec, settings.experts)

    def teacher_label(self, fixed_teacher: str | None) -> str | None:
        """``mm+cm`` as the registry files MST-Distill, or the one group it was limited to (``distill.experts``)."""
        return super().teacher_label(fixed_teacher) if self.expert_group == "all" else self.expert_group

    def extra_modules(self) -> list[nn.Module]:
        return [self.gate]

    def frozen_modules(self) -> list[nn.Module]:
        return [self.experts]

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        s = self.settings
        signal = self.tap[PENULTIMATE] if self.tap is not None else student_logits
        if self.bank is not None:  # only the chosen experts' rows are read, B x k x C, in one gather
            table, rows = self.bank, rows_of(batch)
        else:
            table = self.experts(batch.inputs)
            rows = torch.arange(len(student_logits), device=table.device)
        ce, distill, balance, chosen = self.terms(
            self.gate, signal, student_logits, batch.labels, table, rows, self.router
        )
        chosen = chosen.flatten()  # index_add_, not bincount: bincount's output size costs a GPU sync
        if len(self._ones) < len(chosen):
            self._ones = torch.ones(len(chosen), device=self.counts.device)
        self.counts.index_add_(0, chosen, self._ones[: len(chosen)])
        total = s.w_task * ce + self.w_kl * distill + self.w_lb * balance
        return total, {"ce": ce.detach(), "distill": distill.detach(), "balance": balance.detach()}

    def end_epoch(self, epoch: int) -> dict[str, float]:
        counts = distributed.sum_over_ranks(self.counts)  # every process's choices
        frequency = (counts / counts.sum().clamp_min(1)).tolist()
        stats = {"w_kl": self.w_kl, "w_lb": self.w_lb, **dict(zip(self.expert_names, frequency, strict=True))}
        if decayed(self.settings.decay, epoch, 10):
            self.w_lb *= 0.9
        if decayed(self.settings.decay, epoch, 30):
            self.w_kl *= 0.5
        self.counts.zero_()
        return stats

    def state_dict(self) -> dict[str, Any]:
        """The decayed loss weights and this epoch's routing counts."""
        return {"w_kl": self.w_kl, "w_lb": self.w_lb, "counts": self.counts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w_kl, self.w_lb = float(state["w_kl"]), float(state["w_lb"])
        self.counts = state["counts"].to(self.counts.device).clone()
