"""MLLD, multi-level logit distillation (Jin, Wang and Lin, CVPR 2023).

The student's softened predictions are aligned with the teacher's at three levels, each at several temperatures:

- instance: tau^2 KL(p_t || p_s) per sample, batch mean (Hinton KD);
- batch: the B x B Gram matrix of predictions, P P^T (how alike two samples look), sum of squared differences / B;
- class: the C x C correlation P^T P (which classes are predicted together), sum of squared differences / C.

The paper sums the three levels over the temperatures {2, 3, 4, 5, 6} and adds CE with weight 1. The MST-Distill
reference replaces both "/B" and "/C" by a mean over all entries (MSE, i.e. / B^2 and / C^2) and divides the
sum over temperatures by 5 and by 3, with (1 - alpha) CE + alpha MLLD, alpha = 0.5: the ``reference`` constants
set; the ``paper`` set is the paper's. The batch and class terms are not scaled by tau^2 (only the instance KL is,
as in the authors' release). Not done here: the paper's
prediction augmentation (weak and strong image augmentations of each input, which pre-extracted features do not
have) and the confidence masks that go with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from mstcli.engine import distributed
from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.baselines.teachers import FrozenTeacher
from mstcli.methods.losses import kd_loss

Correlation = Literal["paper", "mse"]


def _squared_difference(diff: torch.Tensor, size: int, correlation: Correlation) -> torch.Tensor:
    """The paper's ||diff||^2_F / size, or the reference's mean over all entries (MSE)."""
    return diff.pow(2).mean() if correlation == "mse" else diff.pow(2).sum() / size


def batch_alignment(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, correlation: Correlation = "paper"
) -> torch.Tensor:
    """||P_t P_t^T - P_s P_s^T||^2_F / B (or its mean over the B x B entries), P the softmax at ``temperature``."""
    p_s, p_t = F.softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1)
    diff = p_t @ p_t.T - p_s @ p_s.T
    return _squared_difference(diff, student.shape[0], correlation)


def class_alignment(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, correlation: Correlation = "paper"
) -> torch.Tensor:
    """||P_t^T P_t - P_s^T P_s||^2_F / C (or its mean over the C x C entries), P the softmax at ``temperature``."""
    p_s, p_t = F.softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1)
    diff = p_t.T @ p_t - p_s.T @ p_s
    return _squared_difference(diff, student.shape[1], correlation)


def mlld_terms(
    student: torch.Tensor, teacher: torch.Tensor, temperatures: tuple[float, ...], correlation: Correlation = "paper"
) -> dict[str, torch.Tensor]:
    """Instance, batch and class terms, each summed over ``temperatures``."""
    return {
        "instance": sum(kd_loss(student, teacher, t) for t in temperatures),
        "batch": sum(batch_alignment(student, teacher, t, correlation) for t in temperatures),
        "class": sum(class_alignment(student, teacher, t, correlation) for t in temperatures),
    }


@dataclass(frozen=True)
class MLLDConstants:
    temperatures: tuple[float, ...]
    ce_weight: float
    distill_weight: float  # weight of (instance + batch + class) / divisor
    divisor: float  # the reference divides the sum over temperatures by 5 and by 3
    correlation: Correlation  # paper: ||.||^2_F / B and / C; mse: mean over the entries (the reference)


_TEMPERATURES = (2.0, 3.0, 4.0, 5.0, 6.0)


class MultiLevelLogitKD(DistillMethod):
    name = "mlld"
    CONSTANT_SETS = {
        "reference": MLLDConstants(_TEMPERATURES, ce_weight=0.5, distill_weight=0.5, divisor=15.0, correlation="mse"),
        "paper": MLLDConstants(_TEMPERATURES, ce_weight=1.0, distill_weight=1.0, divisor=1.0, correlation="paper"),
    }

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.teacher = FrozenTeacher(context)

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        target = self.teacher(batch)
        ce = F.cross_entropy(student_logits, batch.labels)
        c = self.constants
        # batch and class relations over the global batch under torchrun (logits are small to gather)
        terms = mlld_terms(
            distributed.global_batch(student_logits), distributed.global_batch(target), c.temperatures, c.correlation
        )
        total = c.ce_weight * ce + c.distill_weight * sum(terms.values()) / c.divisor
        return total, {"ce": ce.detach(), **{k: v.detach() for k, v in terms.items()}}
