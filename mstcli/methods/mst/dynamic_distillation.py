"""MST-Distill's S3 (method.md §2.4): a GateNet on the student's logits routes each sample to its top-k
specialized teachers; loss = w_task CE + w_kl KD(chosen) + w_lb load balancing.

The reference code's quirks are the defaults, each with a switch in ``distill``:
``compose`` (cumulative masks), ``gate_signal`` (the router learns from load balancing only),
``lb_scale`` (the balancing KL divided by E) and ``decay`` (weights decayed from the end of epoch 0).
``gate_input: features`` (not in the reference) routes on the student's penultimate features instead of its
logits: ten logits say little about *why* a sample is hard, the features say more.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mstcli.engine import distributed
from mstcli.engine.bank import rows_of
from mstcli.engine.splits import Split
from mstcli.errors import UserError
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.mst.losses import load_balance_cv, load_balance_kl, routed_kd
from mstcli.methods.mst.experts import SpecializedTeachers
from mstcli.methods.tasks import task_kind
from mstcli.models.taps import PENULTIMATE, FeatureTap, penultimate_size


def decayed(schedule: str, epoch: int, every: int) -> bool:
    """Whether a weight is decayed after epoch ``epoch`` (0-based) on an ``every``-epoch rhythm."""
    if schedule == "reference":
        return epoch % every == 0  # the reference decays after epoch 0 already
    if schedule == "shifted":
        return (epoch + 1) % every == 0
    return False


class MSTDistill(DistillMethod):
    name = "mst"
    continues_stage1 = True
    needs_masks = True

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        settings = self.settings
        if context.masks is None:
            raise UserError("--method mst needs the MaskNets of `mst fit-masks` (models/<run>/masks.pt)")
        teachers = {key: context.trio.teacher(key) for key in ("mm", "cm")}
        self.experts = SpecializedTeachers(teachers, context.masks, settings.compose)
        self.experts.to(context.device)
        if settings.k > len(self.experts):
            raise UserError(f"distill.k={settings.k} but there are only {len(self.experts)} specialized teachers")
        # E x N_train x C, computed once (see engine/bank.py); None recomputes every batch as the reference does
        # batches of the training size: the MaskNets' attention maps grow with the batch (B x D x D per head)
        train = context.splits["train"]
        self.kind = task_kind(context.trio.spec.task)  # per-sample or per-pixel (methods/tasks.py)
        self.bank = self.kind.expert_bank(self.experts, train, context) if settings.bank else None
        if settings.gate_input == "features" and self.kind.dense:
            raise UserError("distill.gate_input=features is for per-sample logits; dense data sets use logits")
        if settings.gate_input == "features":  # the features of the forward that made the logits, not detached
            self.tap: FeatureTap | None = FeatureTap(context.student.net, penultimate=True)
            width = penultimate_size(context.student.net)
        else:
            self.tap, width = None, context.trio.spec.num_classes
        self.gate = self.kind.gate(width, len(self.experts)).to(context.device)
        self.w_kl, self.w_lb = settings.w_kl, settings.w_lb
        self.counts = torch.zeros(len(self.experts), device=context.device)

    @property
    def expert_names(self) -> list[str]:
        return self.experts.names

    def extra_modules(self) -> list[nn.Module]:
        return [self.gate]

    def frozen_modules(self) -> list[nn.Module]:
        return [self.experts]

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        s = self.settings
        expert_logits = self.bank[:, rows_of(batch)] if self.bank is not None else self.experts(batch.inputs)
        gate = self.gate(self.tap[PENULTIMATE] if self.tap is not None else student_logits)
        top = gate.topk(s.k, dim=1)
        weights = top.values / top.values.sum(dim=1, keepdim=True) if s.gate_signal == "weighted" else None
        distill = routed_kd(student_logits, expert_logits, top.indices, s.temperature, weights, self.kind.kd_per_sample)
        whole = distributed.global_batch(gate)  # the router's mean over the global batch under torchrun
        if s.lb_mode == "kl":
            balance = load_balance_kl(whole, divide_by_experts=s.lb_scale == "per_expert")
        else:
            balance = load_balance_cv(whole)
        ce = self.kind.ce(student_logits, batch.labels)
        chosen = top.indices.flatten()  # index_add_, not bincount: bincount's output size costs a GPU sync
        self.counts.index_add_(0, chosen, torch.ones_like(chosen, dtype=self.counts.dtype))
        total = s.w_task * ce + self.w_kl * distill + self.w_lb * balance
        return total, {"ce": ce.detach(), "distill": distill.detach(), "balance": balance.detach()}

    def end_epoch(self, epoch: int) -> dict[str, float]:
        counts = distributed.sum_over_ranks(self.counts)  # every process's choices
        frequency = (counts / counts.sum().clamp_min(1)).tolist()
        stats = {"w_kl": self.w_kl, "w_lb": self.w_lb, **dict(zip(self.expert_names, frequency))}
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
