"""Resume after a kill: where a stage keeps its end-of-epoch state, and which run may continue from it.

A stage's resume state lives beside the output it will become, in a hidden folder: ``models/main/stage1.pt`` is
resumed from ``models/main/.resume/stage1.pt``. DVC deletes a stage's declared outputs before it reruns the
stage, but not this folder, so ``dvc repro`` after a kill continues too. The state carries a key, a digest of the
stage's name, settings and input fingerprints: a rerun with the same key continues after the last finished
epoch; any other run starts fresh (and says so). The state is removed once the stage has written its outputs.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mstcli.engine.checkpoints import ResumeState
from mstcli.errors import UserError

RESUME_DIR = ".resume"


def resume_key(stage: str, settings: dict[str, Any], inputs: dict[str, Any]) -> str:
    """Digest of what decides a stage's result: its settings and the fingerprints of its inputs."""
    text = json.dumps({"stage": stage, "settings": settings, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def resume_path_for(output: Path) -> Path:
    output = Path(output)
    return output.parent / RESUME_DIR / f"{output.stem}.pt"


@dataclass
class ResumeStore:
    """The resume file of one stage output and the key a saved state must carry to be used."""

    path: Path
    key: str

    @classmethod
    def for_output(cls, output: Path, key: str, restart: bool = False) -> ResumeStore:
        store = cls(resume_path_for(output), key)
        if restart:
            store.clear()
        return store

    def load(self, stage: str) -> ResumeState | None:
        """The saved state when it belongs to this run; None (start fresh) otherwise."""
        if not self.path.exists():
            return None
        try:
            state = ResumeState.load(self.path)
        except UserError as exc:
            return self._fresh(f"{stage}: ignoring unreadable resume state ({exc})")
        if state.key != self.key:
            return self._fresh(f"{stage}: {self.path} was saved by a run with other settings or inputs; starting fresh")
        return state

    def _fresh(self, note: str) -> None:
        from mstcli.ui import logger

        logger().warning(note)
        return None

    def save(self, state: ResumeState) -> None:
        state.save(self.path)

    def clear(self) -> None:
        if self.path.exists():
            self.path.unlink()
        try:
            self.path.parent.rmdir()  # only when empty
        except OSError:
            pass


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """Every random generator a stage draws from, as tensors and plain values (a weights-only load reads them)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "batches": generator.get_state(),
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "python": _plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["batches"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
