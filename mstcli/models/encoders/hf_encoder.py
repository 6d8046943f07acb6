"""``hf:<local folder>``: a transformers model read from local files only, pooled to one vector per sample.

The model's ``main_input_name`` says what the stored tensor is: ``pixel_values`` (uint8 pixels, scaled and
normalized here with the folder's image processor), ``input_ids`` (int64 rows of ids and attention mask),
``input_values`` / ``input_features`` (float32 audio as the folder's feature extractor made it at prepare).
Encoder-decoder models (Whisper) give their encoder. Nothing is downloaded: a missing folder or weights file is
one line before any work.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mstcli.errors import UserError
from mstcli.models.encoders.base import Encoder, EncoderRequest, as_unit_float, measure_width

WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


def _quiet_offline() -> None:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _folder(target: str, base_dir: Path) -> Path:
    folder = Path(target).expanduser()
    if not folder.is_absolute():
        folder = base_dir / folder
    if not (folder / "config.json").is_file():
        raise UserError(
            f"hf:{target}: {folder} is not a transformers model folder (no config.json; nothing is downloaded)"
        )
    return folder


def _image_stats(folder: Path) -> tuple[float, list[float], list[float]]:
    """(rescale factor, mean, std) of the folder's image processor; without one, 1/255 and 0.5 (transformers'
    default for ViT-like models)."""
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError):
        return 1 / 255, [0.5] * 3, [0.5] * 3
    mean = list(getattr(processor, "image_mean", None) or [0.5] * 3)
    std = list(getattr(processor, "image_std", None) or [0.5] * 3)
    rescale = float(getattr(processor, "rescale_factor", 1 / 255) or 1 / 255)
    return rescale, mean, std


class HFEncoder(Encoder):
    def __init__(self, request: EncoderRequest, target: str) -> None:
        super().__init__()
        _quiet_offline()
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        folder = _folder(target, request.base_dir)
        try:
            if request.load_weights:
                if not any((folder / name).is_file() for name in WEIGHT_FILES):
                    raise UserError(f"hf:{target}: {folder} has no weights ({' or '.join(WEIGHT_FILES[:2])})")
                model = AutoModel.from_pretrained(str(folder), local_files_only=True)
            else:
                model = AutoModel.from_config(AutoConfig.from_pretrained(str(folder), local_files_only=True))
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"hf:{target}: cannot load {folder} ({str(exc).splitlines()[0]})") from None
        if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        self.backbone = model
        self.input_name = model.main_input_name
        self.pooling = request.pooling
        rescale, mean, std = _image_stats(folder) if self.input_name == "pixel_values" else (1.0, [0.0], [1.0])
        self.rescale = rescale
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self._check_dtype(request, target)
        self.width = measure_width(self, request)

    def _check_dtype(self, request: EncoderRequest, target: str) -> None:
        wants_ids = self.input_name == "input_ids"
        has_ids = request.dtype == "int64"
        if wants_ids != has_ids:
            stored = f"{request.dtype} {tuple(request.shape)}"
            wanted = "token ids" if wants_ids else f"{self.input_name}"
            raise UserError(
                f"hf:{target} reads {wanted}, but {request.modality} is stored as {stored}: run `mst prepare` with"
                " this encoder in models"
            )

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_name != "pixel_values":
            return x
        x = x.float() * self.rescale if x.dtype == torch.uint8 else as_unit_float(x)
        if x.dim() == 4 and x.shape[1] == 1 and self.mean.shape[1] == 3:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        mask = None
        if self.input_name == "input_ids":
            ids, mask = x[:, 0], x[:, 1]
            out = self.backbone(input_ids=ids, attention_mask=mask)
        else:
            out = self.backbone(**{self.input_name: x})
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        pooled = getattr(out, "pooler_output", None)
        if hidden.dim() == 4:  # convolutional models (ResNet, ConvNeXt): their pooler, else the channel means
            return pooled.flatten(1) if pooled is not None else hidden.mean(dim=(2, 3))
        mode = self.pooling
        if mode == "auto":
            mode = "mean" if self.input_name in ("input_values", "input_features") else "cls"
        if mode == "cls":
            return hidden[:, 0]
        if mask is None:
            return hidden.mean(dim=1)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
