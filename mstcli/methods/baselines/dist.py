"""DIST, distillation from a stronger teacher (Huang, You, Wang, Qian and Xu, NeurIPS 2022).

Exact probability matching is relaxed to matching relations: with Y = softmax(Z / tau),

- inter-class: 1 - mean over samples of Pearson(Y_s[i, :], Y_t[i, :]) (the ranking of classes per sample);
- intra-class: 1 - mean over classes of Pearson(Y_s[:, j], Y_t[:, j]) (how a class's score varies over the batch).

loss = CE + tau^2 (beta inter + gamma intra) with the paper's main (ImageNet) setting tau = 1, beta = gamma = 1;
its CIFAR-100 runs weight the terms differently. With tau = 1 the tau^2 factor of the authors' release changes
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mstcli.engine import distributed
from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.baselines.teachers import FrozenTeacher

EPS = 1e-8


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)


def dist_terms(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(inter-class, intra-class) relation losses, each times tau^2."""
    y_s, y_t = F.softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1)
    inter = 1 - pearson_rows(y_s, y_t).mean()
    intra = 1 - pearson_rows(y_s.T, y_t.T).mean()
    return temperature**2 * inter, temperature**2 * intra


@dataclass(frozen=True)
class DISTConstants:
    temperature: float
    beta: float  # inter-class weight
    gamma: float  # intra-class weight


_DIST_PAPER = DISTConstants(temperature=1.0, beta=1.0, gamma=1.0)  # the paper's ImageNet setting


class DistillationFromStrongerTeacher(DistillMethod):
    name = "dist"
    CONSTANT_SETS = {"reference": _DIST_PAPER, "paper": _DIST_PAPER}  # no reference script

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.teacher = FrozenTeacher(context)

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        target = self.teacher(batch)
        ce = F.cross_entropy(student_logits, batch.labels)
        c = self.constants
        # the intra-class relation is over the batch: the global batch under torchrun
        inter, intra = dist_terms(
            distributed.global_batch(student_logits), distributed.global_batch(target), c.temperature
        )
        total = ce + c.beta * inter + c.gamma * intra
        return total, {"ce": ce.detach(), "inter": inter.detach(), "intra": intra.detach()}
