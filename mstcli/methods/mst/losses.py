"""MST-Distill's own losses (docs/method.md §2.2, §2.4): S1's mutual alignment, S3's routed distillation and the
load-balancing terms of the router. Argument order follows the reference: the first argument is the distribution
being trained, the second the target; KL terms are scaled by tau^2 with batchmean reduction.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch
import torch.nn.functional as F

from mstcli.methods.losses import kd_loss, kd_per_sample

#: members of S1 with two modalities (MM teacher, student, CM teacher): the reference's case, whose 6 KL terms
#: ``align_weighting: pairs`` keeps at full weight
REFERENCE_MEMBERS = 3

AlignWeighting = Literal["sum", "pairs"]


def align_weight(members: int, weighting: AlignWeighting) -> float:
    """The factor on S1's KL sum for ``members`` nets (``train.align_weighting``).

    ``sum`` keeps every ordered pair at weight 1, so K nets have K(K - 1) KL terms against K CE terms: the KL
    side grows faster than the CE side as modalities are added. ``pairs`` scales the sum by 6 / (K(K - 1)), so
    that the KL terms weigh together what the reference's six weigh; with two modalities (K = 3) both are 1.
    """
    if weighting == "sum":
        return 1.0
    pairs = members * (members - 1)
    return REFERENCE_MEMBERS * (REFERENCE_MEMBERS - 1) / pairs


def mutual_loss(
    logits: list[torch.Tensor],
    labels: torch.Tensor,
    temperature: float,
    ce_fn=F.cross_entropy,
    kd_fn=kd_loss,
    weighting: AlignWeighting = "sum",
) -> tuple[torch.Tensor, dict]:
    """S1: sum of each member's CE plus KD over every ordered pair (u, v), u != v, without detaching.

    With three members that is three CE terms and six KL terms; every member gets gradients from all.
    ``ce_fn``/``kd_fn``: the run's task kind's (methods/tasks.py; per-pixel for dense data sets). ``weighting``:
    the factor on the KL sum (``align_weight``); a factor of 1 is not multiplied in, so the two-modality loss
    stays the same operations as the reference's, to the last bit. ``terms["align"]`` is the weighted sum.
    """
    ce = sum(ce_fn(z, labels) for z in logits)
    align = sum(kd_fn(zu, zv, temperature) for zu, zv in itertools.permutations(logits, 2))
    weight = align_weight(len(logits), weighting)
    if weight != 1.0:
        align = align * weight
    return ce + align, {"ce": ce.detach(), "align": align.detach()}


def load_balance_kl(gate: torch.Tensor, divide_by_experts: bool) -> torch.Tensor:
    """KL(U || mean_b gate_b), with U uniform over E experts.

    The reference evaluates KLDivLoss(batchmean) on a 1-D tensor, which divides the KL by E;
    ``divide_by_experts`` reproduces that, False gives the paper's formula. With U uniform the KL is
    -log E - mean_e log(mean gate_e): written so, it takes a third of the operations of the sum over u log(u/g).
    """
    experts = gate.shape[-1]
    kl = -gate.mean(dim=0).clamp_min(1e-12).log().mean() - math.log(experts)
    return kl / experts if divide_by_experts else kl


def load_balance_cv(gate: torch.Tensor) -> torch.Tensor:
    """Coefficient of variation (unbiased std / mean) of each expert's summed gate probability."""
    importance = gate.sum(dim=0)
    return importance.std(unbiased=True) / importance.mean().clamp_min(1e-12)


def routed_kd(
    student: torch.Tensor,
    experts: torch.Tensor,
    chosen: torch.Tensor,
    temperature: float,
    weights: torch.Tensor | None = None,
    per_sample=kd_per_sample,
) -> torch.Tensor:
    """S3's distillation term: each sample learns from its own chosen experts.

    ``experts`` is E x B x C (detached), ``chosen`` B x k expert indices. Without ``weights`` the k terms are
    averaged (the reference); with ``weights`` (B x k) they are weighted, which lets a router learn from
    the distillation loss. ``per_sample``: the task kind's per-sample KD (methods/tasks.py).
    """
    batch = torch.arange(student.shape[0], device=student.device)
    return chosen_kd(student, experts[chosen, batch[:, None]], temperature, weights, per_sample)


def chosen_kd(
    student: torch.Tensor,
    chosen_logits: torch.Tensor,
    temperature: float,
    weights: torch.Tensor | None = None,
    per_sample=kd_per_sample,
) -> torch.Tensor:
    """``routed_kd`` from the chosen experts' logits, B x k x C, already gathered (from the expert bank in one
    index operation: S3's step stays a handful of kernels whatever k is). ``per_sample``: the task kind's KD
    (methods/tasks.py; dense: B x k x C x H x W)."""
    per_choice = per_sample(student.unsqueeze(1), chosen_logits.detach(), temperature)  # B x k
    if weights is None:
        return per_choice.mean()
    return (per_choice * weights).sum(dim=1).mean()
