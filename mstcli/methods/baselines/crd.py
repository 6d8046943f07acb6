"""Contrastive Representation Distillation (Tian et al., ICLR 2020).

Student and teacher penultimate features go through their own trainable embedding heads (linear, 128-d, L2
normalized). Two memory banks, one per net, hold an embedding of every train row (rows are ``batch.rows``). For
each sample the critic h(a, b) = exp(a.b / tau) / (exp(a.b / tau) + N / M) (tau = 0.07, N negatives, M train rows)
scores the positive pair (its own row) against N rows drawn uniformly from the other rows, and the NCE loss is
-[log h(positive) + sum_n log(1 - h(negative_n))], in both directions (student anchor against the teacher bank,
teacher anchor against the student bank; summed, as in the authors' release). After each batch the banks' rows
move towards the new embeddings with momentum 0.5 and are renormalized.

``paper`` constants: loss = CE + 0.8 CRD, the paper's default (beta = 0.8); "CRD+KD" is a separate variant
there, so no KD term. ``reference`` constants (the MST-Distill reference script): (1 - alpha) CE + alpha CRD,
alpha = 0.5; embedding, tau, momentum and negatives as the paper's. The paper's h leaves out the normalization of
exp(a.b / tau) that its NCE derivation (noise density 1/M against a normalized model density) assumes; taken
literally each sample starts at about N log 2 and must push thousands of negatives below cosine -0.3, which cannot
be reached. So, as the authors' release (after Wu et al. 2018), exp(a.b / tau) is divided by
Z = M * mean exp(score), estimated on the first batch and then fixed, one Z per direction.
N = the ``negatives`` constant (4,096, the paper's) is clamped to M - 1 when the train split is smaller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mstcli.engine import distributed
from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.baselines.feature_taps import TappedPair, l2_normalized_embedding
from mstcli.models.taps import PENULTIMATE


def contrast_scores(
    anchors: torch.Tensor, bank: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """a.b / tau of each anchor (B x d) with its positive (B) and its negatives (B x N), rows of the M x d ``bank``.
    Scores against the whole bank (B x M) are cheaper than gathering B x N x d negatives."""
    scores = anchors @ bank.T / tau
    return scores.gather(1, positives[:, None]).squeeze(1), scores.gather(1, negatives)


def log_normalizer(positive: torch.Tensor, negative: torch.Tensor, rows: int) -> float:
    """log Z with Z = M * mean of exp(score) over a batch's contrasts: exp(score) / Z is then about 1/M on average,
    the uniform noise density the NCE compares against."""
    scores = torch.cat([positive[:, None], negative], dim=1).detach().flatten()
    return math.log(rows) + float(torch.logsumexp(scores, dim=0)) - math.log(scores.numel())


def crd_nce_loss(positive: torch.Tensor, negative: torch.Tensor, rows: int, log_z: float) -> torch.Tensor:
    """Mean over the batch of -[log h(positive) + sum_n log(1 - h(negative_n))] with
    h = P / (P + N / M), P = exp(score) / Z, i.e. h = sigmoid(score - log Z - log(N / M))."""
    offset = log_z + math.log(negative.shape[1] / rows)
    return -(F.logsigmoid(positive - offset) + F.logsigmoid(offset - negative).sum(dim=1)).mean()


def other_rows(rows: torch.Tensor, count: int, total: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """B x count row numbers drawn uniformly (with replacement) from 0..total-1 without each sample's own row."""
    draws = torch.randint(0, total - 1, (len(rows), count), generator=generator, device="cpu").to(rows.device)
    return draws + (draws >= rows[:, None]).long()


class MemoryBank:
    """One L2-normalized embedding per train row, updated with momentum; starts as random unit vectors."""

    def __init__(self, rows: int, dim: int, momentum: float, device: torch.device) -> None:
        self.vectors = F.normalize(torch.rand(rows, dim, device=device) - 0.5, dim=1)
        self.momentum = momentum

    def update(self, rows: torch.Tensor, embeddings: torch.Tensor) -> None:
        mixed = self.momentum * self.vectors[rows] + (1 - self.momentum) * embeddings.detach()
        # out of place: this batch's loss graph still holds the old tensor for its backward pass
        self.vectors = self.vectors.index_copy(0, rows, F.normalize(mixed, dim=1))


