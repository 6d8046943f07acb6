"""Rich output shared by the commands: a stderr console for progress and messages, tables on stdout."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def stderr_console() -> Console:
    """Quiet on all but the first process of a torchrun job (RANK 0), so a job prints its progress once."""
    return Console(stderr=True, soft_wrap=True, quiet=os.environ.get("RANK", "0") != "0")


@contextmanager
def progress_bar(
    description: str, total: int, console: Console | None = None, transient: bool = False
) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; yields ``advance(n)``. Quiet (no animation) when stderr is not a terminal."""
    console = console or stderr_console()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=transient, disable=not console.is_terminal) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def track(items: Iterable[T], total: int, description: str, console: Console | None = None) -> Iterator[T]:
    """Yield ``items`` under a transient progress bar (the batches of an epoch)."""
    with progress_bar(description, total, console, transient=True) as advance:
        for item in items:
            yield item
            advance(1)


def epoch_line(stage: str, epoch: int, epochs: int, values: dict[str, float]) -> str:
    parts = [f"{k} {v * 100:.1f}%" if k.endswith("acc") else f"{k} {v:.4g}" for k, v in values.items()]
    return f"{stage} epoch {epoch + 1}/{epochs}  " + "  ".join(parts)
