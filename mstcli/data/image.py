"""Image features: the AV-MNIST-style degradation that removes most of the image's energy.

The degradation has two parts: a PCA basis fitted once on the prepared images (data-set state, stored in the
feature file so that ``mst predict`` projects a new image onto the very same basis) and a per-image step
(projection, pixel noise, per-sample min-max) shared by ``prepare`` and ``predict``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mstcli.data.audio import minmax_per_sample


@dataclass(frozen=True)
class PcaBasis:
    """The fitted state of the degradation: the pixel mean and the kept principal directions (pixels x kept)."""

    mean: np.ndarray
    basis: np.ndarray

    @property
    def pixels(self) -> int:
        return int(self.mean.shape[0])


def fit_pca(images: np.ndarray, energy: float) -> PcaBasis:
    """The leading principal components of ``images`` (N x H x W, uint8) holding ``energy`` of the variance."""
    n = len(images)
    flat = images.reshape(n, -1).astype(np.float64) / 255.0
    mean = flat.mean(axis=0)
    centred = flat - mean
    eigvals, eigvecs = np.linalg.eigh(centred.T @ centred / n)
    order = np.argsort(eigvals)[::-1]
    eigvals, eigvecs = eigvals[order], eigvecs[:, order]
    kept = int(np.searchsorted(np.cumsum(eigvals) / eigvals.sum(), energy) + 1)
    return PcaBasis(mean=mean, basis=eigvecs[:, :kept])


def project(images: np.ndarray, pca: PcaBasis, noise: float, rng: np.random.Generator) -> np.ndarray:
    """The per-image step: project onto ``pca``, add pixel noise, min-max per sample. Returns N x 1 x H x W."""
    n, height, width = images.shape
    centred = images.reshape(n, -1).astype(np.float64) / 255.0 - pca.mean
    reduced = pca.mean + (centred @ pca.basis) @ pca.basis.T
    reduced += rng.normal(0.0, noise, reduced.shape)
    return minmax_per_sample(reduced.reshape(n, 1, height, width))


def pca_degrade(
    images: np.ndarray, energy: float, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, PcaBasis]:
    """Keep only the leading principal components holding ``energy`` of the variance, add pixel noise.

    AV-MNIST makes its images hard in the same spirit (most of the energy removed by PCA), so that the
    image alone is a weak cue and the spoken digit adds information. Returns N x 1 x H x W in [0, 1] and the
    fitted basis (which ``predict`` needs to degrade a new image the same way).
    """
    pca = fit_pca(images, energy)
    return project(images, pca, noise, rng), pca
