"""The one epoch loop under every stage: S1, S2, S3, every comparison method and the bench scripts.

A stage says what is its own through an :class:`EpochTask` (which nets train, the loss of a batch, what an epoch
ends with and how the kept state is chosen); :func:`run_epochs` does the rest the same way for all of them:

- batches in the order of a seeded generator (the same order on every run and after a resume);
- precision (bf16 autocast on CUDA when asked), the optimizer step, per-epoch means of every loss term kept on
  the device (no GPU sync per step);
- progress (engine/progress.py: epoch and batch bars on a terminal, one line per epoch) and the per-epoch curves,
  handed to the stage's logbook (engine/logbook.py, dvclive) when it has one;
- best-state selection: the state at the epoch with the lowest score, or the last one when a task has no score;
- the NaN guard: a non-finite loss term stops the stage with a one-line error naming the stage, the epoch and
  the term; nothing is written but the resume state of the last good epoch, which stays on disk;
- resume: after every epoch the full state (nets, optimizer, every RNG, the task's own state, the best state so
  far and the curves) is written atomically (engine/resume.py); a rerun with the same settings and inputs
  continues after the last finished epoch and ends with the same result as an uninterrupted run.
"""

from __future__ import annotations

import copy
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.console import Console
from torch import nn

from mstcli.engine import distributed
from mstcli.engine.checkpoints import ResumeState
from mstcli.engine.logbook import Logbook
from mstcli.engine.meters import EpochMeans
from mstcli.engine.progress import EpochProgress
from mstcli.engine.resume import ResumeStore, capture_rng, restore_rng
from mstcli.engine.runtime import autocast
from mstcli.engine.splits import Split, batches, seeded_generator
from mstcli.errors import UserError
from mstcli.ui import logger


@dataclass
class EpochEnd:
    """What a task reports after an epoch: figures for the curves, and the score that selects the kept state."""

    row: dict[str, float] = field(default_factory=dict)
    score: float | None = None  # lower is better; None keeps the last epoch's state
    shown: dict[str, float] | None = None  # what the epoch line prints after the loss (default: ``row``)


