"""``mst export``: the run's student as files that run without mst, ``student.pt2`` (torch.export) and
``student.onnx`` (checked with onnxruntime before anything is kept), with a manifest and a runnable example.

The graph starts where decoding a file ends: the data set's feature step is part of it when the data set
registers it as a module (``FeatureStep.graph``; for AV-Digits the PCA projection of an image and the log-mel
spectrogram of a clip), so the caller gives pixels or samples; otherwise the graph reads feature rows. The step's
parameters come from the feature file the student was trained on (checked by its fingerprint, as ``mst predict``
does), never from the current settings. Everything is written into a temporary folder next to the target and
renamed when complete, so a failed export leaves nothing behind.

Where the graph differs from ``mst predict``: the log-mel dB floor (80 dB below the maximum) is taken per clip,
while ``log_mel`` (in prepare and predict) takes it over the whole batch of clips it is given; on AV-Digits'
noisy clips the floor is never reached (measured: 0 of 1,024 default clips change), so both give the same rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import mstcli
from mstcli.atomic_write import write_json, write_text
from mstcli.data.graphs import FeatureGraph, feature_rows_graph
from mstcli.data.readers import BadInput
from mstcli.data.sources import get_source
from mstcli.engine.checkpoints import StudentCheckpoint
from mstcli.engine.run_lock import run_lock
from mstcli.errors import UserError
from mstcli.stages.predict import FeatureContext, Student

TOLERANCE = 1e-5  # largest difference of a probability between onnxruntime (or the reloaded .pt2) and torch
FORMAT = "mst-export/1"
EXAMPLE = Path(__file__).resolve().parents[1] / "standalone" / "run_onnx.py"


class ExportedStudent(nn.Module):
    """The feature step, the student and its softmax: raw inputs -> class probabilities."""

    def __init__(self, features: nn.Module, student: nn.Module) -> None:
        super().__init__()
        self.features, self.student = features, student

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.student(self.features(*inputs)).float(), dim=1)


def feature_graph(student: Student, context: FeatureContext) -> FeatureGraph:
    """The data set's feature step as a module, or feature rows when the data set registers none."""
    spec = student.spec
    source = get_source(spec.dataset)
    step = source.feature_step(spec.student, context.records()[1] if source.steps_need_state else None)
    if step is None or step.graph is None:
        return feature_rows_graph(student.shape)
    try:
        return step.graph(*context.records())
    except BadInput as exc:
        raise UserError(f"{context.path}: {exc}") from None


