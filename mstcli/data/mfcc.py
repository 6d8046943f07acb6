"""MFCCs the way the reference's RAVDESS preprocessing computes them (librosa defaults), with torchaudio.

librosa's ``mfcc`` defaults: 2048-point FFT, hop 512, centred frames padded with zeros, 128 Slaney-scaled
and Slaney-normalized mel bands of the power spectrum, power -> dB with a floor 80 dB under the clip's peak,
orthonormal DCT-II. At 22,050 Hz a 3.6 s clip gives 1 + 79,380 // 512 = 156 frames.
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio

N_FFT = 2048
HOP = 512
N_MELS = 128


def fit_length(wave: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad at the end, or keep the centred ``length`` samples (the reference's rule)."""
    if len(wave) >= length:
        start = (len(wave) - length) // 2
        return wave[start : start + length]
    return np.pad(wave, (0, length - len(wave)))


class MFCCExtractor:
    def __init__(self, sample_rate: int, n_mfcc: int) -> None:
        self.sample_rate = sample_rate
        self.transform = torchaudio.transforms.MFCC(
            sample_rate=sample_rate,
            n_mfcc=n_mfcc,
            dct_type=2,
            norm="ortho",
            log_mels=False,
            melkwargs={
                "n_fft": N_FFT,
                "hop_length": HOP,
                "n_mels": N_MELS,
                "center": True,
                "pad_mode": "constant",
                "mel_scale": "slaney",
                "norm": "slaney",
                "power": 2.0,
            },
        )

    @torch.no_grad()
    def __call__(self, waves: np.ndarray) -> np.ndarray:
        """``B x samples`` at ``sample_rate`` -> ``B x n_mfcc x frames``; the dB floor is per clip."""
        x = torch.as_tensor(np.asarray(waves, dtype=np.float32)).unsqueeze(1)  # B x 1 x T: floor per clip
        return self.transform(x)[:, 0].numpy()


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return wave.astype(np.float32)
    out = torchaudio.functional.resample(torch.as_tensor(wave, dtype=torch.float32), rate, target)
    return out.numpy()
