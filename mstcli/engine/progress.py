"""What a stage shows while it trains: an epoch bar and a batch bar (running loss and accuracy) on a terminal,
one log line per epoch everywhere (the only output when stderr is not a terminal), nothing under ``--quiet``.

The running figures of the batch bar need the loss on the host, a GPU sync; they are read every few batches and
only while a bar is shown, so a run under DVC or CI never pays for them.
"""

from __future__ import annotations

from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mstcli.ui import epoch_line, format_values, logger, register_live, shows_progress, stderr_console, unregister_live

UPDATES_PER_EPOCH = 20  # batch-bar refreshes of the running figures per epoch


def accuracy_key(terms: dict[str, Any]) -> str | None:
    """The accuracy the batch bar shows: the student's if the stage reports several, else the first one."""
    keys = [k for k in terms if k.endswith("acc")]
    return next((k for k in keys if "student" in k), keys[0] if keys else None)


class EpochProgress:
    """Made by the engine before the first epoch; ``batch(...)`` per batch, ``epoch(...)`` per epoch, ``close()``
    at the end. The bars start with the first batch; a stage stopped by an error has its bars closed by the
    command (ui.close_live_displays), so the terminal is left clean either way."""

    def __init__(self, stage: str, epochs: int, batches: int, first_epoch: int, console: Console | None = None):
        self.stage, self.epochs, self.batches, self.first_epoch = stage, epochs, batches, first_epoch
        self.console = console or stderr_console()
        self.every = max(1, batches // UPDATES_PER_EPOCH)
        self._bar: Progress | None = None
        self._sums: dict[str, float] = {}
        self._seen = 0
        self._started = False

    def _start(self) -> None:
        self._started = True
        if shows_progress(self.console):
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[figures]}"),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._epochs = self._bar.add_task(
                f"{self.stage} epochs", total=self.epochs, completed=self.first_epoch, figures=""
            )
            self._batches = self._bar.add_task(f"{self.stage} batches", total=self.batches, figures="")
            register_live(self._bar)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            unregister_live(self._bar)
            self._bar = None

    def batch(self, index: int, size: int, loss: torch.Tensor, terms: dict[str, Any]) -> None:
        """After batch ``index`` (0-based) of ``size`` rows with its loss and terms."""
        if not self._started:
            self._start()
        if self._bar is None:
            return
        if index == 0:
            self._sums, self._seen = {}, 0
            self._bar.reset(self._batches, total=self.batches, figures="")
        if (index + 1) % self.every == 0 or index + 1 == self.batches:
            key = accuracy_key(terms)
            picked = {"loss": loss, **({key: terms[key]} if key else {})}
            for name, value in picked.items():
                number = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
                self._sums[name] = self._sums.get(name, 0.0) + number * size
            self._seen += size
            running = {name: total / self._seen for name, total in self._sums.items()}
            self._bar.update(self._batches, completed=index + 1, figures=format_values(running))
        else:
            self._bar.update(self._batches, completed=index + 1)

    def epoch(self, epoch: int, shown: dict[str, float]) -> None:
        logger().info(epoch_line(self.stage, epoch, self.epochs, shown))
        if self._bar is not None:
            self._bar.update(self._epochs, completed=epoch + 1)
