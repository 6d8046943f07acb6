"""``mst bench export``: how fast a student predicts, and what exporting it buys; prints figures, asserts nothing.

    mst bench export [RUN...] [--repeats N] [-S key=value]     # in the project folder; default run: common.run

For each run (models/<run>/student.pt and the feature file it was trained on):
- exports it (``mst export``'s stage, into models/<run>/export/) and reports the time and each file's size;
- ``mst predict``'s stage call on real digits from the raw AV-Digits source written as PNG / WAV files: one input,
  and 256 inputs (per input), each call loading the checkpoint and reading the files as the command does; and the
  whole ``python -m mstcli predict FILE`` command once (Python start and the torch import included);
- the exported graph (feature step + student + softmax) on the same decoded inputs, batch 1 and 256: torch eager,
  the reloaded .pt2 and onnxruntime, one thread each (median of --repeats calls).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BATCHES = (1, 256)


def median_seconds(call: Callable[[], Any], repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_inputs(source: Path, modality: str, folder: Path, count: int) -> list[str]:
    """``count`` real digits of the raw source as the files a user would give: 28x28 PNGs or 8 kHz 16-bit WAVs."""
    import h5py
    import soundfile
    from PIL import Image

    with h5py.File(source, "r") as f:
        if modality == "image":
            images = f["images"][:count]
            paths = [folder / f"{i}.png" for i in range(len(images))]
            for path, image in zip(paths, images, strict=True):
                Image.fromarray(image).save(path)
        else:
            audio, lengths, rate = f["audio"][:], f["audio_lengths"][:], int(f.attrs.get("sample_rate", 8000))
            paths = [folder / f"{i}.wav" for i in range(count)]
            for i, path in enumerate(paths):
                row = i % len(audio)
                soundfile.write(str(path), audio[row, : lengths[row]], rate, subtype="PCM_16")
    return [str(p) for p in paths]


def load_example_module(folder: Path):
    """The export folder's run_onnx.py, loaded from its file (it never imports mstcli)."""
    spec = importlib.util.spec_from_file_location("run_onnx", folder / "run_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure_run(run: str, params, repeats: int, cli_settings: list[str]) -> dict[str, Any]:
    """The figures of one run; ``cli_settings`` are the ``-p``/``-S`` options the timed ``mst predict`` gets."""
    import onnxruntime
    import torch

    from mstcli.data.store import FeatureFile
    from mstcli.stages.export import ExportedStudent, export, feature_graph
    from mstcli.stages.paths import RunPaths
    from mstcli.stages.predict import FeatureContext, Student, predict_files
    from mstcli.stages.prepare import feature_path

    paths = RunPaths(run)
    features = feature_path(params.common.dataset)
    out = paths.models / "export"
    start = time.perf_counter()
    manifest = export(paths.student, features, out, paths.results / "metrics.json")
    figures: dict[str, Any] = {
        "modality": manifest["modality"],
        "net": manifest["net"],
        "inputs": [f"{i['name']} {i['shape']} {i['dtype']}" for i in manifest["inputs"]],
        "test_accuracy": (manifest["metrics"] or {}).get("accuracy"),
        "export_s": round(time.perf_counter() - start, 2),
        "file_bytes": {name: record["bytes"] for name, record in manifest["files"].items()},
        "max_abs_diff_onnx": manifest["check"]["max_abs_diff_onnx"],
    }

    source = Path(FeatureFile.open(features).params["source"])  # the raw file prepare read
    with tempfile.TemporaryDirectory() as tmp:
        files = write_inputs(source, manifest["modality"], Path(tmp), 256)
        one = median_seconds(lambda: predict_files([Path(files[0])], paths.student, features), repeats)
        batch = median_seconds(lambda: predict_files([Path(f) for f in files], paths.student, features), 3)
        start = time.perf_counter()
        command = [sys.executable, "-m", "mstcli", "predict", files[0], *cli_settings, "-S", f"common.run={run}"]
        subprocess.run(command, check=True, capture_output=True)
        figures["predict"] = {
            "one_input_ms": round(one * 1e3, 2),
            "per_input_of_256_ms": round(batch * 1e3 / 256, 3),
            "256_inputs_s": round(batch, 3),
            "command_s": round(time.perf_counter() - start, 2),
        }
        example = load_example_module(out)
        decoded = example.read_inputs(files, manifest)
    names = [i["name"] for i in manifest["inputs"]]
    student = Student.load(paths.student)
    eager = ExportedStudent(feature_graph(student, FeatureContext(features, student)).module, student.net.net).eval()
    pt2 = torch.export.load(out / "student.pt2").module()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(out / "student.onnx"), options, providers=["CPUExecutionProvider"])
    figures["graph"] = {}
    for n in BATCHES:
        arrays = {k: v[:n] for k, v in decoded.items()}
        tensors = [torch.from_numpy(arrays[k]) for k in names]

        def run_torch(model=eager, tensors=tensors):
            with torch.inference_mode():
                model(*tensors)

        t_eager = median_seconds(run_torch, repeats)
        t_features = median_seconds(lambda: run_torch(eager.features), repeats)
        t_pt2 = median_seconds(lambda: run_torch(pt2), repeats)
        t_ort = median_seconds(lambda arrays=arrays: session.run(["probabilities"], arrays), repeats)
        figures["graph"][str(n)] = {  # per input, ms
            "eager_ms": round(t_eager / n * 1e3, 4),
            "feature_step_ms": round(t_features / n * 1e3, 4),
            "pt2_ms": round(t_pt2 / n * 1e3, 4),
            "onnxruntime_ms": round(t_ort / n * 1e3, 4),
            "onnxruntime_over_eager": round(t_eager / t_ort, 2),
        }
    return figures


def measure(runs: list[str], params, repeats: int = 20, cli_settings: list[str] | None = None) -> dict[str, Any]:
    """The figures of ``mst bench export`` as one JSON-ready dict: the machine, then one entry per run."""
    import torch

    from mstcli.errors import UserError

    if repeats < 1:
        raise UserError("--repeats must be at least 1")
    torch.set_num_threads(1)
    return {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": 1,
        "repeats": repeats,
        "runs": {run: measure_run(run, params, repeats, list(cli_settings or [])) for run in runs},
    }
