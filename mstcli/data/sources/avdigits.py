"""AV-Digits: the embedded data set, AV-MNIST-like pairs of a handwritten and a spoken digit.

The raw source (``data/raw/avdigits.h5``, built by ``scripts/build_avdigits.py``) holds 70,000 MNIST
images and spoken digits 0-9 in several voices. A pair is one image and one clip of the same digit;
the image is degraded by PCA (most energy removed) and the clip is augmented (speed, shift, gain, noise)
before it becomes a log-mel spectrogram, so that neither modality alone is easy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mstcli.data.audio import Augmentation, centred, log_mel, place_in_window
from mstcli.data.image import PcaBasis, pca_degrade, project
from mstcli.data.readers import BadInput, RawInput, clip_samples
from mstcli.data.sources import DataSource, FeatureStep, register
from mstcli.data.store import write_features
from mstcli.errors import UserError
from mstcli.ui import progress_bar

REQUIRED_KEYS = ("images", "image_labels", "audio", "audio_lengths", "audio_labels")
CLASS_NAMES = [str(d) for d in range(10)]


def read_raw(path: Path) -> dict[str, Any]:
    """The raw arrays, with every key checked so a broken file is named, not a KeyError."""
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise UserError(f"{path}: not a readable HDF5 file") from None
    with f:
        missing = [k for k in REQUIRED_KEYS if k not in f]
        if missing:
            raise UserError(f"{path}: not an AV-Digits source, missing {', '.join(missing)}")
        raw = {k: f[k][:] for k in REQUIRED_KEYS}
        raw["sample_rate"] = int(f.attrs.get("sample_rate", 8000))
    if raw["images"].ndim != 3:
        raise UserError(f"{path}: images must be N x H x W, got shape {raw['images'].shape}")
    return raw


@dataclass
class Pairs:
    """The drawn pairs of a prepare run, before they are written (the three-modality set adds a view to them)."""

    images: np.ndarray
    spectrograms: np.ndarray
    labels: np.ndarray
    pca: PcaBasis
    rate: int

    def transforms(self) -> dict[str, dict[str, Any]]:
        """What predict and export need to featurize a new image or clip the same way (FeatureFile.transform)."""
        return {
            "image": {
                "mean": self.pca.mean,
                "basis": self.pca.basis,
                "height": self.images.shape[2],
                "width": self.images.shape[3],
            },
            "audio": {"sample_rate": self.rate},
        }


def build(source: Path, params: Any, out: Path, meta: dict[str, Any]) -> None:
    pairs = draw_pairs(source, params, np.random.default_rng(params.seed))
    write_features(
        out,
        dataset="avdigits",
        arrays={"image": pairs.images, "audio": pairs.spectrograms},
        labels=pairs.labels,
        class_names=CLASS_NAMES,
        params=meta,
        transforms=pairs.transforms(),
    )


def draw_pairs(source: Path, params: Any, rng: np.random.Generator) -> Pairs:
    """``prepare.num_samples`` images without replacement, each with an augmented clip of the same digit."""
    raw = read_raw(source)
    n = params.num_samples
    if n > len(raw["images"]):
        raise UserError(f"prepare.num_samples={n} exceeds the {len(raw['images'])} images in {source}")

    image_rows = np.sort(rng.choice(len(raw["images"]), size=n, replace=False))
    labels = raw["image_labels"][image_rows].astype(np.int64)
    images, pca = pca_degrade(raw["images"][image_rows], params.image_energy, params.image_noise, rng)

    rate = raw["sample_rate"]
    window = int(round(params.clip_seconds * rate))
    aug = Augmentation(tuple(params.snr_db), tuple(params.speed), tuple(params.gain_db), params.shift_seconds)
    clips_by_digit = {d: np.flatnonzero(raw["audio_labels"] == d) for d in range(10)}
    if any(len(c) == 0 for c in clips_by_digit.values()):
        raise UserError(f"{source}: every digit 0-9 needs at least one spoken clip")
    waves = np.empty((n, window), dtype=np.float32)
    with progress_bar("augmenting audio", n) as advance:
        for i, digit in enumerate(labels):
            clip_row = rng.choice(clips_by_digit[int(digit)])
            clip = raw["audio"][clip_row, : raw["audio_lengths"][clip_row]].astype(np.float64) / 32768.0
            waves[i] = place_in_window(clip, window, rate, aug, rng)
            if i % 1000 == 999:
                advance(1000)
        advance(n % 1000)
    return Pairs(images, log_mel(waves, rate, params.spec_size), labels, pca, rate)


def _need_state(state: dict[str, Any] | None, what: str) -> dict[str, Any]:
    if state is None:
        raise BadInput(f"the feature file was prepared before mst stored {what}: run `mst prepare` again")
    return state


def check_image(item: RawInput, prepare: dict[str, Any], state: dict[str, Any] | None) -> None:
    state = _need_state(state, "the image PCA basis")
    height, width = item.data.shape
    if (height, width) != (state["height"], state["width"]):
        raise BadInput(f"image of {width}x{height} pixels, the student reads {state['width']}x{state['height']}")


def image_features(items: list[RawInput], prepare: dict[str, Any], state: dict[str, Any] | None) -> np.ndarray:
    """Prepare's degradation with the stored basis; the pixel noise comes from a generator seeded with
    prepare.seed for every image, so an image's prediction does not depend on the rest of its batch."""
    state = _need_state(state, "the image PCA basis")
    pca = PcaBasis(mean=state["mean"], basis=state["basis"])
    noise, seed = prepare["image_noise"], prepare["seed"]
    return np.concatenate([project(i.data[None], pca, noise, np.random.default_rng(seed)) for i in items])


