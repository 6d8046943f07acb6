"""Per-epoch means of loss terms, kept on the device: reading a GPU scalar each step would stall the queue."""

from __future__ import annotations

import torch


class EpochMeans:
    """Weighted sums of named scalars; ``means()`` converts to floats once, at the end of the epoch."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor | float] = {}
        self._weight = 0.0

    def add(self, terms: dict[str, torch.Tensor | float], weight: float) -> None:
        for name, value in terms.items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
            self._sums[name] = self._sums.get(name, 0.0) + value * weight
        self._weight += weight

    def means(self) -> dict[str, float]:
        return {name: float(total) / max(self._weight, 1e-12) for name, total in self._sums.items()}
