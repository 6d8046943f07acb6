"""MGDFR, modality-general decisive feature ranking (Xue, Gao, Ren and Zhao, "The modality focusing hypothesis",
ICLR 2023, Algorithm 1), as the MST-Distill reference runs it (docs/method.md §4). Our reading, in three steps:

1. co-training (the first half of the epochs; the reference runs 100 + 100): a trainable copy of the stage-1
   teacher (the reference's default is the CM net) and the student learn together, each with its CE, plus the MSE
   between their logits, which pulls both towards what the two modalities share;
2. ranking, once, at the start of the second half: each unit of the teacher's penultimate features (the
   classifier's input) is permuted across up to 2048 training samples, 10 times; its salience is the mean
   increase of the MSE between the teacher's and the student's logits. Modality-general decisive units are the
   ones whose permutation breaks the agreement most;
3. KD (the second half): the 75 % least salient units are frozen to their batch mean (they carry no per-sample
   information any more) in the teacher, now fixed, and the student learns by (1 - alpha) CE + alpha tau^2 KL
   from its logits, alpha = 0.5, tau = distill.temperature.

Interpretation notes: the same student is carried through both halves (the reference's scripts may start a fresh
one; the epoch budget is the same); for a linear classifier the effect of permuting one unit on the logits is
exact in closed form, so all units are scored at once; "channel" of a flattened feature map means one unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mstcli.engine import distributed
from mstcli.engine.splits import Split, seeded_generator
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.baselines.teachers import trainable_copy
from mstcli.methods.losses import kd_loss
from mstcli.models.taps import PENULTIMATE, FeatureTap


def cotraining_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE of both plus the MSE between their logits (no detaching: both move towards each other)."""
    return F.cross_entropy(student, labels) + F.cross_entropy(teacher, labels) + F.mse_loss(student, teacher)


def permutation_salience(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    student_logits: torch.Tensor,
    permutations: list[torch.Tensor],
) -> torch.Tensor:
    """Per unit d of ``features`` (N x D): the mean over ``permutations`` of the increase of
    MSE(features @ W^T + b, student_logits) when column d alone is permuted.

    With a linear classifier, permuting column d adds delta_d(n) = f[perm(n), d] - f[n, d] times W[:, d] to the
    logits of sample n, so the increase is (2 sum_n delta_d(n) (R W)[n, d] + sum_n delta_d(n)^2 ||W[:, d]||^2) / (N C)
    with R = the unpermuted residual."""
    residual = features @ weight.T + bias - student_logits  # N x C
    projected = residual @ weight  # N x D: (R W)[n, d]
    column_norm = weight.pow(2).sum(0)  # D
    n, c = student_logits.shape
    total = torch.zeros(features.shape[1], dtype=features.dtype, device=features.device)
    for perm in permutations:
        delta = features[perm] - features
        total += (2 * (delta * projected).sum(0) + delta.pow(2).sum(0) * column_norm) / (n * c)
    return total / len(permutations)


