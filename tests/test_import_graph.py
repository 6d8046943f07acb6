"""The package is a house without loops: its modules import each other without a cycle, and every import runs
down the layers of ``LAYERS``, never up. Imports inside functions (the lazy ones that keep ``mst --help`` free of
torch) and imports under ``TYPE_CHECKING`` count like any other: a lazy import is still a dependency, only a late
one. The graph is read from the source with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: lowest first: a module may import its own layer and the layers below it, never one above. A name stands for
#: its module and, for a package, everything in it; a module belongs to the layer of the longest name that covers
#: it. The root package ``mstcli`` (its ``__init__``) covers only itself, so a new top-level module must be placed.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("standalone", ("mstcli.standalone",)),  # the runner shipped with an export: see ISOLATED
    # what everything may use: errors, settings, terminal output, atomic file writes
    ("foundation", ("mstcli", "mstcli.errors", "mstcli.config", "mstcli.ui", "mstcli.atomic_write")),
    ("data", ("mstcli.data",)),  # sources, feature files, splits on disk
    ("engine", ("mstcli.engine",)),  # the epoch loop, checkpoints, resume, devices: knows no net and no method
    ("models", ("mstcli.models",)),  # the nets of each data set, the trio of S1
    ("methods", ("mstcli.methods",)),  # task kinds, losses, MST-Distill (S2 and S3 parts), the comparison methods
    ("report", ("mstcli.report",)),  # rendering of results: figures and terminal tables, no stage
    ("stages", ("mstcli.stages",)),  # one module per command: what prepare, train, ..., report do
    # measurements, diagnostics and grids of runs (the matrix, sweeps), built on the stages
    ("tools", ("mstcli.benchmarks", "mstcli.debug", "mstcli.experiments")),
    ("cli", ("mstcli.cli", "mstcli.__main__")),
    ("scripts", ("scripts",)),
)
ROOT_PACKAGES = ("mstcli",)
#: the standalone runner is copied next to an export and run there; it imports nothing of mstcli at all
ISOLATED = ("mstcli.standalone",)


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of mstcli and scripts/ by its dotted name (a package by its own name, not ``__init__``)."""
    files = {}
    for top in ("mstcli", "scripts"):
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def _resolve(name: str, modules: set[str]) -> str | None:
    """The module ``name`` denotes, or the nearest enclosing one (``from a.b import C``: C is not a module)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def import_edges(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """module -> {imported module: the line of the first import of it}, for imports among mstcli and scripts."""
    files = module_files(root)
    modules = set(files)
    edges: dict[str, dict[str, int]] = {m: {} for m in files}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):  # walk: inside functions and under `if TYPE_CHECKING:` too
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, module, is_package)
                names = [f"{base}.{alias.name}" for alias in node.names]  # a submodule, or a name in base
            else:
                continue
            for name in names:
                target = _resolve(name, modules)
                if target is not None and target != module:
                    edges[module].setdefault(target, node.lineno)
    return edges


def layer_of(module: str) -> int:
    best, best_length = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            covers = module == prefix or (prefix not in ROOT_PACKAGES and module.startswith(prefix + "."))
            if covers and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    assert best >= 0, f"{module} is in no layer of LAYERS: add it there"
    return best


def _where(module: str, target: str, edges: dict[str, dict[str, int]]) -> str:
    path = module_files()[module].relative_to(ROOT)
    return f"{path}:{edges[module][target]}"


def find_cycle(edges: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, colouring the modules on the stack)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_every_module_has_a_layer():
    for module in module_files():
        layer_of(module)


def test_no_import_cycle():
    edges = import_edges()
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle:\n" + "\n".join(
        f"  {a} -> {b}  ({_where(a, b, edges)})" for a, b in zip(cycle, cycle[1:], strict=False)
    )


def test_imports_run_down_the_layers():
    edges = import_edges()
    upward = [
        f"  {module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        f"  at {_where(module, target, edges)}"
        for module, targets in sorted(edges.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_the_standalone_runner_imports_nothing_of_mstcli():
    edges = import_edges()
    leaks = [
        f"  {module} imports {target} at {_where(module, target, edges)}"
        for module, targets in sorted(edges.items())
        if module.startswith(ISOLATED)
        for target in sorted(targets)
        if not target.startswith(ISOLATED)
    ]
    assert not leaks, "the standalone runner must run without mstcli:\n" + "\n".join(leaks)


def test_the_checker_sees_lazy_and_type_checking_imports_cycles_and_upward_edges(tmp_path):
    """The checker itself, on a small tree shaped like the one this test was written against: base imports the
    registry inside a function, the registry imports base under TYPE_CHECKING, and an engine module imports a
    model. All three edges are seen, the pair is a cycle, and the engine's import runs up."""
    files = {
        "mstcli/__init__.py": "",
        "mstcli/methods/__init__.py": "",
        "mstcli/methods/base.py": "def label():\n    from mstcli.methods.registry import entry\n",
        "mstcli/methods/registry.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mstcli.methods.base import Method\n"
        ),
        "mstcli/engine/__init__.py": "",
        "mstcli/engine/cache.py": "from mstcli.models import trio\n",
        "mstcli/models/__init__.py": "",
        "mstcli/models/trio.py": "import torch\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    edges = import_edges(tmp_path)
    assert "mstcli.methods.registry" in edges["mstcli.methods.base"]
    assert "mstcli.methods.base" in edges["mstcli.methods.registry"]
    assert edges["mstcli.engine.cache"] == {"mstcli.models.trio": 1}  # `from package import module`: the module
    assert find_cycle(edges) in (
        ["mstcli.methods.base", "mstcli.methods.registry", "mstcli.methods.base"],
        ["mstcli.methods.registry", "mstcli.methods.base", "mstcli.methods.registry"],
    )
    assert layer_of("mstcli.models.trio") > layer_of("mstcli.engine.cache")