def export(student_path: Path, features_path: Path, out: Path, metrics_path: Path | None = None) -> dict[str, Any]:
    """Write ``out`` (student.pt2, student.onnx, manifest.json, run_onnx.py, README.md); returns the manifest.

    Holds the lock of the student's run (engine/run_lock.py): the folder of ``student_path``, ``models/<run>``."""
    folder = Path(student_path).parent
    with run_lock(folder, run_name(folder), "mst export"):
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file, not a folder")
        student = Student.load(student_path)
        checkpoint = StudentCheckpoint.load(student_path)
        context = FeatureContext(features_path, student)
        prepare, _ = context.records()  # refuses a feature file the student was not trained on
        graph = feature_graph(student, context)
        model = ExportedStudent(graph.module, student.net.net).eval()

        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            check = write_graphs(model, graph, tmp)
            shutil.copyfile(EXAMPLE, tmp / "run_onnx.py")
            manifest = build_manifest(student, checkpoint, context, prepare, graph, check, tmp, metrics_path)
            write_json(tmp / "manifest.json", manifest)
            write_text(tmp / "README.md", readme(manifest))
            replace_folder(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return manifest


def run_name(folder: Path) -> str:
    """The run a models folder belongs to, for the message of a refused export: ``main`` for ``models/main``,
    ``bench/image-s0`` for ``models/bench/image-s0``; the folder itself for a student kept elsewhere."""
    models = Path("models")
    if folder != models and folder.is_relative_to(models):
        return folder.relative_to(models).as_posix()
    return folder.as_posix()


def write_graphs(model: nn.Module, graph: FeatureGraph, folder: Path) -> dict[str, Any]:
    """torch.export the model with a dynamic batch axis, save it, convert it to ONNX, and check both files
    against the model on fresh inputs of two batch sizes. Returns what the check measured."""
    rng = np.random.default_rng(0)
    example = tuple(torch.from_numpy(a) for a in graph.examples(2, rng))
    batch = torch.export.Dim("batch", min=1, max=65536)
    dynamic = tuple({0: batch} for _ in example)
    with torch.no_grad():
        program = torch.export.export(model, example, dynamic_shapes=(dynamic,))  # one tuple: *inputs
    names = [i.name for i in graph.inputs]
    with quiet():
        torch.export.save(program, folder / "student.pt2")
        torch.onnx.export(
            program,
            example,
            str(folder / "student.onnx"),
            input_names=names,
            output_names=["probabilities"],
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return check_graphs(model, graph, folder, rng)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The exporters' progress lines and warnings (e.g. about buffers that share storage) are not the user's
    business: the check below says whether the files are right."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def check_graphs(model: nn.Module, graph: FeatureGraph, folder: Path, rng: np.random.Generator) -> dict[str, Any]:
    """onnxruntime and the reloaded .pt2 against eager torch, for one input and a batch of 7."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / "student.onnx"), providers=["CPUExecutionProvider"])
    with quiet():
        reloaded = torch.export.load(folder / "student.pt2").module()
    names = [i.name for i in graph.inputs]
    worst = {"onnx": 0.0, "pt2": 0.0}
    for n in (1, 7):
        arrays = graph.examples(n, rng)
        tensors = tuple(torch.from_numpy(a) for a in arrays)
        with torch.no_grad():
            expected = model(*tensors).numpy()
            pt2 = reloaded(*tensors).numpy()
        onnx = session.run(["probabilities"], dict(zip(names, arrays, strict=True)))[0]
        worst["onnx"] = max(worst["onnx"], float(np.abs(onnx - expected).max()))
        worst["pt2"] = max(worst["pt2"], float(np.abs(pt2 - expected).max()))
    for kind, diff in worst.items():
        if not diff <= TOLERANCE:
            raise UserError(
                f"the exported student.{kind} gives probabilities {diff:.2e} away from torch's (more than "
                f"{TOLERANCE:g}); nothing was written"
            )
    return {"inputs": 8, "batch_sizes": [1, 7], "max_abs_diff_onnx": worst["onnx"], "max_abs_diff_pt2": worst["pt2"]}


def replace_folder(tmp: Path, out: Path) -> None:
    """Rename the finished folder onto ``out``; an earlier export there is moved aside first, removed after."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def build_manifest(
    student: Student,
    checkpoint: StudentCheckpoint,
    context: FeatureContext,
    prepare: dict[str, Any],
    graph: FeatureGraph,
    check: dict[str, Any],
    folder: Path,
    metrics_path: Path | None,
) -> dict[str, Any]:
    spec = student.spec
    return {
        "format": FORMAT,
        "dataset": spec.dataset,
        "modality": spec.student,
        "net": spec.student_net,
        "classes": list(spec.class_names),
        "inputs": [
            {"name": i.name, "shape": ["batch", *i.shape], "dtype": i.dtype, "description": i.description}
            for i in graph.inputs
        ],
        "outputs": [{"name": "probabilities", "shape": ["batch", spec.num_classes], "dtype": "float32"}],
        "before_the_graph": graph.outside,
        "in_the_graph": graph.inside,
        "feature_rows": {"shape": list(student.shape), "dtype": graph.rows_dtype},
        "feature_parameters": {"prepare": prepare, **graph.parameters},
        "files": {name: file_record(folder / name) for name in ("student.pt2", "student.onnx")},
        "check": {"tolerance": TOLERANCE, **check},
        "metrics": run_metrics(metrics_path, checkpoint),
        "provenance": {
            "checkpoint": str(student.path),
            "method": checkpoint.method,
            "teacher": checkpoint.teacher,
            "best_epoch": checkpoint.best_epoch,
            "val_ce": checkpoint.val_ce,
            "settings": checkpoint.settings,
            "dataset": spec.dataset,
            "feature_file": str(context.path),
            "feature_fingerprint": student.fingerprint,
            "split_group": checkpoint.inputs["split_group"],
            "stage1_fingerprint": checkpoint.stage1,
            "git": git_state(),
            "versions": versions(),
        },
    }


def file_record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def run_metrics(path: Path | None, checkpoint: StudentCheckpoint) -> dict[str, Any] | None:
    """``mst eval``'s metrics of this student, if the file exists and describes the same student (method,
    teacher, split group and best epoch agree); None otherwise."""
    if path is None or not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = (
        metrics.get("method") == checkpoint.method
        and metrics.get("teacher") == checkpoint.teacher
        and metrics.get("split_group") == checkpoint.inputs["split_group"]
        and metrics.get("best_epoch") == checkpoint.best_epoch
    )
    return {"file": str(path), **metrics} if same else None


def git_state() -> dict[str, Any] | None:
    """The commit of the working directory's repository and whether it has uncommitted changes (None: no git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
        status = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if commit.returncode != 0 or status.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "mstcli": mstcli.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def readme(manifest: dict[str, Any]) -> str:
    """A short README.md for the folder: what goes in, what comes out, how to run it without mst."""
    inputs = "\n".join(
        f"- `{i['name']}`: {i['dtype']} of shape {i['shape']} ({i['description']})" for i in manifest["inputs"]
    )
    return f"""# {manifest["dataset"]} {manifest["modality"]} student, exported by mst

`student.onnx` (onnxruntime) and `student.pt2` (`torch.export.load(path).module()`) compute the same function:

{inputs}

-> `probabilities`: float32 of shape {manifest["outputs"][0]["shape"]}, classes {manifest["classes"]}.

Before the graph: {manifest["before_the_graph"]}.

In the graph: {manifest["in_the_graph"]}.

```
pip install onnxruntime numpy pillow soundfile
python run_onnx.py FILE...          # prints each file's class and probability
```

`manifest.json` holds the feature parameters, the run's test metrics and where the student came from.
"""
