"""DKD, decoupled knowledge distillation (Zhao et al., CVPR 2022).

Hinton's KD splits into a target-class part (TCKD: KL between the binary distributions [p_target, 1 - p_target])
and a non-target-class part (NCKD: KL between the distributions over the other classes, renormalized). DKD
weights them independently: loss = CE + warmup * (alpha TCKD + beta NCKD), both KL terms times tau^2 as in KD.
The paper uses alpha = 1, beta = 8 (CIFAR-100; beta is data-set dependent: the ``beta`` constant), tau = 4
and a linear warm-up of the distillation term over the first 20 of 240 epochs; here the warm-up covers the same
fraction (1/12) of this run's epochs, at least one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.baselines.teachers import FrozenTeacher


def _binary_and_rest(logits: torch.Tensor, labels: torch.Tensor, temperature: float):
    """(log [p_target, 1 - p_target], log-softmax over the C - 1 non-target classes), at ``temperature``.

    The non-target classes are gathered (not masked by a large negative logit as in common code), so the
    terms are exact and free of infinities."""
    scaled = logits / temperature
    batch, classes = scaled.shape
    target = F.one_hot(labels, classes).bool()
    rest = scaled[~target].view(batch, classes - 1)
    log_all = torch.logsumexp(scaled, dim=1)
    binary = torch.stack([scaled[target] - log_all, torch.logsumexp(rest, dim=1) - log_all], dim=1)
    return binary, F.log_softmax(rest, dim=1)


def dkd_terms(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each tau^2 * KL(teacher || student), averaged over the batch."""
    b_s, n_s = _binary_and_rest(student, labels, temperature)
    b_t, n_t = _binary_and_rest(teacher, labels, temperature)
    tckd = (b_t.exp() * (b_t - b_s)).sum(1).mean()
    nckd = (n_t.exp() * (n_t - n_s)).sum(1).mean()
    return temperature**2 * tckd, temperature**2 * nckd


def non_target_kd_per_sample(
    trained: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """tau^2 * KL between the renormalized non-target-class distributions, per sample (NCKD; also C2KD's term)."""
    _, n_trained = _binary_and_rest(trained, labels, temperature)
    _, n_target = _binary_and_rest(target, labels, temperature)
    return temperature**2 * (n_target.exp() * (n_target - n_trained)).sum(1)


@dataclass(frozen=True)
class DKDConstants:
    alpha: float  # TCKD weight
    beta: float  # NCKD weight (data-set dependent in the paper: 8 on CIFAR-100, 0.5 on ImageNet)
    warmup_fraction: float  # share of the epochs over which the distillation weight rises linearly to 1


_DKD_PAPER = DKDConstants(alpha=1.0, beta=8.0, warmup_fraction=20 / 240)  # CIFAR-100: 20 warm-up epochs of 240


class DecoupledKD(DistillMethod):
    name = "dkd"
    # no reference script: both sets are the paper's
    CONSTANT_SETS = {"reference": _DKD_PAPER, "paper": _DKD_PAPER}

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.teacher = FrozenTeacher(context)
        self.warmup_epochs = max(1, math.ceil(self.constants.warmup_fraction * context.settings.epochs))
        self.epoch = 0

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        target = self.teacher(batch)
        ce = F.cross_entropy(student_logits, batch.labels)
        tckd, nckd = dkd_terms(student_logits, target, batch.labels, self.settings.temperature)
        warmup = min((self.epoch + 1) / self.warmup_epochs, 1.0)
        total = ce + warmup * (self.constants.alpha * tckd + self.constants.beta * nckd)
        return total, {"ce": ce.detach(), "tckd": tckd.detach(), "nckd": nckd.detach()}

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
