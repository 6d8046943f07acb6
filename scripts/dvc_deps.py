"""The code dependencies of each DVC stage, computed from the import graph of mstcli.

A stage's code deps are the mstcli source files its command can execute: the stage module(s) of its ``mst``
command(s), plus ``mstcli.config`` and ``mstcli.stages.paths`` (which the CLI uses to read the settings and
find the run's files), and everything they import, transitively:

* every ``import mstcli...`` / ``from mstcli... import ...`` anywhere in a file (module level, inside
  functions, under ``if TYPE_CHECKING``), relative imports included; ``from pkg import name`` counts
  ``pkg/name.py`` when ``name`` is a module;
* the ``__init__.py`` of every package on the way (importing ``a.b.c`` runs ``a`` and ``a.b`` first);
* imports that are data: string constants of the form ``"mstcli.x.y:Class"`` in any file, every entry of the
  method registry (``mstcli.methods.registry.ENTRIES``, read by importing it) and every module of the data
  source registry (``mstcli.data.sources._MODULES``, imported by ``all_sources()`` with importlib).

Any other ``importlib.import_module``/``__import__`` call in a reached file is an error: this script would not
know what it loads, so it has to be taught (add a hook to ``DYNAMIC``).

The ``mstcli/cli/`` package (a thin argument layer, one module per command group) is not a root, and no stage
reaches it. Deps are listed file by file, never as a folder: the
repository's .dvcignore does not ignore ``__pycache__``, so a folder dep would also hash byte-code files.

    python scripts/dvc_deps.py            # print each stage's code deps (dvc.yaml and bench/dvc.yaml)
    python scripts/dvc_deps.py --check    # exit 1 if a dvc.yaml lists other code deps than computed
    python scripts/dvc_deps.py --write    # rewrite the mstcli/... entries of each stage's deps in place

``--write`` edits the text of the ``deps:`` blocks only: other deps keep their order, the code deps (sorted)
take the place of the old ones, comments and layout elsewhere are untouched. tests/test_dvc_deps.py fails when
a listed set is out of date.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "mstcli"
DVC_FILES = (REPO / "dvc.yaml", REPO / "bench" / "dvc.yaml")

# What the CLI imports for every stage command besides the stage module: the settings and the run's file layout.
COMMON_ROOTS = ("mstcli.config", "mstcli.stages.paths", "mstcli.ui")  # ui: every command's logging set-up
# `mst <subcommand>` -> the modules it runs (the mstcli/cli/ package itself is not counted).
SUBCOMMAND_ROOTS: dict[str, tuple[str, ...]] = {
    "prepare": ("mstcli.stages.prepare", *COMMON_ROOTS),
    "train": ("mstcli.stages.train", *COMMON_ROOTS),
    "fit-masks": ("mstcli.stages.fit_masks", *COMMON_ROOTS),
    "distill": ("mstcli.stages.distill", *COMMON_ROOTS),
    "eval": ("mstcli.stages.evaluate", *COMMON_ROOTS),
    "compare": ("mstcli.stages.compare", "mstcli.ui"),  # reads only metrics.json files: no settings, no run paths
    "report": ("mstcli.stages.report", *COMMON_ROOTS),
}

_TARGET = re.compile(r"^(mstcli(?:\.\w+)+):\w+(?:\.\w+)*$")  # "mstcli.pkg.module:Class"
_DYNAMIC_CALLS = {"import_module", "__import__"}


def _import_repo_module(name: str):
    """Import an mstcli module the ordinary way (the package is installed, editable: ``pip install -e .``) and
    check that it is this repository's: a registry read from another checkout would give other deps."""
    module = importlib.import_module(name)
    origin = Path(module.__file__ or "").resolve()
    if not origin.is_relative_to(REPO):
        raise DepsError(
            f"{name} was imported from {origin}, not from {REPO}: install this checkout (pip install -e .)"
        )
    return module


def _method_registry() -> list[str]:
    registry = _import_repo_module("mstcli.methods.registry")
    return [entry.target.partition(":")[0] for entry in registry.ENTRIES]


