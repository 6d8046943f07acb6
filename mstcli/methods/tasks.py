"""Task kinds: what changes between per-sample classification and per-pixel segmentation (NYU-Depth-V2).

The stages and MST-Distill's losses are written once; the few things that depend on the shape of the logits and
labels come from the run's :class:`TaskKind` (``RunSpec.task`` names it, ``TASKS`` is the registry):

* ``ce``: the mean CE of a batch. Segmentation ignores void pixels (label 0), as the reference (ignore_index=0).
* ``kd_per_sample``: tau^2 KL(p(target) || p(trained)) per sample. Segmentation takes the KL over the class axis
  at every pixel and averages it over the H x W pixels, void ones included (the reference, §6.6-9: its KL has
  no mask); ``kd`` is its batch mean, so a dense KD is the per-pixel mean of §2.0.
* ``accuracy``: a batch's train accuracy for the curves (segmentation: pixel accuracy over labelled pixels).
* ``val_loss_and_accuracy``: validation CE and accuracy over a split. Classification keeps its one-shot
  ``predict``; segmentation sums batch by batch (a split's logits are 14 GB at 480 x 640).
* ``gate``: S3's router (``GateNet`` on the logits, or ``DenseGateNet`` on the per-pixel logits).
* ``frozen_outputs``: a frozen net's outputs over a split, computed once (S2's student targets, S3's expert bank):
  classification keeps float32 banks; segmentation stores them as float16 on the training device when they fit
  ``common.memory_mb`` (half the bytes; logits need no more precision for a tau = 4 KL), else ``None`` and the
  caller recomputes them every batch (the reference's way).
* ``methods``: the S3 methods that support the kind (None: all). The comparison methods are written for
  per-sample logits; on a dense data set only ``none`` and ``mst`` run. ``gate_inputs``: what S3's router may
  read (the student's penultimate features are per sample only).
* ``void``: the label left out of CE and accuracy (segmentation's 0; None for classification).
* ``test_metrics``: ``mst eval``'s figures and confusion.csv (per sample, or the per-pixel class x class matrix);
  ``forward_batch``: the rows per forward of such a pass (capped for dense logits).

Each kind is a subclass of :class:`TaskKind` with one instance in ``TASKS``: a stage or method asks the run's
kind, it does not branch on the kind's name.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mstcli.engine import distributed
from mstcli.engine.bank import logit_bank
from mstcli.engine.evaluation import classification_metrics, loss_and_accuracy, predict
from mstcli.engine.runtime import autocast
from mstcli.engine.segmentation import VOID, confusion_csv, dense_confusion, segmentation_metrics
from mstcli.engine.splits import Split
from mstcli.errors import UserError
from mstcli.methods import losses
from mstcli.methods.mst.dense_gate import DenseGateNet
from mstcli.methods.mst.router import GateNet
from mstcli.ui import logger

Net = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def dense_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels.long(), ignore_index=VOID)


def dense_kd_per_sample(trained: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """... x C x H x W logits -> ...: the per-pixel KD (class axis -3) averaged over all pixels, void included;
    B x C x H x W gives B, and S3's B x 1 x C x H x W against the chosen B x k x C x H x W gives B x k."""
    per_pixel = losses.kd_per_sample(trained.movedim(-3, -1), target.movedim(-3, -1), temperature)
    return per_pixel.flatten(-2).mean(dim=-1)


def dense_kd(trained: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    return dense_kd_per_sample(trained, target, temperature).mean()


def dense_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    valid = labels != VOID
    return ((logits.argmax(1) == labels) & valid).sum() / valid.sum().clamp_min(1)


def class_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) == labels).float().mean()


class HalfBank:
    """Frozen outputs kept as float16, read back as float32 (``bank[rows]``, ``bank[:, rows]`` for E x N x ...)."""

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def __getitem__(self, key) -> torch.Tensor:
        return self.data[key].float()

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()


class Recomputed:
    """A frozen net's outputs for split rows, computed when asked (``targets[rows]``), for outputs too large to
    keep: S2's student targets at 480 x 640."""

    def __init__(self, net: Net, split: Split) -> None:
        self.net, self.split = net, split

    @torch.no_grad()
    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        return self.net(self.split.batch(rows).inputs)


def _dense_frozen(
    net: Net, split: Split, batch_size: int, memory_mb: float, outputs: int, per_row: tuple[int, ...], what: str
) -> HalfBank | None:
    size = 2 * outputs * len(split) * math.prod(per_row)
    if size > memory_mb * 2**20:
        logger().info(f"{what}: {size / 2**30:.1f} GiB as float16 > common.memory_mb, recomputed every batch")
        return None
    row_dim = 1 if outputs > 1 else 0
    return HalfBank(logit_bank(lambda inputs: net(inputs).half(), split, batch_size, row_dim=row_dim))


