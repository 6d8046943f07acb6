"""Image features: the AV-MNIST-style degradation that removes most of the image's energy."""

from __future__ import annotations

import numpy as np

from mstcli.data.audio import minmax_per_sample


def pca_degrade(images: np.ndarray, energy: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Keep only the leading principal components holding ``energy`` of the variance, add pixel noise.

    AV-MNIST makes its images hard in the same spirit (most of the energy removed by PCA), so that the
    image alone is a weak cue and the spoken digit adds information. Returns N x 1 x H x W in [0, 1].
    """
    n, height, width = images.shape
    flat = images.reshape(n, -1).astype(np.float64) / 255.0
    mean = flat.mean(axis=0)
    centred = flat - mean
    eigvals, eigvecs = np.linalg.eigh(centred.T @ centred / n)
    order = np.argsort(eigvals)[::-1]
    eigvals, eigvecs = eigvals[order], eigvecs[:, order]
    kept = int(np.searchsorted(np.cumsum(eigvals) / eigvals.sum(), energy) + 1)
    basis = eigvecs[:, :kept]
    reduced = mean + (centred @ basis) @ basis.T
    reduced += rng.normal(0.0, noise, reduced.shape)
    return minmax_per_sample(reduced.reshape(n, 1, height, width))
