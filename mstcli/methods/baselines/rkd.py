"""Relational KD (Park et al., CVPR 2019), RKD-DA: the student keeps the teacher's distances and angles.

loss = CE + 25 * distance-wise + 50 * angle-wise (the paper's weights), both with smooth-L1 (Huber, delta 1), on
the penultimate features of student and teacher as they are: relations need no common width. The reference
code embeds both into 128-d L2-normalized vectors and uses (1 - alpha) CE + alpha (distance + 2 angle) with
alpha 0.5; the paper is followed here. No KD term: the paper's RKD-DA rows train with the task loss only
(KD + RKD is a separate combination there).

Pairs and triplets are of distinct samples, as the paper defines them; the losses are means over them (the
paper writes sums; its weights 25 and 50 go with means, as in its released code). Distances and angles are
computed from the Gram matrix of batch-centred features in float64, which needs no B x B x D tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mstcli.engine import distributed
from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.baselines.feature_taps import TappedPair
from mstcli.models.taps import PENULTIMATE


def _gram(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    x = x - x.mean(dim=0, keepdim=True)  # distances and angles do not change; cancellation does
    return x @ x.T


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """B x B Euclidean distances (0 on the diagonal)."""
    g = _gram(x)
    squared = g.diagonal()[:, None] + g.diagonal()[None, :] - 2 * g
    return squared.clamp_min(1e-12).sqrt() * (1 - torch.eye(len(x), dtype=g.dtype, device=x.device))


def triplet_cosines(x: torch.Tensor) -> torch.Tensor:
    """cos[i, j, k] = cosine of the angle at x_j between x_i and x_k, i.e. <e_ij, e_kj> with e_ij the unit vector
    of x_i - x_j."""
    g = _gram(x)
    d = g.diagonal()
    # <x_i - x_j, x_k - x_j> = G_ik - G_ij - G_jk + G_jj
    dots = g[:, None, :] - g[:, :, None] - g[None, :, :] + d[None, :, None]
    norms = (d[:, None] + d[None, :] - 2 * g).clamp_min(1e-12).sqrt()  # norms[i, j] = |x_i - x_j|
    return dots / (norms[:, :, None] * norms.T[None, :, :])


def _distinct_pairs(n: int, device: torch.device) -> torch.Tensor:
    return ~torch.eye(n, dtype=torch.bool, device=device)


def _distinct_triplets(n: int, device: torch.device) -> torch.Tensor:
    i, j, k = torch.meshgrid(*(torch.arange(n, device=device),) * 3, indexing="ij")
    return (i != j) & (j != k) & (i != k)


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 between each net's pair distances, each divided by its mean over the pairs of the batch."""
    if len(student) < 2:
        return student.sum() * 0
    pairs = _distinct_pairs(len(student), student.device)
    ds, dt = pairwise_distances(student)[pairs], pairwise_distances(teacher)[pairs]
    return F.smooth_l1_loss(ds / ds.mean(), dt / dt.mean()).to(student.dtype)


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 between the cosines of the angles of every triplet of distinct samples."""
    if len(student) < 3:
        return student.sum() * 0
    triplets = _distinct_triplets(len(student), student.device)
    return F.smooth_l1_loss(triplet_cosines(student)[triplets], triplet_cosines(teacher)[triplets]).to(student.dtype)


class RelationalKD(DistillMethod):
    name = "rkd"
    DISTANCE_WEIGHT = 25.0  # lambda_RKD-D of the paper
    ANGLE_WEIGHT = 50.0  # lambda_RKD-A of the paper

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.pair = TappedPair(context, layers=False, penultimate=True)

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        self.pair.teach(batch.inputs)
        # relations between every pair and triplet of the global batch under torchrun
        student = distributed.global_batch(self.pair.student_tap[PENULTIMATE])
        teacher = distributed.global_batch(self.pair.teacher_tap[PENULTIMATE])
        distance = rkd_distance_loss(student, teacher)
        angle = rkd_angle_loss(student, teacher)
        ce = F.cross_entropy(student_logits, batch.labels)
        total = ce + self.DISTANCE_WEIGHT * distance + self.ANGLE_WEIGHT * angle
        return total, {"ce": ce.detach(), "distance": distance.detach(), "angle": angle.detach()}
