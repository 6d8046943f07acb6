"""What the feature-based methods (FitNet, RKD, PKT, CRD, OFA) share: hooks on the student and on its frozen
teacher, and the shapes of the hooked features, measured once before training so that regressors, embedding
heads and projectors can be sized for any student/teacher pair (MM or CM teacher, image or audio student).
"""

from __future__ import annotations

import torch
from torch import nn

from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext
from mstcli.models.taps import FeatureTap, hint_layers

LOGITS = "logits"


class TappedPair:
    """The student and the teacher named by ``distill.teacher``, both hooked on their hint layers
(``layers``: models.hint_layers, else their mask layers)
    and/or their penultimate features. ``teach(batch)`` returns the frozen teacher's logits of the batch; its
    features are then in ``teacher_tap``. The student's features land in ``student_tap`` whenever the S3 loop runs
    the student, so a method's ``loss`` reads the features of the forward that gave its logits.

    The teacher is frozen and in eval mode and the features carry no augmentation, so its logits and tapped
    features of a training row are the same in every epoch: with ``distill.bank`` they are computed once for the
    train split (engine/bank.py) and a batch gathers its rows, when they fit in ``distill.teacher_cache_mb``;
    beyond that they go to a temporary HDF5 file (``distill.teacher_spill_mb``, engine/bank.SpilledBank) and a
    batch reads its rows from there; beyond both, and for rows of other splits, the teacher runs on the batch."""

    def __init__(self, context: DistillContext, layers: bool, penultimate: bool) -> None:
        self.teacher = context.trio.teacher(context.settings.teacher)
        student_net, teacher_net = context.student.net, self.teacher.net
        self.student_layers = hint_layers(student_net) if layers else ()
        self.teacher_layers = hint_layers(teacher_net) if layers else ()
        self.student_tap = FeatureTap(student_net, self.student_layers, penultimate)
        self.teacher_tap = FeatureTap(teacher_net, self.teacher_layers, penultimate)
        self.student_shapes, self.teacher_shapes = self._probe(context)
        self.train_split = context.splits["train"]
        self.spilled = None  # engine/bank.SpilledBank when the bank exceeds its memory budget
        self.bank = self._bank(context) if context.settings.bank else None

    def bank_bytes(self, rows: int, num_classes: int) -> int:
        """Memory of the teacher's logits and tapped features for ``rows`` rows (float32)."""
        per_row = num_classes + sum(int(torch.tensor(shape).prod()) for shape in self.teacher_shapes.values())
        return 4 * rows * per_row

    def _bank(self, context: DistillContext) -> dict[str, torch.Tensor] | None:
        from mstcli.engine import distributed
        from mstcli.engine.bank import SpilledBank, output_bank
        from mstcli.ui import logger

        split, settings = self.train_split, context.settings
        needed = self.bank_bytes(len(split.labels), context.trio.spec.num_classes)

        def outputs(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            logits = self.teacher(inputs)
            return {LOGITS: logits, **self.teacher_tap.features}

        if needed <= settings.teacher_cache_mb * 2**20:
            return output_bank(outputs, split, 1024)
        if needed <= settings.teacher_spill_mb * 2**20 and not distributed.active():
            logger().debug(
                f"teacher features of the train split need {needed / 2**20:.0f} MiB > distill.teacher_cache_mb="
                f"{settings.teacher_cache_mb}: kept in a temporary HDF5 file"
            )
            self.spilled = SpilledBank(outputs, split, 1024)
            return None
        logger().debug(
            f"teacher features of the train split need {needed / 2**20:.0f} MiB, more than distill.teacher_cache_mb="
            f"{settings.teacher_cache_mb} and distill.teacher_spill_mb={settings.teacher_spill_mb}: the teacher "
            "runs on every batch"
        )
        return None

    def teach(self, batch: Split) -> torch.Tensor:
        if self.bank is not None and batch.rows is not None:  # a train batch: losses are taken on train batches only
            rows = batch.rows
            self.teacher_tap.features = {name: value[rows] for name, value in self.bank.items() if name != LOGITS}
            return self.bank[LOGITS][rows]
        if self.spilled is not None and batch.rows is not None:
            outs = self.spilled.rows(batch.rows)
            self.teacher_tap.features = {name: value for name, value in outs.items() if name != LOGITS}
            return outs[LOGITS]
        with torch.no_grad():
            return self.teacher(batch.inputs)

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
