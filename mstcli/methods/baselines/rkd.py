"""Relational KD (Park et al., CVPR 2019), RKD-DA: the student keeps the teacher's distances and angles.

``paper`` constants: loss = CE + 25 * distance-wise + 50 * angle-wise (the paper's weights), both with smooth-L1
(Huber, delta 1), on the penultimate features of student and teacher as they are: relations need no common
width. No KD term: the paper's RKD-DA rows train with the task loss only (KD + RKD is a separate combination
there). ``reference`` constants (the MST-Distill reference script): both features first go through trainable
128-d linear embeddings, L2-normalized, and loss = (1 - alpha) CE + alpha (distance + 2 angle), alpha 0.5.

Pairs and triplets are of distinct samples, as the paper defines them; the losses are means over them (the
paper writes sums; its weights 25 and 50 go with means, as in its released code). Distances and angles are
computed from the Gram matrix of batch-centred features in float64, which needs no B x B x D tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mstcli.engine import distributed
from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.baselines.feature_taps import TappedPair, l2_normalized_embedding
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


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 between each net's pair distances, each divided by its mean over the pairs of the batch."""
    if len(student) < 2:
        return student.sum() * 0
    pairs = ~torch.eye(len(student), dtype=torch.bool, device=student.device)
    ds, dt = pairwise_distances(student)[pairs], pairwise_distances(teacher)[pairs]
    return F.smooth_l1_loss(ds / ds.mean(), dt / dt.mean()).to(student.dtype)


def _angle_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gram matrix (batch-centred) and the inverse pair distances (0 on the diagonal), in float64: everything
    the B^3 angle term is made of. float64 because a cosine is a difference of Gram entries divided by two squared
    distances: for two nearly equal samples (a student early in training maps many inputs alike) float32's
    rounding of the Gram entries, divided by a tiny distance, gives cosines and gradients of any size."""
    g = _gram(x)
    d = g.diagonal()
    squared = (d[:, None] + d[None, :] - 2 * g).clamp_min(1e-12)
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    return g, squared.rsqrt().masked_fill(eye, 0.0)


def _chunk_cosines(
    g: torch.Tensor, inverse: torch.Tensor, rows: slice, ks: slice
) -> tuple[torch.Tensor, torch.Tensor]:
    """dots[i, j, k] and cos[i, j, k] for the i of ``rows`` and the k of ``ks``."""
    dots = g[rows, None, ks] - g[rows, :, None] - g[None, :, ks] + g.diagonal()[None, :, None]
    return dots, dots * inverse[rows, :, None] * inverse.T[None, :, ks]


def _accumulate(
    w: torch.Tensor,
    dots: torch.Tensor,
    inverse: torch.Tensor,
    rows: slice,
    ks: slice,
    grad_g: torch.Tensor,
    grad_inv: torch.Tensor,
) -> None:
    """Add the gradient of sum(w * cos) over a block (i in ``rows``, k in ``ks``), cos = dots * inverse[i, j] *
    inverse[k, j], to the gradients of the Gram matrix and of the inverse distances it was made from."""
    p = w * dots
    grad_inv[rows] += (p * inverse.T[None, :, ks]).sum(2)  # through inverse[i, j]
    grad_inv[ks] += (p * inverse[rows, :, None]).sum(0).T  # through inverse[k, j]
    dd = w * inverse[rows, :, None] * inverse.T[None, :, ks]  # d / d dots
    grad_g[rows, ks] += dd.sum(1)  # + G_ik
    grad_g[rows] -= dd.sum(2)  # - G_ij
    grad_g[:, ks] -= dd.sum(0)  # - G_jk
    grad_g += torch.diag(dd.sum((0, 2)))  # + G_jj


BLOCK_ELEMENTS = 1 << 16  # triplets per block: 4 rows of i at batch 128 (the fastest on 2 cores), more as k narrows


class _AngleTerm(torch.autograd.Function):
    """Sum over triplets (i != k) of smooth-L1(cos_student - cos_teacher), from the two nets' Gram matrices and
    inverse distances, with its gradient for both (the teacher side learns too where its features pass through a
    trainable embedding), computed block by block over i.

    Written out by hand because the autograd of the plain B x B x B expression keeps a dozen B^3 temporaries
    (8 MB each at batch 128) and walks them again backwards: 33 ms a step on 2 CPU cores. Here a block of
    rows stays in cache and only B x B gradients are kept. The angle at j of (i, k) is the angle of (k, i), so
    only k >= the block's first row is visited: a pair (i, k) with k past the block stands for both orders
    (weight 2), one inside the block is visited in both orders (weight 1). Half the triplets, the same sum and
    the same gradient (the gradient put on G_ik alone instead of G_ik and G_ki reaches the features the same way,
    G = X X^T)."""

    @staticmethod
    def forward(ctx, g_s, inv_s, g_t, inv_t):  # type: ignore[override]
        n = len(g_s)
        teacher_learns = ctx.needs_input_grad[2] or ctx.needs_input_grad[3]
        total = g_s.new_zeros(())
        grads = [torch.zeros_like(t) for t in (g_s, inv_s, g_t, inv_t)]
        start = 0
        while start < n:
            stop = min(n, start + max(1, BLOCK_ELEMENTS // (n * (n - start))))
            rows, ks = slice(start, stop), slice(start, n)
            dots_s, cos_s = _chunk_cosines(g_s, inv_s, rows, ks)
            dots_t, cos_t = _chunk_cosines(g_t, inv_t, rows, ks)
            # weight of each (i, k): 0 for i = k (no angle), 1 inside the block, 2 past it (both orders)
            weight = g_s.new_full((stop - start, n - start), 2.0)
            weight[:, : stop - start] = 1.0
            weight[:, : stop - start].fill_diagonal_(0.0)
            weight = weight[:, None, :]
            diff = cos_s - cos_t
            size = diff.abs()
            total += (weight * torch.where(size < 1, 0.5 * diff * diff, size - 0.5)).sum()
            w = diff.clamp_(-1.0, 1.0).mul_(weight)  # the smooth-L1 derivative (delta 1), weighted
            _accumulate(w, dots_s, inv_s, rows, ks, grads[0], grads[1])
            if teacher_learns:
                _accumulate(-w, dots_t, inv_t, rows, ks, grads[2], grads[3])
            start = stop
        ctx.save_for_backward(*grads)
        return total

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        return tuple(g * grad_out for g in ctx.saved_tensors)


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 between the cosines of the angles of every triplet of distinct samples (mean over them).

    Triplets with i = j or j = k have cosine 0 in both nets (their inverse distance is 0); those with i = k
    (cosine 1 in both, up to rounding) are left out explicitly."""
    n = len(student)
    if n < 3:
        return student.sum() * 0
    g_s, inv_s = _angle_parts(student)
    g_t, inv_t = _angle_parts(teacher)
    return (_AngleTerm.apply(g_s, inv_s, g_t, inv_t) / (n * (n - 1) * (n - 2))).to(student.dtype)


