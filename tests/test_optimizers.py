"""The stages' Adam is the fused implementation where it exists, with the maths of torch's default Adam."""

import torch
from torch import nn

from mstcli.engine.optimizers import adam


def _three_steps(make, seed: int = 0) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    optimizer = make(net.parameters())
    data = torch.randn(8, 6)
    for _ in range(3):
        optimizer.zero_grad()
        net(data).pow(2).mean().backward()
        optimizer.step()
    return [p.detach().clone() for p in net.parameters()]


def test_the_fused_adam_takes_the_default_adams_steps():
    fused = _three_steps(lambda ps: adam(ps, 0.01))
    default = _three_steps(lambda ps: torch.optim.Adam(ps, lr=0.01))
    start = _three_steps(lambda ps: torch.optim.Adam(ps, lr=0.0))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(fused, default, strict=True))
    assert not all(
        torch.allclose(a, b, atol=1e-3) for a, b in zip(fused, start, strict=True)
    )  # the steps did move the net


def test_fused_where_the_kernels_exist_and_the_default_elsewhere():
    assert adam([nn.Parameter(torch.zeros(3))], 1e-3).defaults["fused"] is True
    assert not adam([nn.Parameter(torch.zeros(3, dtype=torch.complex64))], 1e-3).defaults["fused"]
