"""Tiny folders and tiny networks for the tests of user-chosen nets: nothing is downloaded.

The images carry their class (a bright square in a corner that depends on the label, on noise), the clips a
tone per class, so a student can learn from either modality in a few epochs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from folder_fixtures import NAMES, write_table, write_wav

CORNERS = ((0, 0), (0, 20), (20, 10))


def write_learnable_png(path: Path, label: int, rng: np.random.Generator, size: int = 32) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
    top, left = CORNERS[label]
    pixels[top : top + 12, left : left + 12] = 230
    Image.fromarray(pixels).save(path)


def learnable_folder(root: Path, per_class: int = 10, seed: int = 0) -> Path:
    """PNG + WAV pairs with metadata.csv; ``per_class`` rows of each of NAMES."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(per_class * len(NAMES)):
        label = i % len(NAMES)
        write_learnable_png(root / "pics" / f"{i:03d}.png", label, rng)
        write_wav(root / "sounds" / f"{i:03d}.wav", label)
        rows.append({"image_file_name": f"pics/{i:03d}.png", "audio_file_name": f"sounds/{i:03d}.wav",
                     "label": NAMES[label]})  # fmt: skip
    write_table(root / "metadata.csv", rows)
    return root


def write_params(root: Path, models: dict, **sections: dict) -> None:
    """params.yaml for a folder run in ``root``: one epoch everywhere unless ``sections`` say otherwise."""
    params = {
        "common": {"dataset": "folder", "threads": 1, "student": "image"},
        "prepare": {"source": "data", "image_size": 32},
        "train": {"epochs": 1, "batch_size": 8},
        "fit_masks": {"epochs": 1, "batch_size": 8, "hidden_dim_factor": 32, "heads": 1},
        "distill": {"epochs": 1, "batch_size": 8},
        "eval": {"batch_size": 16},
        "models": models,
    }
    for name, values in sections.items():
        params[name] = {**params.get(name, {}), **values}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


FACTORY_FILE = '''
import torch
from torch import nn


def make_encoder(shape, modality):
    """A small CNN for maps of any channel count, ending in 48 values."""
    channels = shape[0] if len(shape) == 3 else 1
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 48),
    )


def raises(shape):
    raise RuntimeError("no net for you")


def not_a_module(shape):
    return 3


class FiveD(nn.Module):
    def forward(self, x):
        return x.reshape(len(x), 2, -1, 1, 1)


class Back(nn.Module):
    def forward(self, x):
        return x.flatten(1)


def five_d(shape):
    channels = shape[0] if len(shape) == 3 else 1
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.AdaptiveAvgPool2d(2), FiveD(), Back(), nn.Linear(16, 8)
    )
'''


def write_factory(root: Path, name: str = "mynets") -> Path:
    path = root / f"{name}.py"
    path.write_text(FACTORY_FILE)
    return path


def tiny_vit(folder: Path, image_size: int = 32) -> Path:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(
        image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37,
    )  # fmt: skip
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder
