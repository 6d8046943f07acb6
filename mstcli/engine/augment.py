"""Image augmentation of training batches (``train.augment``): a random resized crop, optionally mirrored, of
every image modality of a batch, drawn per sample.

It runs on the batch as the engine gathered it (on the training device, all samples at once through one
``affine_grid`` + ``grid_sample``), not per file in a loader: the stages hold whole splits as tensors. The random
numbers come from the engine's batch-order generator, whose state the resume file keeps, so a resumed stage
draws the same crops as one that ran through. 8-bit pixels stay 8-bit (rounded after the bilinear resampling):
the nets that read raw pixels normalize them as they do without augmentation.

Augmented inputs differ in every epoch, so nothing computed once from the training rows (the teachers' logit
banks, the layer caches) may be used while augmenting: the stages switch those off and say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from mstcli.config import TrainParams
from mstcli.data.store import FeatureFile
from mstcli.engine.splits import Split
from mstcli.errors import UserError

AugmentMode = Literal["off", "crop", "crop_flip"]


@dataclass(frozen=True)
class ImageAugment:
    """Random resized crop of the ``modalities`` (each ``(B, C, H, W)``) to their own size, covering an area
    fraction drawn uniformly from ``scale`` with an aspect ratio log-uniform in ``ratio`` (torchvision's
    RandomResizedCrop's default ranges), mirrored left-right with probability 1/2 when ``flip``."""

    modalities: tuple[str, ...]
    scale: tuple[float, float] = (0.5, 1.0)
    flip: bool = True
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, batch: Split, generator: torch.Generator) -> Split:
        inputs = dict(batch.inputs)
        for modality in self.modalities:
            inputs[modality] = self.crop(inputs[modality], generator)
        return Split(inputs, batch.labels, batch.rows)

    def crop(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = images.shape[0]
        low, high = self.scale
        area = low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)
        low_ratio, high_ratio = math.log(self.ratio[0]), math.log(self.ratio[1])
        log_ratio = low_ratio + (high_ratio - low_ratio) * torch.rand(n, generator=generator, dtype=torch.float64)
        ratio = torch.exp(log_ratio)
        # half-widths in the [-1, 1] coordinates of affine_grid: a crop of area fraction a has sides sqrt(a r) and
        # sqrt(a / r) of the image's
        width = torch.sqrt(area * ratio).clamp(max=1.0)
        height = torch.sqrt(area / ratio).clamp(max=1.0)
        centre_x = (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1) * (1 - width)
        centre_y = (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1) * (1 - height)
        mirror = torch.ones(n, dtype=torch.float64)
        if self.flip:
            mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).to(torch.float64)
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 0, 2] = width * mirror, centre_x
        theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
        pixels = images.float()
        grid = F.affine_grid(theta.to(pixels), list(pixels.shape), align_corners=False)
        out = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if images.dtype == torch.uint8:
            return out.round_().clamp_(0, 255).to(torch.uint8)
        return out.to(images.dtype)


def picture_modalities(features: FeatureFile) -> list[str]:
    """The modalities of ``features`` that are pictures stored as ``(C, H, W)`` maps with 1 or 3 channels: those
    its data set names (``DataSource.pictures``), or, in a user's folder, those of kind image stored as pixels."""
    from mstcli.data.sources import get_source

    named = get_source(features.dataset).pictures
    out = []
    for modality, shape in features.modalities.items():
        if len(shape) != 3 or shape[0] not in (1, 3):
            continue
        state = features.transform(modality) or {}
        if modality in named or state.get("kind") == "image":
            out.append(modality)
    return out


def training_augment(settings: TrainParams, features: FeatureFile, modalities: list[str]) -> ImageAugment | None:
    """The augmentation ``train.augment`` asks for on the run's ``modalities``, or None; a one-line error when
    there is nothing it could apply to."""
    if settings.augment == "off":
        return None
    if features.dense:
        raise UserError(
            "train.augment: not for segmentation (the label maps would need the same crop); set train.augment=off"
        )
    pictures = [m for m in picture_modalities(features) if m in modalities]
    if not pictures:
        stored = ", ".join(f"{m} {tuple(features.modalities[m])}" for m in modalities)
        raise UserError(
            f"train.augment={settings.augment}: no image modality stored as pixels in {features.path} ({stored});"
            " set train.augment=off"
        )
    low, high = settings.crop_scale
    return ImageAugment(tuple(pictures), (low, high), flip=settings.augment == "crop_flip")


def describe_augment(augment: ImageAugment) -> str:
    """The log line that says what the training batches go through."""
    low, high = augment.scale
    mirrored = " and mirrored left-right half the time" if augment.flip else ""
    return (
        f"train.augment: {', '.join(augment.modalities)} of every training batch randomly cropped to"
        f" {low:g}-{high:g} of its area{mirrored}, resized back"
    )