@dataclass(frozen=True)
class RKDConstants:
    ce_weight: float
    distance_weight: float  # lambda_RKD-D
    angle_weight: float  # lambda_RKD-A
    embedding: int  # width of the trainable L2-normalized embeddings of both features (0: the features as they are)


class RelationalKD(DistillMethod):
    name = "rkd"
    CONSTANT_SETS = {
        "reference": RKDConstants(ce_weight=0.5, distance_weight=0.5, angle_weight=1.0, embedding=128),
        "paper": RKDConstants(ce_weight=1.0, distance_weight=25.0, angle_weight=50.0, embedding=0),
    }

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.pair = TappedPair(context, layers=False, penultimate=True)
        width = self.constants.embedding
        self.heads = nn.ModuleList(
            [
                l2_normalized_embedding(self.pair.student_shapes[PENULTIMATE][0], width),
                l2_normalized_embedding(self.pair.teacher_shapes[PENULTIMATE][0], width),
            ]
            if width
            else []
        ).to(context.device)

    def extra_modules(self) -> list[nn.Module]:
        return [self.heads] if len(self.heads) else []

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        self.pair.teach(batch)
        # relations between every pair and triplet of the global batch under torchrun
        student = distributed.global_batch(self.pair.student_tap[PENULTIMATE])
        teacher = distributed.global_batch(self.pair.teacher_tap[PENULTIMATE])
        if len(self.heads):
            student, teacher = self.heads[0](student), self.heads[1](teacher)
        distance = rkd_distance_loss(student, teacher)
        angle = rkd_angle_loss(student, teacher)
        ce = F.cross_entropy(student_logits, batch.labels)
        c = self.constants
        total = c.ce_weight * ce + c.distance_weight * distance + c.angle_weight * angle
        return total, {"ce": ce.detach(), "distance": distance.detach(), "angle": angle.detach()}
