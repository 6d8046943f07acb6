"""The documentation site: its generated reference pages are current and it builds with ``mkdocs build --strict``.

``docs/cli.md`` and ``docs/settings.md`` are written by ``scripts/cli_reference.py`` from the Typer app and the
settings dataclasses; after changing a command, an option, a setting or a method's constants, regenerate them with
``python scripts/cli_reference.py``. The strict build fails on any broken link or anchor between the pages.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", ["cli.md", "settings.md"])
def test_generated_page_is_current(page: str) -> None:
    expected = _generator().generate()[page]
    committed = (ROOT / "docs" / page).read_text(encoding="utf-8")
    assert committed == expected, f"docs/{page} is out of date: run python scripts/cli_reference.py"


def test_cli_reference_lists_every_command() -> None:
    import typer.main

    from mstcli.cli import app

    text = _generator().generate()["cli.md"]

    def walk(command, path):
        yield path
        for name, sub in (getattr(command, "commands", None) or {}).items():
            if not sub.hidden:
                yield from walk(sub, path + [name])

    for path in walk(typer.main.get_command(app), ["mst"]):
        heading = "#" * min(max(len(path), 2), 4) + " " + " ".join(path) + "\n"
        assert heading in text, f"docs/cli.md lacks {' '.join(path)}"


def test_docs_build_strict(tmp_path: Path) -> None:
    for module in ("mkdocs", "material"):
        assert importlib.util.find_spec(module), (
            f"{module} is missing: it is in the test extra (pip install -e '.[test]')"
        )
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path)]
    result = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "method" / "index.html").exists()
