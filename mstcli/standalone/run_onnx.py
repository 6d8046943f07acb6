"""Run an exported mst student with onnxruntime, without mst.

    pip install onnxruntime numpy pillow soundfile    # pillow for images, soundfile for clips
    python run_onnx.py digit.png other.png            # or clips (.wav/.flac), or .npy feature rows
    python run_onnx.py --json digit.png               # one JSON object per line with all probabilities

It reads manifest.json next to it, decodes each file the way the manifest's "before_the_graph" says, and runs
student.onnx on the whole batch. read_inputs() is the decoding alone, for use with student.pt2 as well:

    import torch; model = torch.export.load("student.pt2").module()
    probabilities = model(*(torch.from_numpy(a) for a in read_inputs(files, manifest).values()))
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def read_image(path: str, height: int, width: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.uint8)
    if pixels.shape != (height, width):
        raise ValueError(
            f"{path}: image of {pixels.shape[1]}x{pixels.shape[0]} pixels, the student reads {width}x{height}"
        )
    return pixels


def read_clip(path: str, rate: int, window: int) -> tuple[np.ndarray, int]:
    import soundfile

    samples, file_rate = soundfile.read(path, dtype="float64", always_2d=True)
    if file_rate != rate:
        raise ValueError(f"{path}: {file_rate} Hz, the student reads {rate} Hz (resample it first)")
    clip = samples.mean(axis=1)
    wave = np.zeros(window, dtype=np.float32)
    if len(clip) > window:  # keep the middle of a long clip
        start = (len(clip) - window) // 2
        wave[:] = clip[start : start + window]
        return wave, window
    offset = (window - len(clip)) // 2  # centre a short one
    wave[offset : offset + len(clip)] = clip
    return wave, len(clip)


def read_inputs(paths: list[str], manifest: dict) -> dict[str, np.ndarray]:
    """The graph's inputs (name -> batch array) for ``paths``, decoded as manifest.json says."""
    names = [i["name"] for i in manifest["inputs"]]
    parameters = manifest["feature_parameters"]
    if names == ["pixels"]:
        return {"pixels": np.stack([read_image(p, parameters["height"], parameters["width"]) for p in paths])}
    if names == ["wave", "length"]:
        clips = [read_clip(p, parameters["sample_rate"], parameters["window"]) for p in paths]
        return {"wave": np.stack([w for w, _ in clips]), "length": np.array([n for _, n in clips], dtype=np.int64)}
    if names == ["features"]:  # float32 features, or the uint8 pixels / int64 tokens of a net with its own step
        shape, dtype = tuple(manifest["feature_rows"]["shape"]), manifest["inputs"][0]["dtype"]
        return {"features": np.stack([np.load(p).astype(dtype).reshape(shape) for p in paths])}
    raise ValueError(f"manifest.json: unknown inputs {names}")


def main(argv: list[str]) -> int:
    import onnxruntime

    as_json = "--json" in argv
    paths = [a for a in argv if a != "--json"]
    if not paths:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    manifest = json.loads((HERE / "manifest.json").read_text())
    try:
        inputs = read_inputs(paths, manifest)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    session = onnxruntime.InferenceSession(str(HERE / "student.onnx"), providers=["CPUExecutionProvider"])
    probabilities = session.run(["probabilities"], inputs)[0]
    classes = manifest["classes"]
    for path, row in zip(paths, probabilities, strict=True):
        best = int(np.argmax(row))
        if as_json:
            print(json.dumps({"file": path, "class": classes[best], "probabilities": row.tolist()}))
        else:
            print(f"{path}\t{classes[best]}\t{row[best]:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