def freeze_to_batch_mean(features: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Units not in ``keep`` (a D-long bool mask) replaced by their mean over the batch."""
    return torch.where(keep, features, distributed.global_batch(features).mean(dim=0, keepdim=True))


@dataclass(frozen=True)
class MGDFRConstants:
    cotrain_fraction: float  # share of the epochs spent co-training (the reference: 100 of 100 + 100)
    keep_fraction: float  # the salient units kept; the others are frozen to their batch mean
    repeats: int  # permutations per unit
    samples: int  # training samples the ranking permutes over
    alpha: float  # KD phase: (1 - alpha) CE + alpha tau^2 KL


# the reference's values are the paper's; its co-training SGD (lr 1e-3, momentum 0.9) is not reproduced: one
# optimizer (distill.lr, Adam) runs through both phases here
_MGDFR = MGDFRConstants(cotrain_fraction=0.5, keep_fraction=0.25, repeats=10, samples=2048, alpha=0.5)


class ModalityGeneralDecisiveFeatures(DistillMethod):
    name = "mgdfr"
    CONSTANT_SETS = {"reference": _MGDFR, "paper": _MGDFR}

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.context = context
        self.temperature = context.settings.temperature
        self.teacher = trainable_copy(context.trio.teacher(context.settings.teacher))
        self.cotrain_epochs = math.floor(self.constants.cotrain_fraction * context.settings.epochs)
        self.cotraining = True
        self.keep: torch.Tensor | None = None  # the teacher's salient penultimate units, once ranked
        self._freeze_hook = None

    def extra_modules(self) -> list[nn.Module]:
        return [self.teacher]

    def frozen_modules(self) -> list[nn.Module]:
        """After the ranking the teacher is fixed: in eval mode, so its BatchNorm statistics stay as they are."""
        return [self.teacher] if self.keep is not None else []

    def selectable(self, epoch: int) -> bool:
        """The student is kept from the KD phase, as the reference's is: the co-training phase's students look
        better by validation CE only because the KD phase's tau^2-weighted soft targets raise the CE at equal
        accuracy (AV-Digits audio, MM teacher: kept at the co-training's end, 67.4 % validation and 65.42 % test,
        while the KD phase reached 74.1 % validation)."""
        return epoch >= self.cotrain_epochs

    def start_epoch(self, epoch: int) -> None:
        self.cotraining = epoch < self.cotrain_epochs
        if not self.cotraining and self.keep is None:
            self._fix_teacher(self._rank())

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        with torch.set_grad_enabled(self.cotraining):
            teacher_logits = self.teacher(batch.inputs)
        ce = F.cross_entropy(student_logits, batch.labels)
        kd = kd_loss(student_logits, teacher_logits.detach(), self.temperature)
        if self.cotraining:
            total = cotraining_loss(student_logits, teacher_logits, batch.labels)
        else:
            total = (1 - self.constants.alpha) * ce + self.constants.alpha * kd
        mse = F.mse_loss(student_logits.detach(), teacher_logits.detach())
        # every term in both phases (the one not trained on is a monitor), so the curves keep one set of columns
        return total, {"ce": ce.detach(), "mse": mse, "kd": kd.detach()}

    @torch.no_grad()
    def _rank(self) -> torch.Tensor:
        """Score the teacher's penultimate units; returns the mask of the most salient quarter."""
        context, teacher = self.context, self.teacher
        teacher.eval()
        train = context.splits["train"]
        generator = seeded_generator(0)
        rows = torch.randperm(len(train), generator=generator)[: self.constants.samples].to(context.device)
        sample = train.batch(rows)
        tap = FeatureTap(teacher.net)
        teacher(sample.inputs)
        features = tap[PENULTIMATE]
        tap.close()
        was_training = context.student.training
        student_logits = context.student.eval()(sample.inputs)
        context.student.train(was_training)
        classifier = dict(teacher.net.named_modules())[teacher.net.classifier]
        perms = [
            torch.randperm(len(rows), generator=generator).to(context.device) for _ in range(self.constants.repeats)
        ]
        salience = permutation_salience(features, classifier.weight, classifier.bias, student_logits, perms)
        kept = max(1, round(self.constants.keep_fraction * len(salience)))
        keep = torch.zeros_like(salience, dtype=torch.bool)
        keep[salience.topk(kept).indices] = True
        return keep

    def _fix_teacher(self, keep: torch.Tensor) -> None:
        """Freeze the teacher and replace its non-salient units by their batch mean from now on."""
        self.keep = keep
        self.teacher.eval().requires_grad_(False)
        classifier = dict(self.teacher.net.named_modules())[self.teacher.net.classifier]
        self._freeze_hook = classifier.register_forward_pre_hook(
            lambda _m, args: (freeze_to_batch_mean(args[0], self.keep), *args[1:])
        )

    def state_dict(self) -> dict[str, Any]:
        return {"keep": self.keep}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["keep"] is not None and self.keep is None:
            self._fix_teacher(state["keep"].to(self.context.device))
