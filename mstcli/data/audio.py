"""Audio features: waveform augmentation and log-mel spectrograms (torchaudio)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random waveform perturbations; each sample draws one value from every range."""

    snr_db: tuple[float, float]
    speed: tuple[float, float]
    gain_db: tuple[float, float]
    shift_seconds: float


def place_in_window(
    clip: np.ndarray, window: int, rate: int, aug: Augmentation, rng: np.random.Generator
) -> np.ndarray:
    """One augmented ``window``-sample waveform: speed change, random shift around the centre, gain, noise.

    Speed is changed by linear resampling (tempo and pitch together, like Kaldi's speed perturbation).
    Noise is white Gaussian at a signal-to-noise ratio measured against the speech itself, so quiet and
    loud voices are equally hard.
    """
    speed = rng.uniform(*aug.speed)
    length = max(2, int(round(len(clip) / speed)))
    clip = np.interp(np.linspace(0, len(clip) - 1, length), np.arange(len(clip)), clip)
    if length > window:
        start = (length - window) // 2
        clip, length = clip[start : start + window], window
    shift = int(round(rng.uniform(-aug.shift_seconds, aug.shift_seconds) * rate))
    offset = int(np.clip((window - length) // 2 + shift, 0, window - length))
    wave = np.zeros(window, dtype=np.float64)
    wave[offset : offset + length] = clip * 10 ** (rng.uniform(*aug.gain_db) / 20)
    power = float(np.mean(wave[offset : offset + length] ** 2))
    noise_power = power / 10 ** (rng.uniform(*aug.snr_db) / 10)
    wave += rng.normal(0.0, np.sqrt(max(noise_power, 1e-12)), window)
    return wave.astype(np.float32)


def log_mel(waves: np.ndarray, rate: int, size: int, batch: int = 2048) -> np.ndarray:
    """N x 1 x size x size log-mel spectrograms (size mel bands x size frames), min-max scaled per sample.

    Per-sample min-max follows the reference's treatment of AV-MNIST spectrograms (docs/method.md §3.1).
    """
    import torch

    mel, to_db = log_mel_layers(rate, waves.shape[1], size)
    out = np.empty((len(waves), 1, size, size), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(waves), batch):
            spec = to_db(mel(torch.from_numpy(waves[start : start + batch])))[:, :, :size]
            out[start : start + batch, 0] = minmax_per_sample(spec.numpy())
    return out


def log_mel_layers(rate: int, window: int, size: int) -> tuple[Any, Any]:
    """The torchaudio mel spectrogram and dB conversion of ``log_mel`` for ``window``-sample clips, built in one
    place so that ``mst export`` puts the very same layers into its graph."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=rate, n_fft=1024, win_length=min(256, window), hop_length=max(1, window // size), n_mels=size,
        f_min=20.0,
    )
    return mel, torchaudio.transforms.AmplitudeToDB(stype="power", top_db=80.0)


def minmax_per_sample(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    lo, hi = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
    return ((flat - lo) / np.maximum(hi - lo, 1e-8)).reshape(x.shape).astype(np.float32)


def centred(aug: Augmentation) -> Augmentation:
    """The augmentation a new clip gets in ``mst predict``: no speed change, gain or shift (the centre of
    prepare's ranges), and noise at the middle of prepare's SNR range, so the clip looks like a typical
    training clip rather than an unnaturally clean one."""
    mid = (aug.snr_db[0] + aug.snr_db[1]) / 2
    return Augmentation(snr_db=(mid, mid), speed=(1.0, 1.0), gain_db=(0.0, 0.0), shift_seconds=0.0)