@dataclass(frozen=True)
class CRDConstants:
    ce_weight: float
    crd_weight: float
    embedding: int
    tau: float
    momentum: float  # of the memory banks
    negatives: int  # per sample, clamped to the train rows - 1


class ContrastiveRD(DistillMethod):
    name = "crd"
    CONSTANT_SETS = {
        "reference": CRDConstants(0.5, 0.5, embedding=128, tau=0.07, momentum=0.5, negatives=4096),
        "paper": CRDConstants(1.0, 0.8, embedding=128, tau=0.07, momentum=0.5, negatives=4096),
    }

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        c = self.constants
        self.pair = TappedPair(context, layers=False, penultimate=True)
        self.rows = len(context.splits["train"])
        self.negatives = min(c.negatives, self.rows - 1)
        widths = self.pair.student_shapes[PENULTIMATE][0], self.pair.teacher_shapes[PENULTIMATE][0]
        self.student_head = l2_normalized_embedding(widths[0], c.embedding).to(context.device)
        self.teacher_head = l2_normalized_embedding(widths[1], c.embedding).to(context.device)
        self.student_bank = MemoryBank(self.rows, c.embedding, c.momentum, context.device)
        self.teacher_bank = MemoryBank(self.rows, c.embedding, c.momentum, context.device)
        self.log_z: list[float | None] = [None, None]  # student-anchor and teacher-anchor directions

    def extra_modules(self) -> list[nn.Module]:
        return [self.student_head, self.teacher_head]

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        self.pair.teach(batch)
        student = self.student_head(self.pair.student_tap[PENULTIMATE])
        teacher = self.teacher_head(self.pair.teacher_tap[PENULTIMATE])
        # under torchrun every process draws the negatives of the global batch (the same random numbers as one
        # process) and updates the memory with the global batch's embeddings, so the banks stay equal
        negatives = distributed.local_part(other_rows(distributed.global_rows(batch.rows), self.negatives, self.rows))
        crd = self._direction(0, student, self.teacher_bank, batch.rows, negatives) + self._direction(
            1, teacher, self.student_bank, batch.rows, negatives
        )
        with torch.no_grad():
            rows = distributed.global_rows(batch.rows)
            self.student_bank.update(rows, distributed.global_batch(student.detach()))
            self.teacher_bank.update(rows, distributed.global_batch(teacher.detach()))
        ce = F.cross_entropy(student_logits, batch.labels)
        c = self.constants
        return c.ce_weight * ce + c.crd_weight * crd, {"ce": ce.detach(), "crd": crd.detach()}

    def state_dict(self) -> dict[str, Any]:
        """The memory banks and the fixed normalizers: a resumed run must contrast against the same memory."""
        return {
            "student_bank": self.student_bank.vectors,
            "teacher_bank": self.teacher_bank.vectors,
            "log_z": list(self.log_z),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.student_bank.vectors = state["student_bank"].to(self.student_bank.vectors.device)
        self.teacher_bank.vectors = state["teacher_bank"].to(self.teacher_bank.vectors.device)
        self.log_z = list(state["log_z"])

    def _direction(self, index: int, anchors, bank: MemoryBank, rows, negatives) -> torch.Tensor:
        """NCE of one net's embeddings against the other net's memory; Z is fixed at the first batch."""
        positive, negative = contrast_scores(anchors, bank.vectors, rows, negatives, self.constants.tau)
        if self.log_z[index] is None:  # from the global first batch under torchrun
            whole = (distributed.global_batch(positive.detach()), distributed.global_batch(negative.detach()))
            self.log_z[index] = log_normalizer(*whole, self.rows)
        return crd_nce_loss(positive, negative, self.rows, self.log_z[index])