class EpochTask(ABC):
    """One stage's share of training. Subclasses set ``name`` (used in messages, e.g. "S1") and ``optimizer``."""

    name: str
    optimizer: torch.optim.Optimizer

    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """The nets this stage trains, by a stable name (their states go into the resume state)."""

    def start_epoch(self, epoch: int) -> None:  # noqa: B027 - an optional hook: most tasks have no phases
        """Called before epoch ``epoch`` (0-based), also the first one after a resume: phase switches go here."""

    def train_mode(self) -> None:
        """Called before every epoch's batches; a task with frozen parts keeps them in eval mode here."""
        for module in self.modules().values():
            module.train()

    @abstractmethod
    def batch_loss(self, batch: Split) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """The loss of one training batch and its named terms (tensors are averaged on the device)."""

    @abstractmethod
    def end_epoch(self, epoch: int) -> EpochEnd:
        """Validation and bookkeeping after epoch ``epoch`` (0-based)."""

    def selected_state(self) -> Any:
        """What is kept from the best epoch (a copy is taken); the default keeps every trained net."""
        return {name: module.state_dict() for name, module in self.modules().items()}

    def state_dict(self) -> dict[str, Any]:
        """The task's own state besides nets and optimizer (decayed weights, memory banks, ...), for resume."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional: the default state is empty
        """Restore what ``state_dict`` returned."""


@dataclass
class LoopConfig:
    epochs: int
    batch_size: int
    device: torch.device
    precision: str = "fp32"
    order_seed: int = 0  # seed of the batch-order generator
    resume_every: int = 1  # write the resume state after every N-th epoch (0: never)
    # train.augment (engine/augment.py): changes a training batch, drawing from the batch-order generator so that
    # a resumed stage draws what an uninterrupted one would
    augment: Callable[[Split, torch.Generator], Split] | None = None


@dataclass
class LoopResult:
    rows: list[dict[str, Any]]  # one per epoch: the means of the loss terms, the task's row, seconds
    best_epoch: int
    best_score: float | None
    best_state: Any  # None when the task has no score: its nets after the last epoch are the result


class NonFiniteLoss(UserError):
    """A loss term became NaN or infinite: the stage stops instead of saving a diverged model."""


def run_epochs(
    task: EpochTask,
    train: Split,
    config: LoopConfig,
    store: ResumeStore | None = None,
    console: Console | None = None,
    logbook: Logbook | None = None,
) -> LoopResult:
    generator = seeded_generator(config.order_seed)
    rows: list[dict[str, Any]] = []
    best_epoch, best_score, best_state = -1, None, None
    start, last_saved = 0, None  # last_saved: the epoch whose state is on disk
    saved = store.load(task.name) if store is not None else None
    if saved is not None:
        for name, module in task.modules().items():
            module.load_state_dict(saved.modules[name])
        task.optimizer.load_state_dict(saved.optimizer)
        task.load_state_dict(saved.task)
        restore_rng(saved.rng, generator)
        rows, start = list(saved.rows), saved.epoch + 1
        last_saved = saved.epoch
        best_epoch, best_score, best_state = saved.best_epoch, saved.best_score, saved.best_state
        logger().info(f"{task.name}: resuming after epoch {start}/{config.epochs} from {store.path}")
    for row in rows if logbook is not None else ():  # a resumed stage's log starts with the epochs it ran before
        logbook.epoch(row)
    n_batches = -(-len(train) // config.batch_size)
    progress = EpochProgress(task.name, config.epochs, n_batches, start, console)
    distributed.check_batches(len(train), config.batch_size, task.name)
    step = distributed.training_step(task.modules(), task.batch_loss)  # DDP under torchrun
    for epoch in range(start, config.epochs):
        started = time.perf_counter()
        task.start_epoch(epoch)
        task.train_mode()
        means = EpochMeans()
        for index, rows_of_batch in enumerate(batches(len(train), config.batch_size, generator, config.device)):
            rows_of_batch, scale = distributed.shard(rows_of_batch)  # this rank's part of the global batch
            batch = train.batch(rows_of_batch)
            if config.augment is not None:
                batch = config.augment(batch, generator)
            with autocast(config.device, config.precision):
                loss, terms = step(batch)
            task.optimizer.zero_grad(set_to_none=True)
            (loss * scale if scale != 1.0 else loss).backward()
            task.optimizer.step()
            means.add({"loss": loss, **terms}, len(rows_of_batch))
            progress.batch(index, len(rows_of_batch), loss, terms)
        totals = means.means(distributed.sum_over_ranks)
        _guard(task.name, epoch, totals, store, last_saved)
        end = task.end_epoch(epoch)
        row = {"epoch": epoch, **totals, **end.row, "epoch_s": time.perf_counter() - started}
        rows.append(row)
        if end.score is None:  # no selection: the nets as they are after the last epoch are the result
            best_epoch, best_score, best_state = epoch, None, None
        elif best_state is None or _better(end.score, best_score):
            best_epoch, best_score, best_state = epoch, end.score, copy.deepcopy(task.selected_state())
        if store is not None and config.resume_every and (epoch + 1) % config.resume_every == 0:
            if distributed.is_main():
                store.save(
                    ResumeState(
                        stage=task.name,
                        key=store.key,
                        epoch=epoch,
                        modules={name: module.state_dict() for name, module in task.modules().items()},
                        optimizer=task.optimizer.state_dict(),
                        task=task.state_dict(),
                        rng=capture_rng(generator),
                        best_epoch=best_epoch,
                        best_score=best_score,
                        best_state=best_state,
                        rows=rows,
                    )
                )
            last_saved = epoch
        shown = {"loss": totals["loss"], **(end.shown if end.shown is not None else end.row)}
        progress.epoch(epoch, shown)
        if logbook is not None:
            logbook.epoch(row)
    progress.close()
    return LoopResult(rows, best_epoch, best_score, best_state)


def _better(score: float, best: float | None) -> bool:
    """Lower is better; a NaN score never replaces a real one."""
    return best is None or math.isnan(best) or score < best


def _guard(stage: str, epoch: int, totals: dict[str, float], store: ResumeStore | None, last_saved: int | None) -> None:
    """Stop on the first non-finite term, naming a specific term before the total it makes non-finite."""
    for term, value in sorted(totals.items(), key=lambda item: item[0] == "loss"):
        if not math.isfinite(value):
            kept = (
                f"the state after epoch {last_saved + 1} stays in {store.path}"
                if store is not None and last_saved is not None
                else "no resume state was saved"
            )
            raise NonFiniteLoss(
                f"{stage}: loss term '{term}' is {value} in epoch {epoch + 1}; stopped without writing outputs"
                f" ({kept}; try a lower learning rate or check the data)"
            )
