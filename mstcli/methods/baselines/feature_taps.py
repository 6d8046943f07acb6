"""What the feature-based methods (FitNet, RKD, PKT, CRD, OFA) share: hooks on the student and on its frozen
teacher, and the shapes of the hooked features, measured once before training so that regressors, embedding
heads and projectors can be sized for any student/teacher pair (MM or CM teacher, image or audio student).
"""

from __future__ import annotations

import torch
from torch import nn

from mstcli.methods.base import DistillContext
from mstcli.models.taps import FeatureTap


class TappedPair:
    """The student and the teacher named by ``distill.teacher``, both hooked on their ``mask_layers`` (``layers``)
    and/or their penultimate features. ``teach(inputs)`` runs the frozen teacher under no_grad and returns its
    logits; its features are then in ``teacher_tap``. The student's features land in ``student_tap`` whenever the
    S3 loop runs the student, so a method's ``loss`` reads the features of the forward that gave its logits."""

    def __init__(self, context: DistillContext, layers: bool, penultimate: bool) -> None:
        self.teacher = context.trio.teacher(context.settings.teacher)
        student_net, teacher_net = context.student.net, self.teacher.net
        self.student_layers = tuple(student_net.mask_layers) if layers else ()
        self.teacher_layers = tuple(teacher_net.mask_layers) if layers else ()
        self.student_tap = FeatureTap(student_net, self.student_layers, penultimate)
        self.teacher_tap = FeatureTap(teacher_net, self.teacher_layers, penultimate)
        self.student_shapes, self.teacher_shapes = self._probe(context)

    def teach(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher(inputs)

    def _probe(self, context: DistillContext) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
        """Per-sample shapes of every hooked feature, from a two-row forward of each net (no training effect:
        the nets have no batch statistics)."""
        train = context.splits["train"]
        probe = train.batch(torch.arange(min(2, len(train)), device=context.device))
        with torch.no_grad():
            context.student(probe.inputs)
            self.teacher(probe.inputs)
        student = {name: tuple(x.shape[1:]) for name, x in self.student_tap.features.items()}
        teacher = {name: tuple(x.shape[1:]) for name, x in self.teacher_tap.features.items()}
        return student, teacher


def as_vector(feature: torch.Tensor) -> torch.Tensor:
    """A feature map (B x C x H x W) averaged over space, or any other feature flattened: B x width."""
    return feature.mean(dim=(2, 3)) if feature.dim() == 4 else feature.flatten(1)


def vector_width(shape: tuple[int, ...]) -> int:
    """Width of ``as_vector`` of a feature of per-sample ``shape``."""
    return shape[0] if len(shape) == 3 else int(torch.tensor(shape).prod())


def l2_normalized_embedding(width: int, dim: int) -> nn.Module:
    """Linear map to ``dim`` followed by L2 normalization (CRD's embedding heads)."""
    return nn.Sequential(nn.Linear(width, dim), _L2Normalize())


class _L2Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, dim=1)
