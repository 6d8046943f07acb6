"""Each loss against values computed by hand (plain Python math) on tiny cases."""

import dataclasses
import math

import pytest
import torch
from conftest import random_split, tiny_trio

from mstcli.config import DistillParams
from mstcli.methods.base import DistillContext
from mstcli.methods.losses import kd_loss
from mstcli.methods.mst.dynamic_distillation import MSTDistill
from mstcli.methods.mst.losses import load_balance_cv, load_balance_kl, mutual_loss, routed_kd
from mstcli.methods.mst.masked_teachers import build_masks


def softmax(row, t=1.0):
    exps = [math.exp(v / t) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def kd_by_hand(trained, target, t):
    """t^2 * KL(p(target) || p(trained)), averaged over rows."""
    total = 0.0
    for a, b in zip(trained, target, strict=True):
        p, q = softmax(b, t), softmax(a, t)
        total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
    return t * t * total / len(trained)


def ce_by_hand(logits, labels):
    return sum(-math.log(softmax(row)[y]) for row, y in zip(logits, labels, strict=True)) / len(labels)


A = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
B = [[0.3, 0.1, 2.0], [1.5, 0.5, -0.5]]
C = [[2.0, 0.0, 0.0], [0.1, 0.2, 0.3]]


def test_kd_loss_matches_hand_computation():
    got = kd_loss(torch.tensor(A), torch.tensor(B), temperature=2.0)
    assert got.item() == pytest.approx(kd_by_hand(A, B, 2.0), rel=1e-6)
    # direction matters: the second argument is the target
    assert kd_loss(torch.tensor(B), torch.tensor(A), 2.0).item() == pytest.approx(kd_by_hand(B, A, 2.0), rel=1e-6)
    assert kd_by_hand(A, B, 2.0) != pytest.approx(kd_by_hand(B, A, 2.0))  # the fixture makes the order matter


def test_mutual_loss_is_three_ce_plus_six_kl_without_detach():
    labels = [2, 0]
    logits = [torch.tensor(x, requires_grad=True) for x in (A, B, C)]
    total, terms = mutual_loss(logits, torch.tensor(labels), temperature=4.0)
    members = [A, B, C]
    ce = sum(ce_by_hand(m, labels) for m in members)
    align = sum(kd_by_hand(u, v, 4.0) for i, u in enumerate(members) for j, v in enumerate(members) if i != j)
    assert total.item() == pytest.approx(ce + align, rel=1e-6)
    assert terms["align"].item() == pytest.approx(align, rel=1e-6)
    total.backward()
    assert all(z.grad is not None and z.grad.abs().sum() > 0 for z in logits)


D = [[-1.0, 0.5, 0.5], [2.5, 0.0, 1.0]]


@pytest.mark.parametrize("weighting", ["sum", "pairs"])
def test_align_weighting_is_one_with_two_modalities_to_the_last_bit(weighting):
    """Three nets (two modalities): either weighting is the reference's loss, the same float, not only close."""
    labels = torch.tensor([2, 0])
    logits = [torch.tensor(x) for x in (A, B, C)]
    reference, terms = mutual_loss(logits, labels, temperature=4.0)  # the default: the code before the setting
    total, weighted = mutual_loss(logits, labels, temperature=4.0, weighting=weighting)
    assert torch.equal(total, reference) and torch.equal(weighted["align"], terms["align"])


def test_align_weighting_with_three_modalities_by_hand():
    """Four nets (three modalities): 4 CE and 12 KL terms; ``pairs`` weighs the KL sum 6/12 = 1/2, ``sum`` 1."""
    labels = [2, 0]
    members = [A, B, C, D]
    ce = sum(ce_by_hand(m, labels) for m in members)
    align = sum(kd_by_hand(u, v, 4.0) for i, u in enumerate(members) for j, v in enumerate(members) if i != j)
    logits = [torch.tensor(x) for x in members]
    for weighting, factor in (("sum", 1.0), ("pairs", 0.5)):
        total, terms = mutual_loss(logits, torch.tensor(labels), temperature=4.0, weighting=weighting)
        assert total.item() == pytest.approx(ce + factor * align, rel=1e-6), weighting
        assert terms["align"].item() == pytest.approx(factor * align, rel=1e-6), weighting
    assert align > 1.0  # the two factors give clearly different totals on this fixture


def test_load_balance_kl_by_hand_and_like_the_reference():
    gate = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.1, 0.1, 0.4, 0.4]])
    mean = [0.4, 0.15, 0.25, 0.2]
    kl = sum(0.25 * (math.log(0.25) - math.log(m)) for m in mean)
    assert load_balance_kl(gate, divide_by_experts=False).item() == pytest.approx(kl, rel=1e-6)
    assert load_balance_kl(gate, divide_by_experts=True).item() == pytest.approx(kl / 4, rel=1e-6)
    # the reference's KLDivLoss(batchmean) on the 1-D mean gate equals the divided form
    reference = torch.nn.KLDivLoss(reduction="batchmean")(gate.mean(0).log(), torch.full((4,), 0.25))
    assert load_balance_kl(gate, divide_by_experts=True).item() == pytest.approx(reference.item(), rel=1e-6)


