"""Atomic outputs: write to a temporary name in the same folder, then rename, so an interrupted stage never
leaves a file DVC could mistake for a finished one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
