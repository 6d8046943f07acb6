"""The MST-Distill variants that are not in the reference (issue 11), each off by default: S2's label term
(``fit_masks.label_weight``) and routing on the student's features (``distill.gate_input``). Each is checked
against a hand computation that does not use the code under test's helpers."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import random_split, tiny_trio

from mstcli.config import DistillParams
from mstcli.methods.base import DistillContext
from mstcli.methods.mst.dynamic_distillation import MSTDistill
from mstcli.methods.mst.masked_teachers import MaskedTeachers, build_masks
from mstcli.methods.mst.masknet import plugged
from mstcli.stages.fit_masks import MaskFitting


def _kl(trained: torch.Tensor, target: torch.Tensor, tau: float) -> torch.Tensor:
    """tau^2 KL(p_tau(target) || p_tau(trained)), batch mean, written out."""
    p = torch.softmax(target / tau, dim=1)
    return tau**2 * (p * (p.log() - torch.log_softmax(trained / tau, dim=1))).sum(1).mean()


@pytest.mark.parametrize("label_weight", [0.0, 0.7])
def test_s2_label_term_adds_the_masked_teachers_ce(label_weight):
    trio = tiny_trio()
    train = random_split(20)
    torch.manual_seed(5)
    masks = build_masks(trio, train.batch(torch.arange(2)), layers=2, heads=3, factor=16)
    targets = {"train": trio.student(train.inputs)}
    task = MaskFitting(
        MaskedTeachers(trio, masks, {}), targets, train, 1e-3, 4.0, 8, torch.device("cpu"), "fp32", label_weight
    )
    batch = train.batch(torch.tensor([3, 1, 12, 7, 19]))
    loss, terms = task.batch_loss(batch)
    expected = 0.0
    for slot, net in masks:  # the full teacher forward with the one MaskNet plugged in, not the task's helper
        teacher = trio.teacher(slot.teacher)
        with plugged(teacher.net, [(slot.layer, net)]):
            logits = teacher(batch.inputs)
        expected += _kl(logits, targets["train"][batch.rows], 4.0) + label_weight * F.cross_entropy(
            logits, batch.labels
        )
    assert float(loss.detach()) == pytest.approx(float(expected), abs=1e-5)
    assert any(k.startswith("train_ce_") for k in terms) == (label_weight > 0)


def test_s2_label_term_moves_the_masked_teacher_towards_the_labels():
    """One Adam step on KL + w CE lowers the masked teachers' CE more than a step on the KL alone."""
    trio = tiny_trio()
    train = random_split(32)
    ce_after = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(5)
        masks = build_masks(trio, train.batch(torch.arange(2)), layers=2, heads=3, factor=16)
        task = MaskFitting(
            MaskedTeachers(trio, masks, {}), {"train": trio.student(train.inputs)}, train, 1e-2, 4.0, 32,
            torch.device("cpu"), "fp32", weight,
        )  # fmt: skip
        for _ in range(5):
            loss, _ = task.batch_loss(train)
            task.optimizer.zero_grad()
            loss.backward()
            task.optimizer.step()
        with torch.no_grad():
            ce_after[weight] = sum(
                float(F.cross_entropy(task.masked.logits(i, "train", train), train.labels)) for i in range(len(masks))
            )
    assert ce_after[5.0] < ce_after[0.0]


@pytest.mark.parametrize("gate_input", ["logits", "features"])
def test_the_router_reads_what_gate_input_names(gate_input):
    trio = tiny_trio()
    train = random_split(24)
    torch.manual_seed(5)
    masks = build_masks(trio, train.batch(torch.arange(2)), layers=2, heads=3, factor=16)
    for _, net in masks:
        net.eval().requires_grad_(False)
    settings = dataclasses.replace(DistillParams(), gate_input=gate_input, bank=False)
    student = trio.student
    method = MSTDistill(DistillContext(settings, trio, student, {"train": train}, "cpu", masks))
    batch = train.batch(torch.tensor([0, 5, 9, 13, 21, 2]))
    seen = {}  # the classifier's input, caught by a hook of the test's own
    classifier = dict(student.net.named_modules())[student.net.classifier]
    handle = classifier.register_forward_pre_hook(lambda _m, args: seen.__setitem__("x", args[0].flatten(1)))
    logits = student(batch.inputs)
    handle.remove()
    loss, terms = method.loss(batch, logits)
    signal = seen["x"] if gate_input == "features" else logits
    assert method.gate.hidden.in_features == signal.shape[1]
    gate = torch.softmax(method.gate.out(method.gate.hidden(signal)), dim=1)
    chosen = gate.argmax(1)
    experts = method.experts(batch.inputs)  # E x B x C
    distill = torch.stack([_kl(logits[b : b + 1], experts[chosen[b], b : b + 1], 4.0) for b in range(len(chosen))])
    mean_gate = gate.mean(0)
    balance = (0.25 * (torch.log(torch.tensor(0.25)) - mean_gate.log())).sum() / 4
    expected = F.cross_entropy(logits, batch.labels) + distill.mean() + balance
    assert float(loss.detach()) == pytest.approx(float(expected), abs=1e-5)
    # the balancing term reaches the student through what the router reads
    student.net.zero_grad()
    loss.backward()
    assert all(p.grad is not None for p in method.gate.parameters())


def test_decay_off_survives_yaml_reading_off_as_false(tmp_path):
    """YAML 1.1 reads `off` as false; `-S distill.decay=off` and `decay: off` in params.yaml mean the choice."""
    from mstcli.config import load_params

    assert load_params(None, ["distill.decay=off"]).distill.decay == "off"
    path = tmp_path / "params.yaml"
    path.write_text("distill:\n  decay: off\n")
    assert load_params(path).distill.decay == "off"
    from mstcli.errors import UserError

    with pytest.raises(UserError, match="distill.decay must be one of"):
        load_params(None, ["distill.decay=true"])  # true is not a spelling of any choice
