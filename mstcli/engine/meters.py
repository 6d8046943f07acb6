"""Per-epoch means of loss terms, kept on the device: reading a GPU scalar each step would stall the queue."""

from __future__ import annotations

from collections.abc import Callable

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

    def means(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
        """The weighted means; ``reduce`` (e.g. a sum over the processes of a torchrun job) combines the sums and
        weights of several meters first, in one call."""
        names = list(self._sums)
        totals = [float(self._sums[name]) for name in names] + [self._weight]
        if reduce is not None:
            totals = reduce(torch.tensor(totals, dtype=torch.float64)).tolist()
        return {name: total / max(totals[-1], 1e-12) for name, total in zip(names, totals[:-1], strict=True)}