def test_load_balance_cv_by_hand():
    gate = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    importance = [1.1, 0.6, 1.3]
    mean = sum(importance) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in importance) / 2)
    assert load_balance_cv(gate).item() == pytest.approx(std / mean, rel=1e-6)


def test_routed_kd_uses_each_samples_own_experts():
    student = torch.tensor(A)
    experts = torch.tensor([B, C, A])  # E=3, B=2, C=3
    chosen = torch.tensor([[1], [0]])  # sample 0 -> expert 1 (C), sample 1 -> expert 0 (B)
    expected = (kd_by_hand([A[0]], [C[0]], 4.0) + kd_by_hand([A[1]], [B[1]], 4.0)) / 2
    assert routed_kd(student, experts, chosen, 4.0).item() == pytest.approx(expected, rel=1e-6)
    # k = 2: the two chosen experts' terms are averaged
    chosen2 = torch.tensor([[1, 2], [0, 1]])
    expected2 = (
        kd_by_hand([A[0]], [C[0]], 4.0)
        + kd_by_hand([A[0]], [A[0]], 4.0)
        + kd_by_hand([A[1]], [B[1]], 4.0)
        + kd_by_hand([A[1]], [C[1]], 4.0)
    ) / 4
    assert routed_kd(student, experts, chosen2, 4.0).item() == pytest.approx(expected2, rel=1e-6)
    # weighted: per-sample weights over the k choices
    weights = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    expected3 = (0.25 * kd_by_hand([A[0]], [C[0]], 4.0) + 0.75 * 0 + kd_by_hand([A[1]], [B[1]], 4.0)) / 2
    assert routed_kd(student, experts, chosen2, 4.0, weights).item() == pytest.approx(expected3, rel=1e-6)


def mst_method(decay: str):
    """A real MSTDistill on tiny AV-Digits nets with fresh MaskNets (its weights do not matter here)."""
    trio = tiny_trio()
    train = random_split(8)
    masks = build_masks(trio, train.batch(torch.arange(2)), layers=2, heads=1, factor=16)
    settings = dataclasses.replace(DistillParams(), decay=decay)
    return MSTDistill(DistillContext(settings, trio, trio.student, {"train": train}, torch.device("cpu"), masks))


def weights_over_epochs(decay: str, epochs: int) -> list[tuple[float, float]]:
    """(w_kl, w_lb) as each epoch uses them, read from the stats the method's own end_epoch reports."""
    method = mst_method(decay)
    history = []
    for epoch in range(epochs):
        stats = method.end_epoch(epoch)
        history.append((stats["w_kl"], stats["w_lb"]))
    return history


def test_reference_decay_gives_the_documented_weights():
    """docs/method.md §2.4: w_kl = 1 in epoch 0, 0.5 in 1-30, 0.25 in 31-60, 0.125 in 61-90, 0.0625 in 91-99;
    w_lb = 0.9^n after n decays, 0.9 in epochs 1-10, 0.9^10 in 91-99."""
    history = weights_over_epochs("reference", 100)
    expected_kl = [1.0] + [0.5] * 30 + [0.25] * 30 + [0.125] * 30 + [0.0625] * 9
    assert [w for w, _ in history] == expected_kl
    assert history[0][1] == 1.0
    assert [round(w, 12) for _, w in history[1:11]] == [0.9] * 10
    assert history[11][1] == pytest.approx(0.81) and history[99][1] == pytest.approx(0.9**10)


def test_shifted_decay_waits_a_full_rhythm_and_off_never_decays():
    shifted = weights_over_epochs("shifted", 31)
    assert [w for w, _ in shifted[:30]] == [1.0] * 30 and shifted[30][0] == 0.5
    assert [w for _, w in shifted[:10]] == [1.0] * 10 and shifted[10][1] == pytest.approx(0.9)
    assert set(weights_over_epochs("off", 40)) == {(1.0, 1.0)}
