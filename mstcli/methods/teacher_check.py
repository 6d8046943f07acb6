"""Is the teacher of a comparison run better than a constant guess? Measured on the validation split before S3.

A stage-1 teacher can end S1 at chance: a small data set, few S1 epochs, a net that sits on a plateau for its
first epochs (AV-Digits' audio net at 3,000 pairs and 4 S1 epochs is at 11.7 % on ten classes). What such a
teacher hands a from-scratch student depends on the method: KD's soft labels are then near uniform and act like
label smoothing, but the relation-based methods (RKD's distances and angles, CRD's contrasts, DIST's correlations)
normalize the teacher's relations to unit scale, so the noise of a constant teacher becomes full-size targets and
the student never leaves its own first plateau. The same methods from the stage-1 student, which has left it,
learn with the same teacher (docs: benchmarks, "A teacher at chance"). The run is not refused (a user may study
exactly this), but it says so, and the result records the check so that ``mst compare`` can mark the cell.

"Chance" is the best a net that ignores its input can do on the validation labels, the largest class share p,
and a teacher is called "at chance" below p plus three standard errors of such a guess, sqrt(p (1 - p) / n).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from mstcli.engine.splits import Split

#: standard errors of a constant guess a teacher must clear to count as better than chance
MARGIN_STANDARD_ERRORS = 3.0


@dataclass(frozen=True)
class TeacherCheck:
    teacher: str  # the run's teacher key: mm, cm, cm:<modality> or all
    val_accuracy: float  # in [0, 1]
    constant_guess: float  # the largest class share of the validation labels
    rows: int

    @property
    def threshold(self) -> float:
        p = self.constant_guess
        return p + MARGIN_STANDARD_ERRORS * math.sqrt(p * (1 - p) / max(self.rows, 1))

    @property
    def at_chance(self) -> bool:
        return self.val_accuracy < self.threshold

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "threshold": round(self.threshold, 6), "at_chance": self.at_chance}

    def warning(self, method: str) -> str:
        return (
            f"teacher {self.teacher} is at chance on validation ({100 * self.val_accuracy:.1f} %; a constant guess"
            f" gets {100 * self.constant_guess:.1f} %): {method} learns from noise; relation-based methods"
            " (rkd, crd, dist) then keep a from-scratch student at chance. Train S1 longer (train.epochs)."
        )


@torch.no_grad()
def check_teacher(teacher: str, net: Callable[[dict[str, torch.Tensor]], torch.Tensor], val: Split) -> TeacherCheck:
    """The teacher's accuracy over the validation split, batch by batch, against the constant guess."""
    right = 0
    for start in range(0, len(val), 1024):
        rows = torch.arange(start, min(len(val), start + 1024), device=val.labels.device)
        batch = val.batch(rows)
        right += int((net(batch.inputs).argmax(dim=1) == batch.labels).sum())
    counts = torch.bincount(val.labels.long().flatten())
    return TeacherCheck(
        teacher=teacher,
        val_accuracy=right / max(len(val), 1),
        constant_guess=float(counts.max()) / max(len(val), 1),
        rows=len(val),
    )


def check_student(val_accuracy: float, val: Split) -> TeacherCheck:
    """The same rule for the student S3 kept (its best epoch's validation accuracy): a student at chance did not
    start learning (C2KD with its reference SGD on a short schedule, say), which its test number alone hides."""
    counts = torch.bincount(val.labels.long().flatten())
    return TeacherCheck("student", val_accuracy, float(counts.max()) / max(len(val), 1), len(val))


def student_warning(check: TeacherCheck, method: str) -> str:
    return (
        f"the {method} student is at chance on validation ({100 * check.val_accuracy:.1f} %; a constant guess gets"
        f" {100 * check.constant_guess:.1f} %): it did not learn. Try more epochs (distill.epochs) or the original"
        " papers' constants (distill.baseline_settings=paper)."
    )