class TaskKind(ABC):
    """What a run's task decides, asked by the stages and methods instead of branching on the task's name. One
    instance per kind (``TASKS``); the subclasses differ in the shape of the logits and labels they reduce."""

    name: ClassVar[str]
    gate_net: ClassVar[type[nn.Module]]  # S3's router for these logits
    dense: ClassVar[bool]  # logits and labels per pixel (C x H x W, H x W) rather than per sample
    val_batch: ClassVar[int]  # rows per validation forward (a dense batch of logits is B x C x H x W)
    void: ClassVar[int | None]  # the label that marks "no class here", left out of CE and accuracy; None: none
    methods: ClassVar[frozenset[str] | None] = None  # the S3 methods that support the kind (None: all)
    #: distill.gate_input values the router can read (the student's penultimate features are per sample)
    gate_inputs: ClassVar[frozenset[str]] = frozenset({"logits", "features"})

    @abstractmethod
    def ce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean CE of a batch."""

    @abstractmethod
    def kd_per_sample(self, trained: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
        """tau^2 KL(p(target) || p(trained)) per sample."""

    @abstractmethod
    def kd(self, trained: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
        """The batch mean of ``kd_per_sample``."""

    @abstractmethod
    def accuracy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """A batch's train accuracy, for the curves."""

    @abstractmethod
    def val_loss_and_accuracy(
        self, net: Net, split: Split, batch_size: int, device: torch.device, precision: str
    ) -> tuple[float, float]:
        """Mean CE and accuracy of ``net`` (eval mode) over ``split``."""

    @abstractmethod
    def frozen_outputs(
        self, net: Net, split: Split, batch_size: int, memory_mb: float, outputs: int, per_row: tuple[int, ...]
    ):
        """``net``'s outputs over ``split`` computed once (``outputs`` > 1: E x N x ..., as the expert bank), or
        None where they are too large to keep (the caller then recomputes)."""

    @abstractmethod
    def student_targets(self, trio, split: Split, batch_size: int, memory_mb: float):
        """S2's targets: the frozen student's logits over ``split`` (``targets[rows]``)."""

    @abstractmethod
    def logit_shape(self, spec) -> tuple[int, ...]:
        """The per-sample shape of a run's logits."""

    @abstractmethod
    def test_metrics(self, net: Net, test: Split, batch_size: int, names: list[str]) -> tuple[dict, str]:
        """``mst eval``'s figures of a student over the test split and the text of its confusion.csv."""

    def gate(self, num_inputs: int, num_experts: int) -> nn.Module:
        return self.gate_net(num_inputs, num_experts)

    def forward_batch(self, batch_size: int) -> int:
        """Rows per forward of an evaluation pass asked to use ``batch_size`` (a dense batch of logits is
        B x C x H x W: segmentation caps it at ``val_batch``)."""
        return batch_size

    def check_method(self, method: str) -> None:
        if self.methods is not None and method not in self.methods:
            raise UserError(
                f"distill.method={method} does not support {self.name} data sets (these do: "
                f"{', '.join(sorted(self.methods))})"
            )

    def check_gate_input(self, gate_input: str) -> None:
        if gate_input not in self.gate_inputs:
            raise UserError(
                f"distill.gate_input={gate_input} is for per-sample logits; {self.name} data sets use "
                f"{', '.join(sorted(self.gate_inputs))}"
            )

    def expert_bank(self, experts: Net, train: Split, context) -> torch.Tensor | HalfBank | None:
        """S3's E x N_train x ... bank of the specialized teachers' logits (a DistillContext gives the batch size,
        the run's spec and common.memory_mb), or None for one too large to keep."""
        return self.frozen_outputs(
            experts, train, context.settings.batch_size, context.memory_mb, len(experts),
            self.logit_shape(context.trio.spec),
        )  # fmt: skip


