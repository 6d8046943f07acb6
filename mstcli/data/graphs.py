"""Feature steps as torch modules, so that ``mst export`` can put them into one graph with the student.

Each module computes what a data set's ``FeatureStep.apply`` computes for ``mst predict`` (the same state read
from the feature file, the same constants), on tensors and for a whole batch at once, so that an exported graph
takes decoded pixels or samples and nothing of mst is needed to run it. Where ``apply`` works in float64 (the
image projection, the clip's noise) the module does too, so the two agree to float32 rounding. Decoding a file
stays outside: a graph cannot open a PNG, and what the caller must do is written in ``FeatureGraph.outside``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class GraphInput:
    name: str
    shape: tuple[int, ...]  # one sample's shape; the graph takes a batch of them (a dynamic first axis)
    dtype: str  # numpy dtype name
    description: str


@dataclass
class FeatureGraph:
    """A feature step as a module from raw inputs to feature rows (N x feature shape, float32)."""

    module: nn.Module
    inputs: tuple[GraphInput, ...]
    outside: str  # what the caller does before the graph
    inside: str  # what the graph does before the student
    # n random inputs of each kind, as arrays: what the exported files are traced with and checked on
    examples: Callable[[int, np.random.Generator], tuple[np.ndarray, ...]]
    parameters: dict[str, Any] = field(default_factory=dict)  # the step's numbers, for the manifest
    rows_dtype: str = "float32"  # what the student reads: float32 features, or raw uint8 pixels / int64 tokens


def _minmax(flat: torch.Tensor) -> torch.Tensor:
    """audio.minmax_per_sample on a N x D tensor, in its dtype."""
    lo, hi = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    return (flat - lo) / torch.clamp(hi - lo, min=1e-8)


class Standardize(nn.Module):
    """(rows - mean) / std per position: a folder's array rows standardized by training statistics."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("std", torch.from_numpy(np.asarray(std, dtype=np.float32)))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return (rows - self.mean) / self.std


