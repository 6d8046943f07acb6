"""S3's own step compiled (common.compile) gives the eager step's loss and gradients, and a compiler that
fails leaves the stage running eagerly with a warning."""

import dataclasses
import logging

import torch
from conftest import random_split, tiny_trio
from test_fast_path import loaded_masks, masks_checkpoint

from mstcli.config import DistillParams
from mstcli.engine.runtime import CompiledOrEager
from mstcli.methods.base import DistillContext
from mstcli.methods.mst.dynamic_distillation import MSTDistill


def _loss_and_grads(tmp_path, compile: bool, k: int = 2):
    trio = tiny_trio("image")
    train = random_split(24)
    if not (tmp_path / "masks.pt").exists():
        masks_checkpoint(trio, tmp_path / "masks.pt", train)
    settings = dataclasses.replace(DistillParams(), k=k, gate_signal="weighted")
    torch.manual_seed(3)
    context = DistillContext(settings, trio, trio.student, {"train": train}, "cpu", loaded_masks(tmp_path / "masks.pt"))
    method = MSTDistill(dataclasses.replace(context, compile=compile) if compile else context)
    student_logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    loss, terms = method.loss(train.batch(torch.tensor([5, 17, 2, 23, 8, 0])), student_logits)
    loss.backward()
    grads = [p.grad for p in method.gate.parameters()]
    return loss.detach(), terms, student_logits.grad, grads, method.counts, method.terms.compiled


def test_the_compiled_s3_step_equals_the_eager_one(tmp_path):
    eager = _loss_and_grads(tmp_path, compile=False)
    compiled = _loss_and_grads(tmp_path, compile=True)
    assert float(eager[1]["distill"]) > 0
    assert eager[5] is None and compiled[5] is not None  # the compiled step ran compiled, it did not fall back
    assert torch.allclose(eager[0], compiled[0], atol=1e-5)
    for name in ("distill", "balance", "ce"):
        assert abs(float(eager[1][name]) - float(compiled[1][name])) <= 1e-5, name
    assert torch.allclose(eager[2], compiled[2], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(eager[3], compiled[3], strict=True))
    assert torch.equal(eager[4], compiled[4])  # the same experts were chosen and counted


def test_a_failing_compiler_falls_back_to_the_eager_function(monkeypatch):
    from mstcli.ui import logger

    calls, warnings = [], []

    class Catch(logging.Handler):  # on mst's own logger: after a CLI run it no longer propagates to the root
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append((record.levelno, record.getMessage()))

    handler = Catch()
    logger().addHandler(handler)
    monkeypatch.setattr(logger(), "level", logging.INFO)

    def broken_compile(fn, **_kwargs):
        def run(*_args):
            calls.append("compiled")
            raise RuntimeError("no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    step = CompiledOrEager(lambda x: x * 2, True, "test step")
    try:
        assert step(torch.tensor(3.0)).item() == 6.0
        assert step(torch.tensor(4.0)).item() == 8.0
    finally:
        logger().removeHandler(handler)
    assert calls == ["compiled"]  # tried once, then eager for good
    message = "test step: torch.compile failed (RuntimeError: no C++ compiler); running eagerly"
    assert warnings == [(logging.WARNING, message)]
    assert CompiledOrEager(lambda x: x, False, "off").compiled is None
