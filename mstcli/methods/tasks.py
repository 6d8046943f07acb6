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
  per-sample logits; on a dense data set only ``none`` and ``mst`` run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mstcli.engine import distributed
from mstcli.engine.bank import logit_bank
from mstcli.engine.evaluation import loss_and_accuracy, predict
from mstcli.engine.runtime import autocast
from mstcli.engine.segmentation import VOID
from mstcli.engine.splits import Split
from mstcli.errors import UserError
from mstcli.methods.losses import kd_loss, kd_per_sample
from mstcli.methods.mst.dense_gate import DenseGateNet
from mstcli.methods.mst.router import GateNet
from mstcli.ui import logger

Net = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def dense_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels.long(), ignore_index=VOID)


def dense_kd_per_sample(trained: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """... x C x H x W logits -> ...: the per-pixel KD (class axis -3) averaged over all pixels, void included;
    B x C x H x W gives B, and S3's B x 1 x C x H x W against the chosen B x k x C x H x W gives B x k."""
    per_pixel = kd_per_sample(trained.movedim(-3, -1), target.movedim(-3, -1), temperature)
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


@dataclass(frozen=True)
class TaskKind:
    name: str
    ce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    kd_per_sample: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
    kd: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
    accuracy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    gate_net: type[nn.Module]
    dense: bool
    val_batch: int  # rows per validation forward (a dense batch of logits is B x C x H x W)
    methods: frozenset[str] | None = None

    def gate(self, num_inputs: int, num_experts: int) -> nn.Module:
        return self.gate_net(num_inputs, num_experts)

    def check_method(self, method: str) -> None:
        if self.methods is not None and method not in self.methods:
            raise UserError(
                f"distill.method={method} does not support {self.name} data sets (these do: "
                f"{', '.join(sorted(self.methods))})"
            )

    def val_loss_and_accuracy(
        self, net: Net, split: Split, batch_size: int, device: torch.device, precision: str
    ) -> tuple[float, float]:
        """Mean CE and accuracy of ``net`` (eval mode) over ``split``: per sample, or per labelled pixel."""
        if not self.dense:
            with autocast(device, precision):
                logits = predict(net, split, batch_size).float()
            return loss_and_accuracy(logits, split.labels)
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
        """``net``'s outputs over ``split`` computed once (``outputs`` > 1: E x N x ..., as the expert bank), or
        None for a dense one beyond ``memory_mb`` (the caller then recomputes)."""
        if not self.dense:
            return logit_bank(net, split, batch_size, row_dim=1 if outputs > 1 else 0)
        return _dense_frozen(net, split, batch_size, memory_mb, outputs, per_row, "frozen outputs")

    def student_targets(self, trio, split: Split, batch_size: int, memory_mb: float):
        """S2's targets: the frozen student's logits over ``split``, a bank (``targets[rows]``), or for dense logits
        beyond ``memory_mb`` a :class:`Recomputed` that computes a batch's rows when asked."""
        if not self.dense:
            return logit_bank(trio.student, split, max(batch_size, 1024))
        bank = self.frozen_outputs(trio.student, split, batch_size, memory_mb, 1, logit_shape(trio.spec))
        return bank if bank is not None else Recomputed(trio.student, split)

    def expert_bank(self, experts: Net, train: Split, context) -> torch.Tensor | HalfBank | None:
        """S3's E x N_train x ... bank of the specialized teachers' logits (a DistillContext gives the batch size,
        the run's spec and common.memory_mb), or None for a dense one too large to keep."""
        return self.frozen_outputs(
            experts, train, context.settings.batch_size, context.memory_mb, len(experts), logit_shape(context.trio.spec)
        )


CLASSIFICATION = TaskKind(
    name="classification",
    ce=F.cross_entropy,
    kd_per_sample=kd_per_sample,
    kd=kd_loss,
    accuracy=class_accuracy,
    gate_net=GateNet,
    dense=False,
    val_batch=1024,
)
SEGMENTATION = TaskKind(
    name="segmentation",
    ce=dense_ce,
    kd_per_sample=dense_kd_per_sample,
    kd=dense_kd,
    accuracy=dense_accuracy,
    gate_net=DenseGateNet,
    dense=True,
    val_batch=8,
    methods=frozenset({"none", "mst"}),
)
TASKS: dict[str, TaskKind] = {kind.name: kind for kind in (CLASSIFICATION, SEGMENTATION)}


def task_kind(name: str) -> TaskKind:
    return TASKS[name]


def logit_shape(spec) -> tuple[int, ...]:
    """The per-sample shape of a run's logits: C, or C x H x W for a dense task (the frames' size)."""
    if not TASKS[spec.task].dense:
        return (spec.num_classes,)
    return (spec.num_classes, *spec.shapes[spec.student][1:])
