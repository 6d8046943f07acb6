"""How fast a student predicts, and what exporting it buys: prints figures, asserts nothing.

    python bench/export_speed.py [RUN...] [--repeats N] [-S key=value]     # in the project folder; default run main

For each run (models/<run>/student.pt and the feature file it was trained on):
- exports it (``mst export``'s stage, into models/<run>/export/) and prints the time and each file's size;
- ``mst predict``'s stage call on real digits from the raw AV-Digits source written as PNG / WAV files: one input,
  and 256 inputs (per input), each call loading the checkpoint and reading the files as the command does; and the
  whole ``mst predict FILE`` command once (Python start and the torch import included);
- the exported graph (feature step + student + softmax) on the same decoded inputs, batch 1 and 256: torch eager,
  the reloaded .pt2 and onnxruntime, one thread each (median of --repeats calls).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py


def median_seconds(call, repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_inputs(source: Path, modality: str, folder: Path, count: int) -> list[str]:
    """``count`` real digits of the raw source as the files a user would give: 28x28 PNGs or 8 kHz 16-bit WAVs."""
    import soundfile
    from PIL import Image

    with h5py.File(source, "r") as f:
        if modality == "image":
            images = f["images"][:count]
            paths = [folder / f"{i}.png" for i in range(len(images))]
            for path, image in zip(paths, images):
                Image.fromarray(image).save(path)
        else:
            audio, lengths, rate = f["audio"][:], f["audio_lengths"][:], int(f.attrs.get("sample_rate", 8000))
            paths = [folder / f"{i}.wav" for i in range(count)]
            for i, path in enumerate(paths):
                row = i % len(audio)
                soundfile.write(str(path), audio[row, : lengths[row]], rate, subtype="PCM_16")
    return [str(p) for p in paths]


def load_example_module(folder: Path):
    spec = importlib.util.spec_from_file_location("run_onnx", folder / "run_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_run(run: str, params, repeats: int) -> None:
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
    export_s = time.perf_counter() - start
    modality = manifest["modality"]
    inputs_desc = ", ".join(f"{i['name']} {i['shape']} {i['dtype']}" for i in manifest["inputs"])
    print(f"run {run}: {modality} student ({manifest['net']}), graph inputs {inputs_desc}")
    accuracy = (manifest["metrics"] or {}).get("accuracy")
    if accuracy is not None:
        print(f"  test accuracy (results/{run}/metrics.json): {accuracy:.2%}")
    sizes = ", ".join(f"{name} {record['bytes']:,} bytes" for name, record in manifest["files"].items())
    print(f"  export: {export_s:.1f} s; {sizes}; onnxruntime within {manifest['check']['max_abs_diff_onnx']:.1e}")

    source = Path(FeatureFile.open(features).params["source"])  # the raw file prepare read
    with tempfile.TemporaryDirectory() as tmp:
        files = write_inputs(source, modality, Path(tmp), 256)
        one = median_seconds(lambda: predict_files([Path(files[0])], paths.student, features), repeats)
        batch = median_seconds(lambda: predict_files([Path(f) for f in files], paths.student, features), 3)
        print(
            f"  mst predict, stage call (checkpoint loaded, files read and featurized): 1 input {one * 1e3:.1f} ms; "
            f"256 inputs {batch * 1e3 / 256:.2f} ms per input ({batch:.2f} s in all)"
        )
        start = time.perf_counter()
        subprocess.run(["mst", "predict", files[0], "-S", f"common.run={run}"], check=True, capture_output=True)
        print(
            f"  mst predict FILE, the whole command (Python start, torch import): {time.perf_counter() - start:.2f} s"
        )

        example = load_example_module(out)
        decoded = example.read_inputs(files, manifest)
    names = [i["name"] for i in manifest["inputs"]]
    student = Student.load(paths.student)
    eager = ExportedStudent(feature_graph(student, FeatureContext(features, student)).module, student.net.net).eval()
    pt2 = torch.export.load(out / "student.pt2").module()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(out / "student.onnx"), options, providers=["CPUExecutionProvider"])
    for n in (1, 256):
        arrays = {k: v[:n] for k, v in decoded.items()}
        tensors = [torch.from_numpy(arrays[k]) for k in names]

        def run_torch(model=eager, tensors=tensors):
            with torch.inference_mode():
                model(*tensors)

        t_eager = median_seconds(run_torch, repeats)
        t_features = median_seconds(lambda: run_torch(eager.features), repeats)
        t_pt2 = median_seconds(lambda: run_torch(pt2), repeats)
        t_ort = median_seconds(lambda arrays=arrays: session.run(["probabilities"], arrays), repeats)
        print(
            f"  graph, batch {n:>3} (per input): torch eager {t_eager / n * 1e3:.3f} ms (feature step alone "
            f"{t_features / n * 1e3:.3f} ms), .pt2 {t_pt2 / n * 1e3:.3f} ms, onnxruntime {t_ort / n * 1e3:.3f} ms "
            f"(onnxruntime {t_eager / t_ort:.1f}x eager)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=["main"], help="runs to measure (models/<run>/student.pt)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per figure (the median is printed)")
    parser.add_argument("-S", dest="overrides", action="append", default=[], help="setting overrides, as for mst")
    args = parser.parse_args()

    import torch

    from mstcli.config import load_params

    torch.set_num_threads(1)
    params = load_params(None, args.overrides)
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, {__import__('os').cpu_count()} cores; "
        f"python {platform.python_version()}, torch {torch.__version__}, 1 thread"
    )
    for run in args.runs:
        bench_run(run, params, args.repeats)


if __name__ == "__main__":
    sys.exit(main())
