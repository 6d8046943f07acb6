"""C2KD, customized cross-modal knowledge distillation (Huo, Xu, Guo, Wang and Guo, CVPR 2024).

Teacher and student learn together (bidirectional distillation), and each talks to the other through a proxy:
a small head on the net's intermediate features that produces logits. Per batch:

- CE of the student and CE of the teacher on their own logits;
- each net and its own proxy distil into each other (KL both ways, the target detached), so the proxy carries the
  host's knowledge and the host receives what its proxy learned from the other modality;
- on-the-fly selection (OFSD): per sample, Kendall's rank correlation between the two proxies' logits; only
  samples with tau_K > 0 (the reference's ``krc`` threshold) are distilled, and only their non-target classes
  (the target class is where the modality gap shows), both ways between the proxies.

All KL terms use distill.temperature and weight 1. The teacher is a trainable copy of the stage-1 MM or CM net
(``--teacher``; the reference's default is CM), and the student starts from scratch. Simplifications, documented
honestly: the proxies read the first hint layer (models.hint_layers, else ``mask_layers[0]``) of each
net (globally average-pooled when it is a feature map)
through a two-layer MLP, a choice of ours (the paper says only "a learnable proxy" on intermediate features);
the mean of the selected samples' non-target KL is used (0 when none is selected).

Constants: the ``reference`` set trains with the reference script's SGD (lr 0.01, momentum 0.9) instead of the
S3 loop's Adam at ``distill.lr``; the ``paper`` set uses that Adam (the optimizer is not in what we read of the
paper); both use Kendall threshold 0 (the reference's ``krc``) and 128 hidden proxy units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mstcli.engine import distributed
from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.baselines.dkd import non_target_kd_per_sample
from mstcli.methods.baselines.teachers import trainable_copy
from mstcli.methods.losses import kd_loss
from mstcli.models.taps import FeatureTap, hint_layers


def kendall_tau(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Kendall's rank correlation (tau-a) of each row of ``a`` with the same row of ``b``: over all class pairs
    (i < j), (concordant - discordant) / number of pairs."""
    classes = a.shape[1]
    sign_a = torch.sign(a.unsqueeze(2) - a.unsqueeze(1))
    sign_b = torch.sign(b.unsqueeze(2) - b.unsqueeze(1))
    upper = torch.triu(torch.ones(classes, classes, dtype=torch.bool, device=a.device), diagonal=1)
    return (sign_a * sign_b)[:, upper].sum(1) / upper.sum()


def selected_non_target_kd(
    trained: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean non-target-class KD (target detached) over the samples in ``keep``; 0 when none is kept. Under
    torchrun the mean is over the kept samples of the global batch."""
    values = non_target_kd_per_sample(trained[keep], target[keep].detach(), labels[keep], temperature)
    kept = distributed.global_sum(keep.sum().to(trained.dtype))
    return distributed.global_sum(values.sum() + trained.sum() * 0.0) / kept.clamp_min(1)


def c2kd_terms(
    student: torch.Tensor,
    teacher: torch.Tensor,
    student_proxy: torch.Tensor,
    teacher_proxy: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    threshold: float = 0.0,
) -> dict[str, torch.Tensor]:
    """The C2KD loss terms of one batch (their sum is the loss) and the fraction of selected samples."""
    keep = kendall_tau(student_proxy.detach(), teacher_proxy.detach()) > threshold
    return {
        "ce": F.cross_entropy(student, labels) + F.cross_entropy(teacher, labels),
        "proxy": kd_loss(student_proxy, student.detach(), temperature)
        + kd_loss(student, student_proxy.detach(), temperature)
        + kd_loss(teacher_proxy, teacher.detach(), temperature)
        + kd_loss(teacher, teacher_proxy.detach(), temperature),
        "cross": selected_non_target_kd(student_proxy, teacher_proxy, labels, keep, temperature)
        + selected_non_target_kd(teacher_proxy, student_proxy, labels, keep, temperature),
        "selected": keep.float().mean(),
    }


class Proxy(nn.Module):
    """Intermediate features -> logits: global average pooling of a feature map, then a two-layer MLP."""

    def __init__(self, width: int, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() > 2:
            features = features.flatten(2).mean(dim=2)
        return self.head(features)


@dataclass(frozen=True)
class C2KDConstants:
    krc_threshold: float  # samples whose proxies' Kendall tau exceeds this are distilled
    proxy_hidden: int
    optimizer: Literal["sgd", "adam"]  # sgd: sgd_lr and momentum; adam: distill.lr
    sgd_lr: float
    momentum: float


class CustomizedCrossModalKD(DistillMethod):
    name = "c2kd"
    CONSTANT_SETS = {
        "reference": C2KDConstants(0.0, 128, optimizer="sgd", sgd_lr=0.01, momentum=0.9),
        "paper": C2KDConstants(0.0, 128, optimizer="adam", sgd_lr=0.01, momentum=0.9),
    }

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.temperature = context.settings.temperature
        self.teacher = trainable_copy(context.trio.teacher(context.settings.teacher))
        self.student_layer = hint_layers(context.student.net)[0]
        self.teacher_layer = hint_layers(self.teacher.net)[0]
        self.student_tap = FeatureTap(context.student.net, [self.student_layer], penultimate=False)
        self.teacher_tap = FeatureTap(self.teacher.net, [self.teacher_layer], penultimate=False)
        classes = context.trio.spec.num_classes
        self.student_proxy, self.teacher_proxy = self._proxies(context, classes)

    def _proxies(self, context: DistillContext, classes: int) -> tuple[Proxy, Proxy]:
        """Both proxies, sized by the features of one train sample."""
        sample = context.splits["train"].batch(torch.arange(1, device=context.device))
        proxies = []
        for net, tap, layer in (
            (context.student, self.student_tap, self.student_layer),
            (self.teacher, self.teacher_tap, self.teacher_layer),
        ):
            with torch.no_grad():
                net(sample.inputs)
            proxies.append(Proxy(tap[layer].shape[1], classes, self.constants.proxy_hidden).to(context.device))
        return proxies[0], proxies[1]

    def extra_modules(self) -> list[nn.Module]:
        return [self.teacher, self.student_proxy, self.teacher_proxy]

    def make_optimizer(self, parameters: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        c = self.constants
        if c.optimizer == "sgd":
            return torch.optim.SGD(parameters, lr=c.sgd_lr, momentum=c.momentum)
        return super().make_optimizer(parameters, lr)

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        student_features = self.student_tap[self.student_layer]  # from the forward that made student_logits
        teacher_logits = self.teacher(batch.inputs)
        terms = c2kd_terms(
            student_logits,
            teacher_logits,
            self.student_proxy(student_features),
            self.teacher_proxy(self.teacher_tap[self.teacher_layer]),
            batch.labels,
            self.temperature,
            self.constants.krc_threshold,
        )
        selected = terms.pop("selected")
        total = sum(terms.values())
        return total, {**{k: v.detach() for k, v in terms.items()}, "selected": selected.detach()}
