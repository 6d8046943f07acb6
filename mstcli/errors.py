"""The one exception type that reaches the user as a one-line message and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (params, paths, data). The CLI prints ``error: <message>`` and exits 2.

    Anything else that escapes is a bug in mst and keeps its traceback.
    """

    exit_code = 2
