"""The ``mst`` command line: one thin function per command (read the settings, call the stage, print a summary),
one module per command group: the pipeline's stages (pipeline.py), putting a student to use (deploy.py), showing
what mst has and holds (inspect.py), ``mst bench`` (bench.py) and ``mst debug`` (debug.py), on the frame they
share (frame.py: the app, the common options, ``error:`` lines and exit code 2).
"""

from __future__ import annotations

import os
import sys

from mstcli.cli.frame import app

# each module registers its commands on import, in the order `mst --help` lists them
# isort: off
from mstcli.cli import pipeline  # noqa: F401, E402
from mstcli.cli import deploy  # noqa: F401, E402
from mstcli.cli import inspect  # noqa: F401, E402
from mstcli.cli import bench  # noqa: F401, E402
from mstcli.cli import debug  # noqa: F401, E402

# isort: on

__all__ = ["app", "main"]


def _offline_environment() -> None:
    """No network at run time: make Hugging Face fail at once instead of retrying for half a minute."""
    for key in (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "DVC_NO_ANALYTICS",
        "DVC_STUDIO_OFFLINE",
    ):
        os.environ.setdefault(key, "1")



def main() -> None:
    _offline_environment()
    app(prog_name="mst")


if __name__ == "__main__":
    sys.exit(main())
