"""Where a result came from, recorded the same way in every checkpoint and every ``metrics.json``; and the
inputs record of a stage's checkpoint (``stage_inputs``), which its resume key and the next stage check.

A number is only worth keeping with what made it: the settings (all of them, resolved after params.yaml and the
``-S`` overrides), the method's fixed constants, the data (data set, feature-file fingerprint, split group), the
code (git commit and whether the tree had uncommitted changes) and the software and device it ran on. There is no
time stamp, so a rerun of the same settings on the same code writes the same bytes (DVC's run-cache and the
repeatability checks rely on that).

The git facts are read once per process from the repository that holds the imported ``mstcli`` package; outside a
git checkout (an installed wheel, no git binary) they are ``"unknown"``, never an error. ``dvc.lock`` is left out
of the dirty check: ``dvc repro`` rewrites it between stages, which says nothing about the code.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mstcli.data.store import FeatureFile

UNKNOWN = "unknown"
IGNORED_FOR_DIRTY = (":(exclude)dvc.lock",)


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


@functools.cache
def code_version(package_dir: str | None = None) -> dict[str, Any]:
    """``{"commit": sha | "unknown", "dirty": bool | "unknown"}`` of the checkout holding ``package_dir``."""
    import mstcli

    folder = Path(package_dir or Path(mstcli.__file__).parent)
    top = _git(folder, "rev-parse", "--show-toplevel")
    commit = _git(folder, "rev-parse", "HEAD") if top else None
    if not top or not commit:
        return {"commit": UNKNOWN, "dirty": UNKNOWN}
    status = _git(Path(top.strip()), "status", "--porcelain", "--untracked-files=no", "--", *IGNORED_FOR_DIRTY)
    return {"commit": commit.strip(), "dirty": UNKNOWN if status is None else bool(status.strip())}


def software_versions() -> dict[str, str]:
    import torch

    import mstcli

    return {"mstcli": str(mstcli.__version__), "torch": str(torch.__version__), "python": platform.python_version()}


def device_description(device: Any) -> str:
    """The device a result was computed on, e.g. ``cuda:0 (NVIDIA H200)`` or ``cpu (x86_64, 2 threads)``."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{device.type} ({platform.machine()}, {torch.get_num_threads()} threads)"


def provenance(
    settings: dict[str, Any],
    data: dict[str, Any] | None,
    device: Any,
    method: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance record: ``settings`` (every section, resolved), ``method`` (name and constants, see
    methods/constants.py), ``data`` (dataset, features fingerprint, split_group), ``code``, ``versions``, ``device``."""
    return {
        "settings": settings,
        "method": method,
        "data": data,
        "code": code_version(),
        "versions": software_versions(),
        "device": device_description(device),
    }


def result_provenance(params: Any, features: Any, split_group: int, device: Any, method: dict[str, Any] | None):
    """The record of a result made from ``features`` (a FeatureFile) with ``params`` (config.Params)."""
    from mstcli.data.fingerprint import feature_fingerprint

    data = {
        "dataset": features.dataset,
        "features": feature_fingerprint(features),
        "feature_file": str(features.path),
        "split_group": split_group,
    }
    return provenance(params.to_dict(), data, device, method)


def stage_inputs(features: FeatureFile, split_group: int) -> dict[str, Any]:
    """The inputs a stage's checkpoint records (data set, feature-file fingerprint, split group), as the
    :class:`~mstcli.engine.checkpoints.Inputs` of ``features``."""
    import dataclasses

    from mstcli.data.fingerprint import feature_fingerprint
    from mstcli.engine.checkpoints import Inputs

    return dataclasses.asdict(Inputs(features.dataset, feature_fingerprint(features), split_group))