def _data_sources() -> list[str]:
    sources = _import_repo_module("mstcli.data.sources")
    return [f"mstcli.data.sources.{name}" for name in sources._MODULES]


# file (relative to the repo) that imports modules named by data -> the modules it can import
DYNAMIC: dict[str, Callable[[], list[str]]] = {
    "mstcli/methods/registry.py": _method_registry,
    "mstcli/data/sources/__init__.py": _data_sources,
    # a user's factory (models: <module>:<factory>) is their code, not mst's: they list its file among the deps
    "mstcli/models/encoders/factory_encoder.py": lambda: [],
}


class DepsError(RuntimeError):
    pass


def module_file(module: str) -> Path | None:
    """The source file of an mstcli module or package, or None if there is none."""
    base = REPO.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _ours(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def imported_modules(path: Path, module: str) -> tuple[set[str], list[str]]:
    """The mstcli modules a file can import (statically named), and the lines of dynamic-import calls in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if _is_package(path) else module.rpartition(".")[0]
    found: set[str] = set()
    dynamic: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if _ours(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    raise DepsError(f"{_rel(path)}:{node.lineno}: relative import beyond the top package")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            if not _ours(source):
                continue
            found.add(source)
            for alias in node.names:
                if alias.name != "*" and module_file(f"{source}.{alias.name}") is not None:
                    found.add(f"{source}.{alias.name}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _TARGET.match(node.value)
            if match:
                found.add(match.group(1))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            if name in _DYNAMIC_CALLS:
                dynamic.append(f"{_rel(path)}:{node.lineno}")
    return found, dynamic


def closure(roots: Iterable[str]) -> list[str]:
    """The sorted repo-relative paths of every mstcli file that importing ``roots`` can execute."""
    seen: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = module_file(module)
        if path is None:
            parent = module.rpartition(".")[0]
            # `import mstcli.a.b` where b is not a module is an error in Python; a dotted string that names no
            # module (e.g. a "mstcli.x:Y" target of a deleted file) must not pass silently.
            raise DepsError(f"no source file for module {module!r}" + (f" (in package {parent})" if parent else ""))
        seen[module] = path
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # the packages' __init__.py
        found, dynamic = imported_modules(path, module)
        todo.extend(found)
        rel = _rel(path)
        if rel in DYNAMIC:
            todo.extend(DYNAMIC[rel]())
        elif dynamic:
            raise DepsError(
                f"dynamic import at {', '.join(dynamic)}: scripts/dvc_deps.py cannot tell what it loads; "
                "add a hook for this file to DYNAMIC in scripts/dvc_deps.py"
            )
    return sorted(_rel(path) for path in seen.values())


# ----------------------------------------------------------------------------------------------- dvc.yaml files


def _commands(cmd: str | list[str]) -> list[str]:
    return [cmd] if isinstance(cmd, str) else list(cmd)


_SEPARATORS = {"&&", "||", ";", "|", "&"}


def stage_roots(cmd: str | list[str]) -> list[str] | None:
    """The root modules of a stage's command(s): the union over its ``mst <subcommand>`` calls (None: no mst)."""
    roots: list[str] = []
    found = False
    for command in _commands(cmd):
        tokens = shlex.split(command, posix=True)
        # the program of each simple command: the first word, or the first after a shell separator, past VAR=...
        starts, expect = [], True
        for i, token in enumerate(tokens):
            if token in _SEPARATORS:
                expect = True
            elif expect and not re.match(r"^\w+=", token):
                starts.append(i)
                expect = False
        for i in starts:
            token = tokens[i]
            if (token == "mst" or token.endswith("/mst")) and i + 1 < len(tokens):
                sub = tokens[i + 1]
                if sub not in SUBCOMMAND_ROOTS:
                    raise DepsError(f"unknown command `mst {sub}`: add its modules to SUBCOMMAND_ROOTS")
                found = True
                roots.extend(m for m in SUBCOMMAND_ROOTS[sub] if m not in roots)
    return roots if found else None


def _stages(text: str) -> dict:
    return (yaml.safe_load(text) or {}).get("stages", {}) or {}


def _stage_dir(dvcfile: Path, stage: dict) -> Path:
    return (dvcfile.parent / stage.get("wdir", ".")).resolve()


def _dep_in_repo(stage_dir: Path, dep: str) -> str | None:
    """The repo-relative path of a dep if it is mstcli code, else None."""
    path = os.path.relpath(os.path.normpath(stage_dir / dep), REPO).replace(os.sep, "/")
    return path if path == PACKAGE or path.startswith(PACKAGE + "/") else None


def _as_dep(stage_dir: Path, repo_path: str) -> str:
    return os.path.relpath(REPO / repo_path, stage_dir).replace(os.sep, "/")


def computed_deps(dvcfile: Path) -> dict[str, list[str]]:
    """stage -> its code deps as they should be written (relative to the stage's wdir), for stages running mst."""
    result = {}
    for name, stage in _stages(dvcfile.read_text(encoding="utf-8")).items():
        roots = stage_roots(stage.get("cmd", ""))
        if roots is not None:
            stage_dir = _stage_dir(dvcfile, stage)
            result[name] = [_as_dep(stage_dir, path) for path in closure(roots)]
    return result


def _dep_name(dep) -> str:
    return dep if isinstance(dep, str) else next(iter(dep))  # `- path:` with options


def listed_deps(dvcfile: Path) -> dict[str, list[str]]:
    """stage -> the code deps (mstcli/...) its deps list now, in their order."""
    result = {}
    for name, stage in _stages(dvcfile.read_text(encoding="utf-8")).items():
        stage_dir = _stage_dir(dvcfile, stage)
        deps = [_dep_name(dep) for dep in stage.get("deps", []) or []]
        result[name] = [dep for dep in deps if _dep_in_repo(stage_dir, dep) is not None]
    return result


# --------------------------------------------------------------------------------------------- text rewriting

_KEY = re.compile(r"^( *)([A-Za-z_][\w-]*|\"[^\"]*\"|'[^']*'):(\s*(#.*)?)$")  # a block key line: `  name:`
_ITEM = re.compile(r"^( *)- +(.*?)\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _blank(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _scalar(text: str) -> str:
    text = re.sub(r"\s+#.*$", "", text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return text


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """The index after the last non-blank line of the block that starts below line ``start`` and is indented more
    than ``indent`` (trailing blank and comment lines are left outside the block)."""
    end = start + 1
    for i in range(start + 1, len(lines)):
        if _blank(lines[i]):
            continue
        if _indent(lines[i]) <= indent:
            break
        end = i + 1
    return end


def _children(lines: list[str], start: int, end: int) -> dict[str, int]:
    """Keys of the mapping in lines[start:end] (its first key sets the indentation) -> their line index."""
    keys: dict[str, int] = {}
    level = None
    for i in range(start, end):
        if _blank(lines[i]):
            continue
        match = _KEY.match(lines[i])
        indent = _indent(lines[i])
        if level is None:
            level = indent
        if match and indent == level:
            keys[_scalar(match.group(2))] = i
    return keys


def rewrite(text: str, dvcfile: Path, wanted: dict[str, list[str]]) -> str:
    """``text`` (of a dvc.yaml at ``dvcfile``, which sets where its paths start) with each stage's code deps
    replaced by ``wanted[stage]``."""
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if text.endswith("\r\n") else "\n"
    top = _children(lines, 0, len(lines))
    if "stages" not in top:
        raise DepsError(f"{dvcfile}: no top-level `stages:`")
    start = top["stages"]
    stages = _children(lines, start + 1, _block_end(lines, start, _indent(lines[start])))
    stage_info = _stages(text)
    edits: list[tuple[int, int, list[str]]] = []
    for name, code in wanted.items():
        if name not in stages:
            raise DepsError(f"{dvcfile}: stage {name} not found in the text")
        at = stages[name]
        stage_end = _block_end(lines, at, _indent(lines[at]))
        keys = _children(lines, at + 1, stage_end)
        if "deps" not in keys:
            if code:
                raise DepsError(f"{dvcfile}: stage {name} has no `deps:` to write its code deps into; add one")
            continue
        key_line = keys["deps"]
        key_indent = _indent(lines[key_line])
        # the list items may sit at the key's own indentation (`deps:\n- a`) or deeper
        first = next((i for i in range(key_line + 1, len(lines)) if not _blank(lines[i])), None)
        if first is None or not _ITEM.match(lines[first]) or _indent(lines[first]) < key_indent:
            raise DepsError(f"{dvcfile}: stage {name}: `deps:` is not a block list")
        item_indent = _indent(lines[first])
        end = first
        entries: list[tuple[str | None, list[str]]] = []  # (dep or None for comments, its lines)
        i = first
        while i < len(lines):
            line = lines[i]
            if _blank(line):  # blank or comment: kept in place, unless it trails the list
                entries.append((None, [line]))
                i += 1
                continue
            match = _ITEM.match(line)
            if match and _indent(line) == item_indent:
                entries.append((_scalar(match.group(2)).rstrip(":"), [line]))
                end = i + 1
            elif _indent(line) > item_indent and entries:
                entries[-1][1].append(line)  # continuation of the previous item (e.g. its options)
                end = i + 1
            else:
                break
            i += 1
        # drop the blank/comment lines after the last item: they belong to what follows
        count = sum(len(lines_) for _, lines_ in entries)
        while entries and entries[-1][0] is None and first + count > end:
            count -= len(entries.pop()[1])
        stage_dir = _stage_dir(dvcfile, stage_info[name])
        pad = " " * item_indent
        new_code = [f"{pad}- {dep}{newline}" for dep in code]
        out: list[str] = []
        placed = False
        for dep, entry_lines in entries:
            if dep is not None and _dep_in_repo(stage_dir, dep) is not None:
                if len(entry_lines) > 1:
                    raise DepsError(f"{dvcfile}: stage {name}: code dep {dep} has options; edit it by hand")
                if not placed:
                    out.extend(new_code)
                    placed = True
                continue
            out.extend(entry_lines)
        if not placed:
            out.extend(new_code)
        edits.append((first, end, out))
    for first, end, out in sorted(edits, reverse=True):
        lines[first:end] = out
    return "".join(lines)


def stale(dvcfile: Path) -> dict[str, tuple[list[str], list[str]]]:
    """stage -> (listed, computed) for each stage whose code deps are out of date."""
    listed = listed_deps(dvcfile)
    return {
        name: (listed.get(name, []), code) for name, code in computed_deps(dvcfile).items() if listed.get(name) != code
    }


def write(dvcfile: Path) -> bool:
    """Rewrite the code deps of ``dvcfile``; True if the file changed."""
    text = dvcfile.read_text(encoding="utf-8")
    new = rewrite(text, dvcfile, computed_deps(dvcfile))
    if new == text:
        return False
    dvcfile.write_text(new, encoding="utf-8")
    if stale(dvcfile):
        raise DepsError(f"{dvcfile}: rewriting did not produce the computed deps")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="rewrite the code deps in dvc.yaml and bench/dvc.yaml")
    action.add_argument("--check", action="store_true", help="exit 1 if a listed set differs from the computed one")
    args = parser.parse_args(argv)
    status = 0
    for dvcfile in DVC_FILES:
        name = _rel(dvcfile)
        if args.write:
            print(f"{name}: {'rewrote code deps' if write(dvcfile) else 'up to date'}")
        elif args.check:
            for stage, (listed, computed) in stale(dvcfile).items():
                status = 1
                missing, extra = sorted(set(computed) - set(listed)), sorted(set(listed) - set(computed))
                print(
                    f"{name}:{stage}: missing {missing}, not reached {extra}"
                    if missing or extra
                    else f"{name}:{stage}: order differs"
                )
        else:
            for stage, code in computed_deps(dvcfile).items():
                print(f"{name}:{stage} ({len(code)} files)")
                for path in code:
                    print(f"  {path}")
    if status:
        print("run `python scripts/dvc_deps.py --write`")
    return status


if __name__ == "__main__":
    sys.exit(main())
