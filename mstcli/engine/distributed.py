"""Many processes, one result: what the stages need to run under ``torchrun`` (gloo on the CPU, NCCL on GPUs).

One process and N processes compute the same thing. Every rank draws the same global batches (the seeded order
of one process), takes its own contiguous share of each (:func:`shard`: the first ``n % N`` ranks get one row
more), and backpropagates its loss times ``N * n_r / n``. DDP averages the gradients, so the step follows

    J = sum_r (n_r / n) * loss_r,

which is the global batch mean of every per-sample term, also for an unequal last batch. A term that needs the
whole batch (MST's load balancing over the router's mean, MLLD's and DIST's batch relations, RKD, PKT, CRD's
memory, BatchNorm statistics) is computed by every rank alike from :func:`global_batch` (the rows of all ranks,
in order, through an all-reduce with autograd); since sum_r n_r / n = 1 it enters J exactly once, with the
gradient of one process. Only the trainable modules are wrapped in DDP (:func:`training_step`); frozen teachers,
banks and caches are plain tensors and modules, the same on every rank.

Work that does not train (validation, evaluation, the expert bank, S2's layer cache, S2's student targets) is
split by :func:`shard_range` and put back together by :func:`gather_rows`, so each rank does 1/N of it and every
sample counts once. Only rank 0 writes files and prints (:func:`is_main`; ``ui.stderr_console`` is quiet on the
other ranks). A rank that dies makes the others fail at their next collective (gloo notices the closed socket at
once, NCCL within the process group's timeout, ``MST_DIST_TIMEOUT`` seconds, default 300); torchrun then stops the
job and names the rank.

Without torchrun (WORLD_SIZE unset or 1) every function here is the identity or a no-op.
"""

from __future__ import annotations

import atexit
import datetime
import os
import re
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

TIMEOUT_ENV = "MST_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """The rank that writes files and prints (rank 0; the only one without torchrun)."""
    return rank() == 0


def local_ranks() -> int:
    """How many processes of this job share this machine (torchrun's --nproc_per_node)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))))


def timeout_s() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    except ValueError:
        from mstcli.errors import UserError

        raise UserError(f"{TIMEOUT_ENV}={os.environ[TIMEOUT_ENV]!r} is not a number of seconds") from None


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun described in the environment (once per process) and return this rank's
    device: ``cuda:LOCAL_RANK`` on GPUs (NCCL), the CPU otherwise (gloo)."""
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s()), **kwargs)
        atexit.register(_close)
        _stop_on_sigterm()
    return device


class StoppedByLauncher(RuntimeError):
    """torchrun sent SIGTERM: another process of the job ended, and the launcher stops the others."""


def _stop_on_sigterm() -> None:
    """Turn torchrun's SIGTERM into an exception, so that this process ends with the one-line message of a lost
    job (``failure_message``) and not silently. Without it the message depended on a race: torchrun checks its
    processes every ``--monitor_interval`` and terminates the survivors, often before their next collective has
    failed; seen in one of two CI runs on the 2-core machine."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(_signum, _frame) -> None:
        raise StoppedByLauncher("torchrun stopped this process after another one ended")

    signal.signal(signal.SIGTERM, stop)


def _close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a stage's outputs)."""
    if active():
        dist.barrier()


# ---- sharding a global batch ------------------------------------------------------------------------------------


def shard_range(n: int, part: int | None = None, parts: int | None = None) -> tuple[int, int]:
    """Rows [start, stop) of ``n`` that rank ``part`` of ``parts`` handles: contiguous, the first n % parts ranks
    one row more. With fewer rows than ranks every rank takes them all (nothing is then split)."""
    part = rank() if part is None else part
    parts = world_size() if parts is None else parts
    if parts == 1 or n < parts:
        return 0, n
    base, extra = divmod(n, parts)
    start = part * base + min(part, extra)
    return start, start + base + (1 if part < extra else 0)


@dataclass
class Step:
    """The global batch of the current training step and this rank's part of it."""

    rows: torch.Tensor  # the global batch's row numbers, in order
    start: int
    stop: int

    @property
    def scale(self) -> float:
        """Factor of this rank's loss so that DDP's gradient mean is the global batch mean."""
        return world_size() * (self.stop - self.start) / len(self.rows)


_step: Step | None = None


def shard(rows: torch.Tensor) -> tuple[torch.Tensor, float]:
    """This rank's rows of a global training batch and the factor of its loss (1 without torchrun)."""
    global _step
    start, stop = shard_range(len(rows))
    _step = Step(rows, start, stop)
    return rows[start:stop], _step.scale


def check_batches(rows: int, batch_size: int, stage: str) -> None:
    """Every rank needs at least one row of every global batch (an empty part has no mean to take)."""
    if not active():
        return
    last = rows % batch_size or batch_size
    if min(batch_size, rows, last) < world_size():
        from mstcli.errors import UserError

        raise UserError(
            f"{stage}: the last batch has {min(last, rows)} rows ({rows} rows in batches of {batch_size}) but "
            f"there are {world_size()} processes: each needs a row; change the batch size or the process count"
        )


def global_batch(x: torch.Tensor) -> torch.Tensor:
    """The rows of every rank's part of the current global batch, in the global order, on every rank.

    Gradients flow back to each rank's own rows: the loss computed from it by every rank alike enters the
    objective once (see the module docstring). ``x`` holds this rank's rows of the step's batch."""
    if not active() or _step is None:
        return x
    before = x.new_zeros((_step.start, *x.shape[1:]))
    after = x.new_zeros((len(_step.rows) - _step.stop, *x.shape[1:]))
    full = torch.cat([before, x, after])
    if full.requires_grad:
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(full)
    dist.all_reduce(full)
    return full


def global_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over the ranks, with gradients back to each rank's own ``x`` (a whole-batch statistic that
    every rank then uses alike, e.g. a count of selected samples)."""
    if not active():
        return x
    if x.requires_grad:
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(x)
    out = x.clone()
    dist.all_reduce(out)
    return out


def global_rows(local: torch.Tensor) -> torch.Tensor:
    """The row numbers of the whole current batch (``local`` itself without torchrun)."""
    return _step.rows if active() and _step is not None else local


def local_part(x: torch.Tensor) -> torch.Tensor:
    """This rank's rows of a tensor over the whole current batch (the inverse of :func:`global_batch`)."""
    return x[_step.start : _step.stop] if active() and _step is not None else x


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over the ranks (no gradient); ``x`` itself without torchrun."""
    if not active():
        return x
    device = _collective_device()
    out = x.detach().to(device, copy=True)
    dist.all_reduce(out)
    return out.to(x.device)


# ---- work split by rows and gathered ------------------------------------------------------------------------------


def shard_batches(n: int, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Row numbers, in batches, of this rank's contiguous part of ``n`` rows (all of them without torchrun)."""
    start, stop = shard_range(n)
    for first in range(start, stop, batch_size):
        yield torch.arange(first, min(first + batch_size, stop), device=device)


