"""Probabilistic Knowledge Transfer (Passalis & Tefas, ECCV 2018): the student matches the teacher's conditional
probability distribution of neighbours in feature space.

With the cosine-similarity kernel K(a, b) = (1 + cos(a, b)) / 2, each sample i has the distribution
p_{j|i} = K(x_j, x_i) / sum_{k != i} K(x_k, x_i) over the other samples of the batch; the loss is the paper's
sum over i and j != i of p_{j|i} log(p_{j|i} / q_{j|i}) (teacher p, student q), on penultimate features (no
common width needed). loss = CE + PKT: the paper gives no weight for combining PKT with a task loss, so the weight
is 1; the summed (not averaged) KL has about the magnitude of CE on 128-sample batches.

Like with like: both public implementations (the authors' and the CRD benchmark's) take PKT between the two nets'
last features after their ReLU, so both kernels live on non-negative vectors, whose cosines lie in [0, 1]. A
cross-modal MM teacher's penultimate features are the fused modality embeddings, signed (on AV-Digits' audio
direction, cosines of other-class pairs near 0 and as low as -0.8, against 0.93-1.0 for the student's
rectified features at the start): a distribution of neighbours no rectified student can match, and its gradient
held the audio student's CE at 2.30 -> 2.11 over 30 epochs (39.6 % test against 73.1 % alone). So when the
student's tapped features are non-negative (a ReLU before its classifier), the teacher's are rectified too
before the kernel (``rectify_teacher``; a teacher whose features are non-negative already is unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mstcli.engine import distributed
from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.baselines.feature_taps import TappedPair
from mstcli.models.taps import PENULTIMATE

EPS = 1e-7


def neighbour_probabilities(x: torch.Tensor) -> torch.Tensor:
    """B x B matrix whose row i is p_{.|i} under the cosine kernel; the diagonal is 0."""
    unit = F.normalize(x, dim=1, eps=EPS)
    kernel = (unit @ unit.T + 1) / 2
    kernel = kernel * (1 - torch.eye(len(x), dtype=x.dtype, device=x.device))
    return kernel / kernel.sum(dim=1, keepdim=True).clamp_min(EPS)


def pkt_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """sum_i sum_{j != i} p_{j|i} log(p_{j|i} / q_{j|i}), teacher p, student q."""
    if len(student) < 2:
        return student.sum() * 0
    p, q = neighbour_probabilities(teacher), neighbour_probabilities(student)
    off = ~torch.eye(len(student), dtype=torch.bool, device=student.device)
    p, q = p[off], q[off]
    return (p * ((p + EPS).log() - (q + EPS).log())).sum()


def like_the_student(student: torch.Tensor, teacher: torch.Tensor, rectify: bool) -> torch.Tensor:
    """The teacher's features as the kernel takes them: rectified when the student's are all non-negative (a ReLU
    before its classifier), so that both neighbour distributions come from vectors of the same kind."""
    if rectify and bool((student >= 0).all()):
        return F.relu(teacher)
    return teacher


@dataclass(frozen=True)
class PKTConstants:
    weight: float  # of the PKT term next to CE (the paper gives none)
    rectify_teacher: bool = True  # ReLU the teacher's features when the student's are non-negative (see above)


class ProbabilisticKT(DistillMethod):
    name = "pkt"
    CONSTANT_SETS = {"reference": PKTConstants(1.0), "paper": PKTConstants(1.0)}  # no reference script

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        self.pair = TappedPair(context, layers=False, penultimate=True)

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        self.pair.teach(batch)
        # neighbours among the global batch under torchrun
        student = distributed.global_batch(self.pair.student_tap[PENULTIMATE])
        teacher = distributed.global_batch(self.pair.teacher_tap[PENULTIMATE])
        pkt = pkt_loss(student, like_the_student(student, teacher, self.constants.rectify_teacher))
        ce = F.cross_entropy(student_logits, batch.labels)
        return ce + self.constants.weight * pkt, {"ce": ce.detach(), "pkt": pkt.detach()}