class Classification(TaskKind):
    """One label per sample; logits are B x C. Validation keeps its one-shot ``predict``; banks are float32."""

    name = "classification"
    gate_net = GateNet
    dense = False
    val_batch = 1024
    void = None

    # the plain functions themselves (not wrappers): S3's compiled step and S1's loss receive them as they were
    ce = staticmethod(F.cross_entropy)
    kd_per_sample = staticmethod(losses.kd_per_sample)
    kd = staticmethod(losses.kd_loss)
    accuracy = staticmethod(class_accuracy)

    def val_loss_and_accuracy(
        self, net: Net, split: Split, batch_size: int, device: torch.device, precision: str
    ) -> tuple[float, float]:
        with autocast(device, precision):
            logits = predict(net, split, batch_size).float()
        return loss_and_accuracy(logits, split.labels)

    def frozen_outputs(
        self, net: Net, split: Split, batch_size: int, memory_mb: float, outputs: int, per_row: tuple[int, ...]
    ):
        return logit_bank(net, split, batch_size, row_dim=1 if outputs > 1 else 0)

    def student_targets(self, trio, split: Split, batch_size: int, memory_mb: float):
        return logit_bank(trio.student, split, max(batch_size, 1024))

    def logit_shape(self, spec) -> tuple[int, ...]:
        return (spec.num_classes,)

    def test_metrics(self, net: Net, test: Split, batch_size: int, names: list[str]) -> tuple[dict, str]:
        """Per-sample figures and confusion.csv as one (actual, predicted) row per test sample."""
        predicted = predict(net, test, batch_size).argmax(1).cpu().numpy()
        actual = test.labels.cpu().numpy()
        lines = ["actual,predicted"] + [
            f"{names[a]},{names[p]}" for a, p in zip(actual.tolist(), predicted.tolist(), strict=True)
        ]
        return classification_metrics(predicted, actual, names), "\n".join(lines) + "\n"


class Segmentation(TaskKind):
    """One label per pixel (NYU-Depth-V2), void pixels (label 0) left out of CE and accuracy as in the reference;
    logits are B x C x H x W. Validation sums batch by batch (a split's logits are 14 GB at 480 x 640); banks are
    float16 when they fit ``common.memory_mb``, else recomputed."""

    name = "segmentation"
    gate_net = DenseGateNet
    dense = True
    val_batch = 8
    void = VOID
    methods = frozenset({"none", "mst"})
    gate_inputs = frozenset({"logits"})

    ce = staticmethod(dense_ce)
    kd_per_sample = staticmethod(dense_kd_per_sample)
    kd = staticmethod(dense_kd)
    accuracy = staticmethod(dense_accuracy)

    def val_loss_and_accuracy(
        self, net: Net, split: Split, batch_size: int, device: torch.device, precision: str
    ) -> tuple[float, float]:
        """Over the labelled pixels."""
        sums = torch.zeros(3, dtype=torch.float64, device=split.labels.device)  # CE sum, right, labelled pixels
        with torch.no_grad():
            for rows in distributed.shard_batches(len(split), batch_size, split.labels.device):
                batch = split.batch(rows)
                with autocast(device, precision):
                    logits = net(batch.inputs).float()
                labels = batch.labels.long()
                valid = labels != VOID
                sums[0] += F.cross_entropy(logits, labels, ignore_index=VOID, reduction="sum")
                sums[1] += ((logits.argmax(1) == labels) & valid).sum()
                sums[2] += valid.sum()
        sums = distributed.sum_over_ranks(sums)
        count = max(float(sums[2]), 1.0)
        return float(sums[0]) / count, float(sums[1]) / count

    def frozen_outputs(
        self, net: Net, split: Split, batch_size: int, memory_mb: float, outputs: int, per_row: tuple[int, ...]
    ):
        return _dense_frozen(net, split, batch_size, memory_mb, outputs, per_row, "frozen outputs")

    def student_targets(self, trio, split: Split, batch_size: int, memory_mb: float):
        """A bank, or beyond ``memory_mb`` a :class:`Recomputed` that computes a batch's rows when asked."""
        bank = self.frozen_outputs(trio.student, split, batch_size, memory_mb, 1, self.logit_shape(trio.spec))
        return bank if bank is not None else Recomputed(trio.student, split)

    def logit_shape(self, spec) -> tuple[int, ...]:
        """C x H x W (the frames' size)."""
        return (spec.num_classes, *spec.shapes[spec.student][1:])

    def forward_batch(self, batch_size: int) -> int:
        return min(batch_size, self.val_batch)

    def test_metrics(self, net: Net, test: Split, batch_size: int, names: list[str]) -> tuple[dict, str]:
        """Per-pixel figures (engine/segmentation.py) and confusion.csv as the class x class matrix;
        ``eval.batch_size`` frames per forward are capped at 8 (a batch of logits is B x 41 x H x W)."""
        confusion = dense_confusion(net, test, self.forward_batch(batch_size), len(names)).numpy()
        metrics = {"task": "segmentation", **segmentation_metrics(confusion, names, len(test))}
        return metrics, confusion_csv(confusion, names)


CLASSIFICATION = Classification()
SEGMENTATION = Segmentation()
TASKS: dict[str, TaskKind] = {kind.name: kind for kind in (CLASSIFICATION, SEGMENTATION)}


def task_kind(name: str) -> TaskKind:
    return TASKS[name]
