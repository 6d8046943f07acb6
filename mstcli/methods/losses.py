"""The Hinton KD term every method shares, written once and checked by hand-computed tests.

Argument order follows the reference: the first argument is the distribution being trained, the second
is the target. All KL terms are scaled by tau^2 and use batchmean reduction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_per_sample(trained: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """tau^2 * KL(p_tau(target) || p_tau(trained)) for each sample (length B)."""
    log_p_trained = F.log_softmax(trained / temperature, dim=-1)
    log_p_target = F.log_softmax(target / temperature, dim=-1)
    kl = (log_p_target.exp() * (log_p_target - log_p_trained)).sum(dim=-1)
    return temperature**2 * kl


def kd_loss(trained: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """tau^2 * KL(p_tau(target) || p_tau(trained)), batchmean. Gradients flow into both arguments;
    detach the target where it must stay fixed."""
    return kd_per_sample(trained, target, temperature).mean()