def gather_rows(local: torch.Tensor, n: int, dim: int = 0) -> torch.Tensor:
    """Every rank's part (made over :func:`shard_range` of ``n`` rows, along ``dim``) put together in order."""
    if not active() or n < world_size():
        return local
    sizes = [stop - start for start, stop in (shard_range(n, r) for r in range(world_size()))]
    device = _collective_device()
    moved = local.detach().movedim(dim, 0).contiguous().to(device)
    padded = moved.new_zeros((max(sizes), *moved.shape[1:]))
    padded[: len(moved)] = moved
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]).to(local.device).movedim(0, dim)


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---- the trainable modules under DDP ------------------------------------------------------------------------------


class _TrainStep(nn.Module):
    """The trainable modules of a stage as one module whose forward is the stage's batch loss, so that DDP sees
    every forward of them (whatever the method does inside) and averages their gradients."""

    def __init__(self, modules: dict[str, nn.Module], loss: Callable) -> None:
        super().__init__()
        self.trained = nn.ModuleDict(modules)
        self._loss = loss

    def forward(self, batch):
        return self._loss(batch)


def training_step(modules: dict[str, nn.Module], loss: Callable) -> Callable:
    """``loss`` itself without torchrun; with it, the same call through DDP over ``modules`` (the trainable ones;
    their BatchNorm layers then normalise with the statistics of the global batch)."""
    if not active():
        return loss
    for module in modules.values():
        global_batchnorm(module)
    wrapped = _TrainStep(modules, loss)
    if not any(p.requires_grad for p in wrapped.parameters()):
        return loss
    # find_unused_parameters: phases leave parts without gradients (FitNet's regressors after the hints, MGDFR's
    # teacher once ranked); such a parameter keeps no gradient, as in one process, so Adam skips it there too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ddp = nn.parallel.DistributedDataParallel(wrapped, find_unused_parameters=True, broadcast_buffers=False)
    return ddp


class _GlobalBatchNorm:
    """BatchNorm whose training statistics are those of the global batch (one all-reduce of the per-channel sums),
    so N processes normalise as one does. torch's SyncBatchNorm is CUDA-only; this runs on gloo too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        channels = x.shape[1]
        count = x.new_tensor([x.numel() / channels])
        from torch.distributed.nn.functional import all_reduce

        sums = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        total = sums[-1].detach()
        mean = sums[:channels] / total
        var = (sums[channels : 2 * channels] / total - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                unbiased = var.detach() * total / (total - 1).clamp_min(1)
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        shape = (1, channels, *([1] * (x.dim() - 2)))
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


_global_classes: dict[type, type] = {}


def global_batchnorm(module: nn.Module) -> nn.Module:
    """Switch every BatchNorm layer of ``module`` to global-batch statistics, in place (same parameters, buffers,
    hooks and state_dict keys: only the class changes)."""
    for layer in module.modules():
        cls = type(layer)
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and not isinstance(layer, _GlobalBatchNorm):
            if cls not in _global_classes:
                _global_classes[cls] = type(f"Global{cls.__name__}", (_GlobalBatchNorm, cls), {})
            layer.__class__ = _global_classes[cls]
    return module


# ---- a rank that died ----------------------------------------------------------------------------------------------


def failure_message(exc: BaseException) -> str | None:
    """A one-line explanation when ``exc`` is a collective that failed because another rank stopped."""
    if not launched():
        return None
    errors = tuple(
        e for e in (getattr(dist, "DistError", None), getattr(dist, "DistBackendError", None)) if e is not None
    )
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text).split(". ")[0]  # gloo's "[file.cc:545] Read error ...: reset by peer"
    lowered = text.lower()
    known = ("connection closed", "connection reset", "timed out", "timeout", "broken pipe", "peer")
    stopped = isinstance(exc, StoppedByLauncher)
    if stopped or isinstance(exc, errors) or (isinstance(exc, RuntimeError) and any(k in lowered for k in known)):
        me = os.environ.get("RANK", "?")
        return (
            f"process {me} of {os.environ.get('WORLD_SIZE', '?')}: lost the other processes of this torchrun job"
            f" ({text[:160]}): another process stopped, or did not answer within {timeout_s():.0f} s ({TIMEOUT_ENV});"
            " torchrun's report names the process that failed first"
        )
    return None
