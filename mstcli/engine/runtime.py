"""Device choice, thread count, seeding and numeric precision for one stage run."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
from torch import nn

from mstcli.engine import distributed
from mstcli.errors import UserError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"common.device: unknown device '{name}' (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"common.device={name} but no CUDA device is available")
    return device


def setup_runtime(
    device: str, threads: int, seed: int, precision: str = "fp32", deterministic: bool = False
) -> torch.device:
    """Seed every generator the stages use, cap CPU threads and set the CUDA matmul precision; returns the
    device to train on. TF32 is a global switch in torch, so it is set here, once per stage process.

    On the CPU a run with the same settings repeats itself exactly. On a GPU that needs ``deterministic``:
    deterministic algorithms (torch warns where an op has none), no cuDNN autotuning (it may pick another kernel
    on every run) and the cuBLAS workspace setting that makes its reductions repeatable."""
    torch.set_num_threads(threads if threads > 0 else share_of_cores())
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    chosen = distributed.init_from_env(pick_device(device))  # cuda:LOCAL_RANK and the process group under torchrun
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)  # global in torch: set either way
    if chosen.type == "cuda":
        tf32 = precision in ("tf32", "bf16")
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic  # fixed shapes: let cuDNN pick its fastest kernels
    return chosen


JOBS_ENV = "MST_JOBS"


def share_of_cores() -> int:
    """This process's share of the CPU cores: cores // (torchrun processes on this machine x MST_JOBS, the number
    of jobs run side by side, e.g. by `dvc queue start -j N`). torch's thread pools oversubscribe otherwise: two
    jobs of all cores each on 2 cores made an S1 epoch 8x slower."""
    try:
        jobs = max(1, int(os.environ.get(JOBS_ENV, "1")))
    except ValueError:
        raise UserError(f"{JOBS_ENV}={os.environ[JOBS_ENV]!r} is not a whole number of jobs") from None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // (jobs * distributed.local_ranks()))


def runtime_for(common, seed: int | None = None) -> torch.device:
    """``setup_runtime`` from the ``common`` settings section (``seed`` overrides common.seed)."""
    return setup_runtime(
        common.device,
        common.threads,
        common.seed if seed is None else seed,
        common.precision,
        common.deterministic,
    )


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast on CUDA when asked for; nothing otherwise (CPU bf16 is slower than fp32 on our machines)."""
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def maybe_compile(module: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile`` the module's forward in place when enabled (state_dict keys stay unchanged)."""
    if enabled:
        module.compile()
    return module


class CompiledOrEager:
    """A pure function run through ``torch.compile`` when enabled, and run as it is when compiling fails.

    Compiling happens on the first call; a torch without a working compiler (no C++ toolchain for the CPU
    backend, an old Triton for the GPU one) raises there. The stage then goes on eagerly, with one warning,
    instead of stopping: compiling only changes the speed. The function must have no side effects, so that a
    failed compiled call can be repeated eagerly.
    """

    def __init__(self, fn: Callable[..., Any], enabled: bool, what: str) -> None:
        self.fn, self.what = fn, what
        self.compiled: Callable[..., Any] | None = torch.compile(fn, dynamic=False) if enabled else None

    def __call__(self, *args: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, the maths are the same
                from mstcli.ui import logger

                logger().warning(f"{self.what}: torch.compile failed ({type(exc).__name__}: {exc}); running eagerly")
                self.compiled = None
        return self.fn(*args)
