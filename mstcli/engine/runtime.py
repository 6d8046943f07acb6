"""Device choice, thread count and seeding for one stage run."""

from __future__ import annotations

import random

import numpy as np
import torch

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


def setup_runtime(device: str, threads: int, seed: int) -> torch.device:
    """Seed every generator the stages use and cap CPU threads; returns the device to train on."""
    if threads > 0:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return pick_device(device)
