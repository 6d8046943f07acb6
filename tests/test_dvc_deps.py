"""The code deps of every DVC stage (dvc.yaml, bench/dvc.yaml) are the mstcli files its command can run, as
scripts/dvc_deps.py computes them from the import graph: a new import or a moved file must not leave a stale
cached result."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIX = "run `python scripts/dvc_deps.py --write` (and commit the dvc.yaml changes)"


def _load_script():
    spec = importlib.util.spec_from_file_location("dvc_deps", REPO / "scripts" / "dvc_deps.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("dvc_deps", module)
    spec.loader.exec_module(module)
    return module


deps = _load_script()
DVC_FILES = [REPO / "dvc.yaml", REPO / "bench" / "dvc.yaml"]


@pytest.fixture(scope="module")
def computed():
    return {path: deps.computed_deps(path) for path in DVC_FILES}


def _stage(dvcfile: str, stage: str, computed) -> set[str]:
    return set(computed[REPO / dvcfile][stage])


@pytest.mark.parametrize("dvcfile", DVC_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_listed_code_deps_are_the_computed_ones(dvcfile, computed):
    listed = deps.listed_deps(dvcfile)
    problems = []
    for stage, code in computed[dvcfile].items():
        have = listed.get(stage, [])
        if have != code:
            missing, extra = sorted(set(code) - set(have)), sorted(set(have) - set(code))
            problems.append(
                f"{stage}: missing {missing}, not reached by its command {extra}"
                if missing or extra
                else f"{stage}: not in sorted order"
            )
    name = dvcfile.relative_to(REPO)
    assert not problems, f"{name}: the code deps are out of date, {FIX}:\n  " + "\n  ".join(problems)
    # every stage that runs mst is covered, and no other stage lists mstcli code
    assert {s for s, code in listed.items() if code} <= set(computed[dvcfile])


@pytest.mark.parametrize("dvcfile", DVC_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_listed_code_dep_exists(dvcfile):
    for stage, listed in deps.listed_deps(dvcfile).items():
        wdir = deps._stage_dir(dvcfile, deps._stages(dvcfile.read_text())[stage])
        gone = [dep for dep in listed if not (wdir / dep).exists()]
        assert not gone, f"{dvcfile.relative_to(REPO)}:{stage} lists files that do not exist: {gone}; {FIX}"


def test_the_closure_follows_static_and_data_imports(computed):
    distill = _stage("dvc.yaml", "distill", computed)
    for path in (
        "mstcli/stages/distill.py",
        "mstcli/config.py",
        "mstcli/stages/paths.py",
        "mstcli/data/store.py",  # a plain import
        "mstcli/methods/baselines/crd.py",  # named only by the method registry ("module:Class" f-strings)
        "mstcli/methods/mst/dynamic_distillation.py",  # the registry's literal "mstcli....:MSTDistill"
        "mstcli/methods/mst/masknet.py",
        "mstcli/models/taps.py",  # used by the feature-based methods
        "mstcli/models/vggsound.py",  # the other model families, through the model zoo
        "mstcli/__init__.py",
        "mstcli/methods/baselines/__init__.py",  # package __init__ files on the way
    ):
        assert path in distill, path
    assert not any(p.startswith("mstcli/cli/") for p in distill), "the command line is not a stage's code"

    prepare = _stage("dvc.yaml", "prepare", computed)
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "mstcli" / "data" / "sources").glob("*.py")}
    assert sources and sources <= prepare  # imported with importlib from the source registry's module list

    # eval runs the student alone: no method, no training loop, no other stage, no data-set source; and the
    # settings module does not pull in the method registry (a changed method must not rerun prepare or train)
    evaluate = _stage("dvc.yaml", "eval", computed)
    for path in (
        "mstcli/engine/loop.py",
        "mstcli/stages/distill.py",
        "mstcli/data/sources/avdigits.py",
        "mstcli/methods/baselines/crd.py",
        "mstcli/methods/registry.py",
    ):
        assert path not in evaluate, path
    for stage in ("prepare", "train"):
        assert "mstcli/methods/baselines/kd.py" not in _stage("dvc.yaml", stage, computed), stage

    # a multi-command bench stage gets the union of its commands; `mst compare` only its own module's closure
    assert _stage("bench/dvc.yaml", "baseline", computed) == distill | evaluate
    assert _stage("bench/dvc.yaml", "fit_masks", computed) == _stage("dvc.yaml", "fit_masks", computed)
    compare = _stage("bench/dvc.yaml", "compare", computed)
    assert "mstcli/stages/compare.py" in compare and "mstcli/stages/evaluate.py" not in compare
    assert not any("/stages/paths.py" in p or p.startswith("mstcli/cli/") for p in compare)


def test_stage_roots_from_commands():
    common = ["mstcli.config", "mstcli.stages.paths", "mstcli.ui"]
    assert deps.stage_roots("mst prepare") == ["mstcli.stages.prepare", *common]
    both = deps.stage_roots(
        ["mst distill --method mst --out a.pt -S common.seed=0", "mst eval --student a.pt --results r"]
    )
    assert both == ["mstcli.stages.distill", *common, "mstcli.stages.evaluate"]
    assert deps.stage_roots("mst compare results/bench --out results") == ["mstcli.stages.compare", "mstcli.ui"]
    assert deps.stage_roots("mst report") == ["mstcli.stages.report", *common]
    assert deps.stage_roots("python bench/make_table.py") is None
    with pytest.raises(deps.DepsError, match="unknown command"):
        deps.stage_roots("mst frobnicate")


def test_imports_in_functions_relative_imports_and_targets_are_found(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "import os\n"
        "from mstcli.errors import UserError\n"
        "from . import store\n"  # read as a module of the package mstcli.data
        "from .sources import avdigits\n"
        "def f():\n"
        "    import mstcli.models.taps\n"
        "    from mstcli.methods import registry, NOT_A_MODULE\n"
        "TARGET = 'mstcli.methods.baselines.kd:HintonKD'\n"
    )
    found, dynamic = deps.imported_modules(source, "mstcli.data.mod")
    assert found == {
        "mstcli.errors",
        "mstcli.data",
        "mstcli.data.store",
        "mstcli.data.sources",
        "mstcli.data.sources.avdigits",
        "mstcli.models.taps",
        "mstcli.methods",
        "mstcli.methods.registry",
        "mstcli.methods.baselines.kd",
    }
    assert dynamic == []

    source.write_text("import importlib\nimportlib.import_module('mstcli.x')\n")
    assert deps.imported_modules(source, "mstcli.mod")[1] == [f"{source}:2"]


def test_write_replaces_only_the_code_deps_and_keeps_the_rest():
    text = (
        "# a comment at the top\n"
        "stages:\n"
        "  a:\n"
        "    cmd: mst train\n"
        "    deps:\n"
        "      - data/in.h5\n"
        "      - mstcli/old.py  # gone\n"
        "      # a comment in the list\n"
        "      - models/x.pt\n"
        "      - mstcli/engine\n"
        "\n"
        "    params:\n"
        "      - train\n"
        "\n"
        "  # the next stage\n"
        "  b:\n"
        "    cmd: mst eval\n"
        "    deps:\n"
        "    - data/in.h5\n"
        "    outs:\n"
        "    - out.json\n"
        "  c:\n"
        "    cmd: echo hi\n"
        "    deps:\n"
        "      - mstcli/untouched.py\n"
    )
    new = deps.rewrite(text, REPO / "dvc.yaml", {"a": ["mstcli/p.py", "mstcli/q.py"], "b": ["mstcli/r.py"]})
    assert new == (
        "# a comment at the top\n"
        "stages:\n"
        "  a:\n"
        "    cmd: mst train\n"
        "    deps:\n"
        "      - data/in.h5\n"
        "      - mstcli/p.py\n"
        "      - mstcli/q.py\n"
        "      # a comment in the list\n"
        "      - models/x.pt\n"
        "\n"
        "    params:\n"
        "      - train\n"
        "\n"
        "  # the next stage\n"
        "  b:\n"
        "    cmd: mst eval\n"
        "    deps:\n"
        "    - data/in.h5\n"
        "    - mstcli/r.py\n"
        "    outs:\n"
        "    - out.json\n"
        "  c:\n"
        "    cmd: echo hi\n"
        "    deps:\n"
        "      - mstcli/untouched.py\n"
    )
    assert deps.rewrite(new, REPO / "dvc.yaml", {"a": ["mstcli/p.py", "mstcli/q.py"], "b": ["mstcli/r.py"]}) == new


def test_bench_paths_are_relative_to_the_stage_wdir():
    text = "stages:\n  s:\n    wdir: ..\n    cmd: mst train\n    deps:\n      - mstcli/a.py\n"
    nested = "stages:\n  s:\n    cmd: mst train\n    deps:\n      - ../mstcli/a.py\n"
    bench = REPO / "bench" / "dvc.yaml"
    assert deps.rewrite(text, bench, {"s": ["mstcli/b.py"]}).endswith("      - mstcli/b.py\n")
    assert deps.rewrite(nested, bench, {"s": ["../mstcli/b.py"]}).endswith("      - ../mstcli/b.py\n")
