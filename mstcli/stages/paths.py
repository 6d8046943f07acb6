"""Where a run's files live: ``models/<run>/`` for checkpoints, ``results/<run>/`` for reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    run: str

    @property
    def models(self) -> Path:
        return Path("models") / self.run

    @property
    def results(self) -> Path:
        return Path("results") / self.run

    @property
    def stage1(self) -> Path:
        return self.models / "stage1.pt"

    @property
    def masks(self) -> Path:
        return self.models / "masks.pt"

    @property
    def student(self) -> Path:
        return self.models / "student.pt"
