"""``mst bench accuracy``: the comparison table (methods x teachers x student directions x seeds), run through the
pipeline's own stages.

The matrix is defined once, in ``bench/matrix.yaml``; ``bench/dvc.yaml`` expands it into DVC stages: one S1 and
one S2 per (direction, seed), shared by that cell's MST-Distill run, its student alone and every comparison
method, and one stage per cell. This command asks DVC to reproduce them, so a finished cell is skipped (its
outputs and their inputs are unchanged), a killed matrix continues with the cells that are missing, and a changed
setting reruns exactly the cells it touches. It ends with ``mst compare results/bench``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from mstcli.errors import UserError

MATRIX = Path("bench/matrix.yaml")
PIPELINE = Path("bench/dvc.yaml")
RESULTS = Path("results/bench")


@dataclass(frozen=True)
class Matrix:
    methods: list[str]
    teachers: list[str]
    students: list[str]
    seeds: list[int]

    @classmethod
    def read(cls, path: Path = MATRIX) -> Matrix:
        if not path.is_file() or not PIPELINE.is_file():
            raise UserError(f"{path} or {PIPELINE} not found: run `mst bench accuracy` from the repository's root")
        try:
            data = yaml.safe_load(path.read_text()) or {}
            return cls(*(list(data[key]) for key in ("methods", "teachers", "students", "seeds")))
        except (yaml.YAMLError, KeyError, TypeError) as exc:
            raise UserError(f"{path}: not a benchmark matrix ({exc})") from None

    def narrowed(self, **subsets: list | None) -> Matrix:
        """The matrix restricted to the given values of each axis; a value outside the matrix is refused."""
        axes = {}
        for axis, chosen in subsets.items():
            full = getattr(self, axis)
            if not chosen:
                axes[axis] = full
                continue
            unknown = [v for v in chosen if v not in full]
            if unknown:
                raise UserError(
                    f"--{axis}: {', '.join(map(str, unknown))} not in {MATRIX} ({', '.join(map(str, full))})"
                )
            axes[axis] = [v for v in full if v in chosen]
        return Matrix(**{**{a: getattr(self, a) for a in ("methods", "teachers", "students", "seeds")}, **axes})

    def cells(self) -> list[tuple[str, Path]]:
        """(DVC stage, its results folder) of every cell of this (sub)matrix, in the names bench/dvc.yaml's
        matrix gives them; S1 and S2 of a (direction, seed) are pulled in by DVC as the cells' dependencies."""
        out = []
        for student, seed in itertools.product(self.students, self.seeds):
            cell, folder = f"{student}-{seed}", RESULTS / f"{student}-s{seed}"
            out.append((f"{PIPELINE}:mst@{cell}", folder / "mst-mm+cm"))
            out.append((f"{PIPELINE}:alone@{cell}", folder / "none"))
            for method, teacher in itertools.product(self.methods, self.teachers):
                out.append((f"{PIPELINE}:baseline@{method}-{teacher}-{cell}", folder / f"{method}-{teacher}"))
        return out


def reproduce(targets: list[str]) -> None:
    """``dvc repro`` of ``targets`` (and what they need), its output shown as it comes."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    command = ["dvc", "repro", *targets]
    try:
        code = subprocess.call(command, env=env)
    except FileNotFoundError:
        raise UserError("dvc not found (pip install -e . installs it)") from None
    if code != 0:
        raise UserError(
            f"dvc repro stopped (exit code {code}); run `mst bench accuracy` again to continue with the cells missing"
        )