class FeatureRows(nn.Module):
    """No feature step in the graph: the caller gives feature rows (a data set without a graph of its step)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def feature_rows_graph(
    shape: tuple[int, ...],
    outside: str | None = None,
    *,
    dtype: str = "float32",
    examples: Callable[[int, np.random.Generator], tuple[np.ndarray, ...]] | None = None,
    parameters: dict[str, Any] | None = None,
) -> FeatureGraph:
    """A graph that takes the rows as `mst prepare` wrote them, of ``dtype`` (uint8 pixels and int64 tokens for
    nets that bring their own input step: the student normalizes or embeds them itself), the step that makes
    them described in words (``outside``); ``examples`` default to random floats in [0, 1)."""
    return FeatureGraph(
        module=FeatureRows(),
        inputs=(GraphInput("features", tuple(shape), dtype, "feature rows as `mst prepare` wrote them"),),
        outside=outside
        or "compute the feature rows as `mst prepare` does for this data set (the graph holds only the student)",
        inside="nothing: the student reads the rows as they are",
        examples=examples or (lambda n, rng: (rng.random((n, *shape), dtype=np.float32),)),
        parameters=dict(parameters or {}),
        rows_dtype=dtype,
    )


def pixel_examples(shape: tuple[int, ...]) -> Callable[[int, np.random.Generator], tuple[np.ndarray, ...]]:
    """Random uint8 images of ``shape`` (C x S x S), for checking a graph that reads raw pixels."""
    return lambda n, rng: (rng.integers(0, 256, (n, *shape), dtype=np.uint8),)


def token_examples(length: int, vocab_size: int) -> Callable[[int, np.random.Generator], tuple[np.ndarray, ...]]:
    """Random N x 2 x L token rows: ids below ``vocab_size`` on a random-length prefix whose attention mask is 1,
    padding (id 0, mask 0) after it, as a tokenizer pads to L."""

    def examples(n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        rows = np.zeros((n, 2, length), dtype=np.int64)
        for i in range(n):
            used = int(rng.integers(1, length + 1))
            rows[i, 0, :used] = rng.integers(0, max(1, vocab_size), used)
            rows[i, 1, :used] = 1
        return (rows,)

    return examples


class PcaImage(nn.Module):
    """image.project with a fixed noise image: N x H x W uint8 pixels -> N x 1 x H x W float32 features."""

    def __init__(self, mean: np.ndarray, basis: np.ndarray, noise: np.ndarray, height: int, width: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float64)))
        self.register_buffer("basis", torch.as_tensor(np.asarray(basis, dtype=np.float64)))
        self.register_buffer("noise", torch.as_tensor(np.asarray(noise, dtype=np.float64).reshape(-1)))
        self.height, self.width = height, width

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        centred = pixels.flatten(1).to(torch.float64) / 255.0 - self.mean
        reduced = self.mean + (centred @ self.basis) @ self.basis.T + self.noise
        return _minmax(reduced).to(torch.float32).reshape(-1, 1, self.height, self.width)


class WindowedLogMel(nn.Module):
    """audio.place_in_window (centred, no speed, gain or shift) and audio.log_mel on clips already centred in
    their window: (N x window float32 samples, N lengths) -> N x 1 x size x size float32 features.

    The noise is the fixed ``template`` scaled per clip to the SNR against the clip's own power, as
    place_in_window draws it; the dB floor (top_db) is taken per clip, which is what a batch-independent graph
    must do (log_mel takes it over the whole batch it is given: see the module notes in stages/export.py)."""

    def __init__(self, template: np.ndarray, snr_db: float, mel: nn.Module, to_db: nn.Module, size: int) -> None:
        super().__init__()
        self.register_buffer("template", torch.as_tensor(np.asarray(template, dtype=np.float64)))
        self.noise_ratio = float(10 ** (snr_db / 10))
        self.mel, self.to_db, self.size = mel, to_db, size

    def forward(self, wave: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        samples = wave.to(torch.float64)
        power = (samples * samples).sum(dim=1) / length.to(torch.float64)
        scale = torch.sqrt(torch.clamp(power / self.noise_ratio, min=1e-12))
        noisy = (samples + scale[:, None] * self.template).to(torch.float32)
        spec = self.to_db(self.mel(noisy).unsqueeze(1))[:, :, :, : self.size]  # N x 1 x bands x frames
        return _minmax(spec.flatten(1)).reshape(-1, 1, self.size, self.size)


def centre_in_window(clip: np.ndarray, window: int) -> tuple[np.ndarray, int]:
    """A clip placed as place_in_window places it without a shift: zero-padded around the middle, or its middle
    ``window`` samples. Returns the window and the clip's length in it (the same rule as run_onnx.py's)."""
    out = np.zeros(window, dtype=np.float32)
    if len(clip) > window:
        start = (len(clip) - window) // 2
        out[:] = clip[start : start + window]
        return out, window
    offset = (window - len(clip)) // 2
    out[offset : offset + len(clip)] = clip
    return out, len(clip)


def clip_examples(window: int, rate: int) -> Callable[[int, np.random.Generator], tuple[np.ndarray, ...]]:
    """Random tone-plus-noise clips of random lengths (some longer than the window), centred, for checks."""

    def examples(n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        waves, lengths = np.zeros((n, window), dtype=np.float32), np.zeros(n, dtype=np.int64)
        for i in range(n):
            size = int(rng.integers(window // 4, window * 5 // 4))
            t = np.arange(size) / rate
            clip = rng.uniform(0.1, 0.9) * np.sin(2 * np.pi * rng.uniform(200, rate / 2.5) * t)
            clip += rng.normal(0, 0.02, size)
            waves[i], lengths[i] = centre_in_window(np.clip(clip, -1, 1), window)
        return waves, lengths

    return examples


class LogMelClip(nn.Module):
    """The log-mel step of a folder's audio (folder.kinds.log_mel_rows) on clips already centred in their window:
    N x window float32 samples -> N x 1 x size x size, the dB floor and the min-max taken per clip."""

    def __init__(self, mel: nn.Module, to_db: nn.Module, size: int) -> None:
        super().__init__()
        self.mel, self.to_db, self.size = mel, to_db, size

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = self.to_db(self.mel(wave.to(torch.float32).unsqueeze(1)))[:, :, :, : self.size]
        return _minmax(spec.flatten(1)).reshape(-1, 1, self.size, self.size)


def log_mel_graph(settings: Any) -> FeatureGraph:
    """A folder's audio step (settings: folder.kinds.KindSettings) from the centred window to the feature rows."""
    from mstcli.data.folder.kinds import log_mel_layers

    rate, window, size = settings.sample_rate, settings.window, settings.spec_size
    mel, to_db = log_mel_layers(settings)

    def examples(n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        t = np.arange(window) / rate
        tones = np.sin(2 * np.pi * rng.uniform(100, 2000, (n, 1)) * t) * rng.uniform(0.05, 0.9, (n, 1))
        return ((tones + rng.normal(0, 0.01, (n, window))).astype(np.float32),)

    return FeatureGraph(
        module=LogMelClip(mel, to_db, size),
        inputs=(GraphInput("wave", (window,), "float32", f"mono samples in [-1, 1] at {rate} Hz, centred"),),
        outside=(
            f"decode each clip to mono float samples in [-1, 1] (mean of the channels) at {rate} Hz (resample other "
            f"rates first); centre it in a window of {window} samples: a shorter clip is zero-padded with "
            f"(window - n) // 2 zeros before it, a longer one keeps samples (n - window) // 2 onwards"
        ),
        inside=(
            f"a {size}-band log-mel spectrogram of {size} frames (dB, 80 dB floor per clip), min-max per clip, the "
            "student, softmax"
        ),
        parameters={"sample_rate": rate, "window": window, "spec_size": size},
        examples=examples,
    )