def clip_placement(prepare: dict[str, Any], state: dict[str, Any] | None) -> tuple[int, int, Augmentation]:
    """The sample rate, the window in samples and the augmentation a new clip gets (centred: see audio.centred)."""
    rate = int(_need_state(state, "the audio sample rate")["sample_rate"])
    window = int(round(prepare["clip_seconds"] * rate))
    aug = centred(Augmentation(tuple(prepare["snr_db"]), tuple(prepare["speed"]), tuple(prepare["gain_db"]), 0.0))
    return rate, window, aug


def check_audio(item: RawInput, prepare: dict[str, Any], state: dict[str, Any] | None) -> None:
    _need_state(state, "the audio sample rate")


def audio_features(items: list[RawInput], prepare: dict[str, Any], state: dict[str, Any] | None) -> np.ndarray:
    """Prepare's clip step (resampled to the source's rate, placed in the window, log-mel, min-max) with the
    augmentation at the centre of prepare's ranges (audio.centred) and noise seeded with prepare.seed per clip."""
    import torch
    import torchaudio

    rate, window, aug = clip_placement(prepare, state)
    waves = np.empty((len(items), window), dtype=np.float32)
    for row, item in enumerate(items):
        clip = clip_samples(item)  # the whole clip: the speed change of place_in_window needs it all
        if item.rate != rate:
            clip = torchaudio.functional.resample(torch.from_numpy(clip), item.rate, rate).numpy()
        waves[row] = place_in_window(clip, window, rate, aug, np.random.default_rng(prepare["seed"]))
    return log_mel(waves, rate, prepare["spec_size"])


def image_graph(prepare: dict[str, Any], state: dict[str, Any] | None) -> Any:
    """image_features as a module (data.graphs.PcaImage): the stored basis, and the noise image that project()
    draws for one image from the generator image_features seeds with prepare.seed (the same for every image)."""
    from mstcli.data.graphs import FeatureGraph, GraphInput, PcaImage

    state = _need_state(state, "the image PCA basis")
    height, width, kept = int(state["height"]), int(state["width"]), int(state["basis"].shape[1])
    noise = np.random.default_rng(prepare["seed"]).normal(0.0, prepare["image_noise"], (1, height * width))
    return FeatureGraph(
        module=PcaImage(state["mean"], state["basis"], noise, height, width),
        inputs=(GraphInput("pixels", (height, width), "uint8", "8-bit grayscale pixels, white digit on black"),),
        outside=(
            f"decode each image to 8-bit grayscale (PIL: Image.open(f).convert('L')); it must be {width}x{height} "
            "pixels (no resizing)"
        ),
        inside=(
            f"projection onto the {kept} stored principal components (prepare.image_energy), the fixed pixel noise "
            "(prepare.image_noise, prepare.seed), min-max per image, the student, softmax"
        ),
        parameters={"height": height, "width": width, "principal_components": kept},
        examples=lambda n, rng: (rng.integers(0, 256, (n, height, width), dtype=np.uint8),),
    )


def audio_graph(prepare: dict[str, Any], state: dict[str, Any] | None) -> Any:
    """audio_features as a module (data.graphs.WindowedLogMel) on clips centred in the window. The noise template
    is read off place_in_window itself: for a silent clip it returns exactly its noise at the 1e-6 floor."""
    from mstcli.data.audio import log_mel_layers, place_in_window
    from mstcli.data.graphs import FeatureGraph, GraphInput, WindowedLogMel, clip_examples

    rate, window, aug = clip_placement(prepare, state)
    silent = place_in_window(np.zeros(2), window, rate, aug, np.random.default_rng(prepare["seed"]))
    template = silent.astype(np.float64) / 1e-6
    size = int(prepare["spec_size"])
    mel, to_db = log_mel_layers(rate, window, size)
    return FeatureGraph(
        module=WindowedLogMel(template, aug.snr_db[0], mel, to_db, size),
        inputs=(
            GraphInput("wave", (window,), "float32", f"mono samples in [-1, 1] at {rate} Hz, centred in the window"),
            GraphInput("length", (), "int64", "the clip's number of samples in the window, at most the window"),
        ),
        outside=(
            f"decode each clip to mono float samples in [-1, 1] (mean of the channels) at {rate} Hz (resample other "
            f"rates first); centre it in a window of {window} samples: a shorter clip is zero-padded with "
            f"(window - n) // 2 zeros before it, a longer one keeps samples (n - window) // 2 onwards; "
            "length = min(n, window)"
        ),
        inside=(
            f"noise at {aug.snr_db[0]:g} dB SNR (the middle of prepare.snr_db) from the fixed template "
            f"(prepare.seed), a {size}-band log-mel spectrogram of {size} frames (dB, 80 dB floor per clip), "
            "min-max per clip, the student, softmax"
        ),
        parameters={"sample_rate": rate, "window": window, "snr_db": aug.snr_db[0], "spec_size": size},
        examples=clip_examples(window, rate),
    )


SOURCE = register(
    DataSource(
        name="avdigits",
        modalities=("image", "audio"),
        pictures=("image",),
        default_source="data/raw/avdigits.h5",
        description="embedded: MNIST digits (PCA-degraded) paired with spoken digits (augmented log-mel)",
        build=build,
        feature_steps={
            "image": FeatureStep(reads="image", check=check_image, apply=image_features, graph=image_graph),
            "audio": FeatureStep(reads="audio", check=check_audio, apply=audio_features, graph=audio_graph),
        },
    )
)
