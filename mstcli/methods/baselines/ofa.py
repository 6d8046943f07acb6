"""One-for-All KD (Hao et al., NeurIPS 2023): intermediate student stages learn the teacher's predictions through
projector branches into the logit space, with a loss that strengthens the target class.

Each of the student's ``mask_layers`` gets a trainable projector (maps: 1x1 conv to 128 channels, ReLU, global
average pooling, linear to the classes; vectors: linear to 128, ReLU, linear to the classes; the paper's branches
are a few stages of the student's own block type, too large for these nets). The OFA loss with teacher
probabilities p^t and student probabilities p^s at temperature 1 is, per sample,

    -[((1 + p^t_y)^eps - 1) log p^s_y + sum_{c != y} (p^t_c)^eps log p^s_c],   eps = 1.1,

i.e. the paper's -(1 + p^t_y)^eps log p^s_y target term with the plain CE (the "1" at eps = 1) kept as the
separate CE term, and the same exponent on the non-target classes (the form of the authors' release; at eps = 1
CE + OFA is CE plus the cross-entropy to the teacher, i.e. KD at temperature 1). loss = CE + sum of the OFA loss
over every branch and the final logits (weights 1, as the paper).
That is the ``paper`` constants set; the ``reference`` set (the MST-Distill reference script) averages the OFA
loss over the branches only and mixes with alpha = 0.5: (1 - alpha) CE + alpha mean over branches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.baselines.feature_taps import TappedPair, vector_width


def ofa_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """Mean over the batch of -sum_c [(p^t_c + y_c)^eps - y_c] log p^s_c, temperature 1 (y one-hot)."""
    target = F.one_hot(labels, student.shape[1]).to(student.dtype)
    weights = (F.softmax(teacher, dim=1) + target).pow(eps) - target
    return -(weights * F.log_softmax(student, dim=1)).sum(dim=1).mean()


def projector(shape: tuple[int, ...], num_classes: int, hidden: int = 128) -> nn.Module:
    """A branch from a feature of per-sample ``shape`` (C x H x W map or a vector) to class logits."""
    if len(shape) == 3:
        return nn.Sequential(
            nn.Conv2d(shape[0], hidden, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(hidden, num_classes),
        )
    return nn.Sequential(
        nn.Flatten(), nn.Linear(vector_width(shape), hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )


@dataclass(frozen=True)
class OFAConstants:
    ce_weight: float
    ofa_weight: float
    epsilon: float  # the target-class exponent
    with_final: bool  # the final logits also get the OFA loss (paper) or only the branches (reference)
    average: bool  # the OFA losses are averaged (reference) or summed (paper)


class OneForAll(DistillMethod):
    name = "ofa"
    CONSTANT_SETS = {
        "reference": OFAConstants(0.5, 0.5, epsilon=1.1, with_final=False, average=True),
        "paper": OFAConstants(1.0, 1.0, epsilon=1.1, with_final=True, average=False),
    }

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.pair = TappedPair(context, layers=True, penultimate=False)
        classes = context.trio.spec.num_classes
        self.branches = nn.ModuleDict(
            {
                name.replace(".", "_"): projector(self.pair.student_shapes[name], classes)
                for name in self.pair.student_layers
            }
        ).to(context.device)

    def extra_modules(self) -> list[nn.Module]:
        return [self.branches]

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        teacher_logits = self.pair.teach(batch)
        branch_logits = [
            self.branches[name.replace(".", "_")](self.pair.student_tap[name]) for name in self.pair.student_layers
        ]
        c = self.constants
        outputs = [*branch_logits, student_logits] if c.with_final else branch_logits
        ofa = sum(ofa_loss(z, teacher_logits, batch.labels, c.epsilon) for z in outputs)
        if c.average:
            ofa = ofa / len(outputs)
        ce = F.cross_entropy(student_logits, batch.labels)
        return c.ce_weight * ce + c.ofa_weight * ofa, {"ce": ce.detach(), "ofa": ofa.detach()}
