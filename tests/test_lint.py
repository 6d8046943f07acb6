"""The tree stays lint-clean: ``ruff check`` with the rules of pyproject.toml's ``[tool.ruff]`` (pyflakes,
pycodestyle, import order, bugbear, pyupgrade) finds nothing. A test, so that CI (``pytest`` only) catches a
finding as early as a failing test would."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_check_finds_nothing():
    assert importlib.util.find_spec("ruff") is not None, 'ruff is missing: pip install -e ".[test]"'
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"ruff check found problems:\n{result.stdout}{result.stderr}"
