"""The method contract: one list of names, every method a DistillMethod, frozen parts stay frozen on BatchNorm nets,
all per-epoch statistics reach the curves, and a method's own state survives a resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mstcli.cli import app
from mstcli.config import DistillParams, load_params
from mstcli.engine.loop import LoopConfig, run_epochs
from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext, DistillMethod
from mstcli.methods.mst.masked_teachers import build_masks
from mstcli.methods.registry import ENTRIES, comparison_methods, method_class, method_names
from mstcli.models.trio import ModalNet, RunSpec, Trio
from mstcli.stages.compare import DISPLAY_NAMES, TEACHERLESS
from mstcli.stages.distill import Distillation

ROOT = Path(__file__).resolve().parents[1]
# VGGSound's nets (Conv3d / Conv1d with BatchNorm), at a small channel count
SHAPES = {"visual": (10, 7, 7, 4), "audio": (10, 128)}


def test_every_registered_method_is_a_distill_method_named_by_its_key():
    for entry in ENTRIES:
        cls = method_class(entry.name)
        assert issubclass(cls, DistillMethod) and cls.name == entry.name, entry


def test_the_method_lists_agree():
    names = set(method_names())
    assert len(names) == len(ENTRIES)
    result = CliRunner().invoke(app, ["params", "-S", "distill.method=bogus"])
    assert result.exit_code == 2 and "distill.method must be one of" in result.output
    for name in names:
        assert load_params(None, [f"distill.method={name}"]).distill.method == name
    assert set(DISPLAY_NAMES) == names
    assert set(TEACHERLESS) == {e.name for e in ENTRIES if e.fixed_teacher is not None} == {"none", "mst"}
    matrix = yaml.safe_load((ROOT / "bench/matrix.yaml").read_text())
    assert matrix["methods"] == list(comparison_methods()) and set(comparison_methods()) == names - {"none", "mst"}


def bn_trio(student: str) -> Trio:
    torch.manual_seed(0)
    cm = "audio" if student == "visual" else "visual"
    nets = {"visual": "visual_branch_net_vggs", "audio": "audio_branch_net_vggs"}
    spec = RunSpec(
        "vggsound",
        ("visual", "audio"),
        student,
        SHAPES,
        5,
        tuple("abcde"),
        "dscnn_vggs_i",
        nets[student],
        {cm: nets[cm]},
    )
    trio = Trio(spec)
    # give the running statistics a state of their own, as after stage 1
    trio.train()
    with torch.no_grad():
        trio.mm(random_split(16, seed=9).inputs)
        trio.teacher("cm")(random_split(16, seed=9).inputs)
    trio.eval().requires_grad_(False)
    from mstcli.engine.checkpoints import state_fingerprint

    trio.fingerprint = state_fingerprint(trio.state_dict())
    return trio


def random_split(n: int, seed: int = 1) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split({m: torch.rand(n, *s, generator=g) for m, s in SHAPES.items()}, torch.randint(0, 5, (n,), generator=g))


def snapshot(modules) -> list[dict[str, torch.Tensor]]:
    """Parameters and buffers (BatchNorm running statistics included) of each module, copied."""
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]


def same(a, b) -> bool:
    return all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True))


class Watched(Distillation):
    """Distillation that records, at the start of the last epoch, every module that must not change."""

    def start_epoch(self, epoch: int) -> None:
        super().start_epoch(epoch)
        if epoch == 1:
            self.frozen = [self.trio.mm, self.trio.teacher("cm"), *self.method.frozen_modules()]
            self.before = snapshot(self.frozen)


@pytest.mark.parametrize("name", method_names())
def test_frozen_teachers_keep_weights_and_batchnorm_statistics(name):
    trio = bn_trio("audio")
    splits = {"train": random_split(24), "val": random_split(8, seed=2)}
    settings = dataclasses.replace(
        DistillParams(), method=name, epochs=2, batch_size=8, constants={"crd": {"negatives": 8}}
    )
    cls = method_class(name)
    masks = None
    if cls.needs_masks:
        masks = build_masks(trio, splits["train"].batch(torch.arange(2)), layers=2, heads=1, factor=32)
        for _, net in masks:
            net.eval().requires_grad_(False)
    student = trio.student if cls.continues_stage1 else ModalNet(trio.spec.build_student(), ("audio",))
    student.requires_grad_(True)
    method = cls(DistillContext(settings, trio, student, splits, torch.device("cpu"), masks))
    task = Watched(method, student, splits["val"], 1e-3, torch.device("cpu"), "fp32")
    task.trio = trio
    result = run_epochs(task, splits["train"], LoopConfig(2, 8, torch.device("cpu")))
    assert same(task.before, snapshot(task.frozen)), f"{name} changed a frozen teacher in its last epoch"
    assert len(result.rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in result.rows)
    if name == "mgdfr":
        assert method.frozen_modules() == [method.teacher], "MGDFR's teacher is fixed after its ranking"


def test_all_per_epoch_statistics_of_mst_reach_the_curves():
    trio = bn_trio("audio")
    splits = {"train": random_split(24), "val": random_split(8, seed=2)}
    settings = dataclasses.replace(DistillParams(), method="mst", epochs=3, batch_size=8)
    masks = build_masks(trio, splits["train"].batch(torch.arange(2)), layers=2, heads=1, factor=32)
    method = method_class("mst")(
        DistillContext(settings, trio, trio.student.requires_grad_(True), splits, "cpu", masks)
    )
    task = Distillation(method, trio.student, splits["val"], 1e-3, torch.device("cpu"), "fp32")
    rows = run_epochs(task, splits["train"], LoopConfig(3, 8, torch.device("cpu"))).rows
    # the reference's decay: w_kl halves after epoch 0, w_lb shrinks by 0.9 after epoch 0 (decay at the END of 0)
    assert [r["w_kl"] for r in rows] == [1.0, 0.5, 0.5]
    assert [r["w_lb"] for r in rows] == pytest.approx([1.0, 0.9, 0.9])
    experts = [k for k in rows[0] if "@" in k]
    assert len(experts) == 4 and all(sum(r[k] for k in experts) == pytest.approx(1.0) for r in rows)


@pytest.mark.parametrize("name", ["mst", "crd", "mgdfr"])
def test_a_methods_own_state_round_trips(name):
    """What a method saves for resume restores the exact state: a fresh method loaded from it saves the same."""
    trio = bn_trio("audio")
    splits = {"train": random_split(24), "val": random_split(8, seed=2)}
    settings = dataclasses.replace(
        DistillParams(), method=name, epochs=2, batch_size=8, constants={"crd": {"negatives": 8}}
    )
    cls = method_class(name)
    masks = build_masks(trio, splits["train"].batch(torch.arange(2)), layers=2, heads=1, factor=32)
    context = DistillContext(settings, trio, ModalNet(trio.spec.build_student(), ("audio",)), splits, "cpu", masks)
    first = cls(context)
    task = Distillation(first, context.student, splits["val"], 1e-3, torch.device("cpu"), "fp32")
    run_epochs(task, splits["train"], LoopConfig(2, 8, torch.device("cpu")))
    saved = first.state_dict()
    second = cls(context)
    second.load_state_dict(saved)
    again = second.state_dict()
    for key, value in saved.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, again[key]), key
        else:
            assert value == again[key], key
    if name == "mst":
        assert saved["w_kl"] == 0.5 and second.w_kl == 0.5
    if name == "mgdfr":
        assert second.frozen_modules() == [second.teacher] and not any(
            p.requires_grad for p in second.teacher.parameters()
        )
