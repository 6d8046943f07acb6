"""Atomic outputs: write to a temporary name in the same folder, then rename, so an interrupted stage never
leaves a file DVC could mistake for a finished one."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path, what: str) -> dict[str, Any]:
    import torch

    from mstcli.errors import UserError

    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path} (run the stage that makes it first)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise UserError(f"{path}: not a readable mst checkpoint ({type(exc).__name__})") from None


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_tsv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows of equal keys as a TSV with a header, the layout `dvc plots` reads."""
    if not rows:
        write_text(path, "")
        return
    keys = list(rows[0])
    lines = ["\t".join(keys)] + ["\t".join(_fmt(row[k]) for k in keys) for row in rows]
    write_text(path, "\n".join(lines) + "\n")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
