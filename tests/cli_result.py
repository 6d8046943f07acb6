"""What a refused ``mst`` command looks like under Typer's CliRunner, checked in one place.

CliRunner never prints an exception's traceback: an exception that escapes a command ends up in
``result.exception`` with exit code 1, and the output stays clean. So "no traceback in the output" proves nothing;
what a refusal by mst itself leaves is a ``SystemExit`` with code 2 (``typer.Exit`` raised by the CLI's UserError
frame) and exactly one line, ``error: <message>``. Click's own usage errors also exit 2, but print a usage box, not
one ``error:`` line, so they fail these checks too.
"""

from __future__ import annotations

import traceback
from typing import Any


def escaped(result: Any) -> str:
    """The traceback of an exception that escaped the command (shown when a check fails), or ""."""
    if result.exc_info is None or isinstance(result.exception, SystemExit):
        return ""
    return "".join(traceback.format_exception(*result.exc_info))


def one_line_error(result: Any, *culprits: str) -> str:
    """The single ``error:`` line of a command mst refused, checked to name every culprit."""
    assert isinstance(result.exception, SystemExit), escaped(result) or result.output
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for culprit in culprits:
        assert culprit in lines[0], (culprit, lines[0])
    return lines[0]


def error_lines(result: Any) -> list[str]:
    """The ``error:`` lines of a command that exited 2 by mst's own refusal (other output may precede them)."""
    assert isinstance(result.exception, SystemExit), escaped(result) or result.output
    assert result.exit_code == 2, result.output
    return [line for line in result.output.splitlines() if line.startswith("error:")]
