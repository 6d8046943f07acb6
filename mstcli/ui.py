"""Rich output shared by the commands: messages through Python ``logging``, progress bars on stderr, tables on
stdout.

Every message of a stage (epoch lines, notes, warnings) goes through the ``mstcli`` logger, so ``--quiet`` (errors
only) and ``--verbose`` (debug notes too) act everywhere and a warning is never lost in a redirected stream. On a
terminal the handler is Rich's and shares its console with the progress bars, so lines print above the bars; when
stderr is not a terminal (DVC, CI, ``nohup``) it is a plain handler: one unpadded line per message.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")

LOGGER_NAME = "mstcli"
QUIET, NORMAL, VERBOSE = logging.ERROR, logging.INFO, logging.DEBUG
_console: Console | None = None


_live: list = []  # progress displays running now (closed by the command if a stage stops with an error)


def register_live(display) -> None:
    _live.append(display)


def unregister_live(display) -> None:
    if display in _live:
        _live.remove(display)


def close_live_displays() -> None:
    while _live:
        _live.pop().stop()


def logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def stderr_console() -> Console:
    """The one stderr console of this process (progress bars and the terminal log handler share it)."""
    global _console
    if _console is None:
        # quiet on all but the first process of a torchrun job (RANK 0), so a job prints its progress once
        _console = Console(stderr=True, soft_wrap=True, quiet=os.environ.get("RANK", "0") != "0")
    return _console


class _Prefixed(logging.Formatter):
    """``warning: ...`` / ``error: ...`` for those levels, the bare message otherwise."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"{record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


class _CurrentStderr(logging.StreamHandler):
    """A plain handler on whatever ``sys.stderr`` is at the time of the message (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(quiet: bool = False, verbose: bool = False, level: int | None = None) -> None:
    """Route the ``mstcli`` logger to stderr at the level the command asked for (idempotent); ``level``
    overrides both flags (the bench scripts use ``logging.WARNING``: no epoch lines, every warning)."""
    from rich.highlighter import NullHighlighter
    from rich.logging import RichHandler

    log = logger()
    for handler in list(log.handlers):
        log.removeHandler(handler)
    console = stderr_console()
    if console.is_terminal:
        handler: logging.Handler = RichHandler(
            console=console,
            show_time=False,
            show_level=False,
            show_path=False,
            markup=False,
            highlighter=NullHighlighter(),
            keywords=[],
        )
    else:
        handler = _CurrentStderr()
    handler.setFormatter(_Prefixed("%(message)s"))
    log.addHandler(handler)
    chosen = level if level is not None else QUIET if quiet else VERBOSE if verbose else NORMAL
    if os.environ.get("RANK", "0") != "0":  # under torchrun the first process alone reports; errors from every one
        chosen = max(chosen, logging.ERROR)
    log.setLevel(chosen)
    log.propagate = False


def is_quiet() -> bool:
    return logger().getEffectiveLevel() > logging.WARNING


def shows_progress(console: Console | None = None) -> bool:
    """Live bars only on a terminal, and not under --quiet."""
    return (console or stderr_console()).is_terminal and not is_quiet()


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
    with Progress(*columns, console=console, transient=transient, disable=not shows_progress(console)) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def track(items: Iterable[T], total: int, description: str, console: Console | None = None) -> Iterator[T]:
    """Yield ``items`` under a transient progress bar."""
    with progress_bar(description, total, console, transient=True) as advance:
        for item in items:
            yield item
            advance(1)


def format_values(values: dict[str, float]) -> str:
    return "  ".join(f"{k} {v * 100:.1f}%" if k.endswith("acc") else f"{k} {v:.4g}" for k, v in values.items())


def epoch_line(stage: str, epoch: int, epochs: int, values: dict[str, float]) -> str:
    return f"{stage} epoch {epoch + 1}/{epochs}  " + format_values(values)
