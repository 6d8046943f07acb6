"""The NYU-Depth-V2 family (docs/method.md §3.5): FuseNet-style RGB-D encoder-decoders for 41-way per-pixel logits.

* ``FuseNetI`` (the MM teacher): a depth encoder and an RGB encoder of five VGG16 stages (conv3x3 + BN + ReLU;
  2, 2, 3, 3, 3 convs of 64, 128, 256, 512, 512 channels); at every stage RGB <- (RGB + depth) / 2 before the
  pooling (the reference averages where the original FuseNet sums); one SegNet decoder that unpools with the RGB
  encoder's indices. Dropout 0.4 after encoder stages 3-5 and decoder stages 5-3.
* ``FuseNetRGBBranch`` / ``FuseNetDepthBranch`` (students and CM teachers): one encoder and one decoder of the
  same shape on one modality.

Layer names follow the reference so that the MaskNets plug in where §2.3 says: the MM net at
``after_fusion_identity`` (after pool5 and its dropout, 512 x H/32 x W/32) and ``CBR5_RGBD_DEC`` (the first decoder
block, 512 x H/16 x W/16); the RGB branch at ``CBR5_RGB_ENC`` and ``CBR5_RGB_DEC``, the depth branch at
``CBR5_DEPTH_ENC`` and ``CBR5_D_DEC``.

Choices (docs/datasets.md, "NYU-Depth-V2"):

* Five 2x2 poolings need H and W divisible by 32. 480 x 640 is (15 x 20 after pool5) and runs exactly as the
  reference; any other size (the tests' 48 x 64 frames) is zero-padded at the bottom and right to the next multiple
  of 32 and the logits are cropped back, so the nets take any frame size and the loss never sees padded pixels.
* ``width_divisor`` divides every channel width (1 = VGG16's); the tests use 16 so the whole pipeline runs in
  seconds on a CPU. Presets use 1.
* Initialisation is what the reference's ``init_net`` does in effect (§6.6-6): Xavier-normal (gain 0.02) for every
  conv, BatchNorm weights N(1, 0.02), zero biases; so by default there is no ImageNet pretraining, as in the
  reference's runs. :func:`load_vgg16` loads a local torchvision VGG16 ImageNet state_dict into the encoders (the
  depth encoder's first conv gets the mean over the RGB input channels), which is what the paper presumably
  intended (§7-13); ``train.vgg16_weights`` names the file.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mstcli.errors import UserError

ENCODER_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
DECODER_STAGES = ((512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64,))  # stages 5, 4, 3, 2, 1
DROPOUT = 0.4
MULTIPLE = 32  # 2^5: five poolings
#: the conv layers of torchvision's VGG16 ``features``, in order (the 13 convs of the five stages)
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def _width(channels: int, divisor: int) -> int:
    return max(1, channels // divisor)


def cbr(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """conv3x3 + BatchNorm + ReLU for each width."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers)


def reference_init(net: nn.Module) -> None:
    """The reference's effective initialisation (§6.6-6): Xavier-normal gain 0.02, BN weight N(1, 0.02)."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(module.weight, gain=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)


def pad_to_multiple(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad the bottom and right of a B x C x H x W batch to multiples of 32 (a no-op at 480 x 640)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % MULTIPLE, -width % MULTIPLE
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


class _FuseNetBase(nn.Module):
    """The parts shared by the three nets: the encoder stages of a tag, the decoder, the crop."""

    classifier = "score"  # the last conv: its input is the penultimate (per-pixel) feature map

    def __init__(self, num_classes: int, width_divisor: int) -> None:
        super().__init__()
        self.width_divisor = width_divisor
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.dropout = nn.Dropout(DROPOUT)

    def _encoder(self, tag: str, in_channels: int) -> list[str]:
        names = []
        for k, widths in enumerate(ENCODER_STAGES, start=1):
            widths = tuple(_width(w, self.width_divisor) for w in widths)
            name = f"CBR{k}_{tag}_ENC"
            setattr(self, name, cbr(in_channels, widths))
            names.append(name)
            in_channels = widths[-1]
        return names

    def _decoder(self, tag: str, num_classes: int) -> list[str]:
        names, in_channels = [], _width(ENCODER_STAGES[-1][-1], self.width_divisor)
        for k, widths in zip(range(5, 0, -1), DECODER_STAGES, strict=True):
            widths = tuple(_width(w, self.width_divisor) for w in widths)
            name = f"CBR{k}_{tag}_DEC"
            setattr(self, name, cbr(in_channels, widths))
            names.append(name)
            in_channels = widths[-1]
        self.score = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        return names

    def _decode(self, x: torch.Tensor, indices: list[torch.Tensor], sizes: list[torch.Size]) -> torch.Tensor:
        for stage, name in enumerate(self.decoder_names):  # stage 0 is decoder stage 5
            level = 4 - stage
            x = getattr(self, name)(self.unpool(x, indices[level], output_size=sizes[level]))
            if stage < 3:
                x = self.dropout(x)
        return self.score(x)

    def encoder_convs(self) -> list[list[nn.Conv2d]]:
        """The 13 convs of each encoder, in VGG16 order (for :func:`load_vgg16`)."""
        return [
            [m for name in names for m in getattr(self, name) if isinstance(m, nn.Conv2d)]
            for names in self.encoder_names
        ]


class FuseNetBranch(_FuseNetBase):
    """One modality's encoder-decoder (FuseNet-RGBbranch, FuseNet-Dbranch)."""

    ENCODER_TAG = "RGB"
    DECODER_TAG = "RGB"

    def __init__(self, shape: tuple[int, ...], num_classes: int, width_divisor: int = 1) -> None:
        super().__init__(num_classes, width_divisor)
        encoder = self._encoder(self.ENCODER_TAG, shape[0])
        self.decoder_names = self._decoder(self.DECODER_TAG, num_classes)
        self.encoder_names = [encoder]
        self.mask_layers = (encoder[-1], self.decoder_names[0])
        reference_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = pad_to_multiple(x)
        indices, sizes = [], []
        for k, name in enumerate(self.encoder_names[0], start=1):
            x = getattr(self, name)(x)
            sizes.append(x.shape)
            x, index = self.pool(x)
            indices.append(index)
            if k >= 3:
                x = self.dropout(x)
        return self._decode(x, indices, sizes)[..., :height, :width]


class FuseNetRGBBranch(FuseNetBranch):
    ENCODER_TAG = "RGB"
    DECODER_TAG = "RGB"


class FuseNetDepthBranch(FuseNetBranch):
    ENCODER_TAG = "DEPTH"
    DECODER_TAG = "D"


class FuseNetI(_FuseNetBase):
    """The MM teacher: depth and RGB encoders fused by averaging at every stage, one decoder."""

    mask_layers = ("after_fusion_identity", "CBR5_RGBD_DEC")

    def __init__(
        self, shapes: tuple[tuple[int, ...], tuple[int, ...]], num_classes: int, width_divisor: int = 1
    ) -> None:
        super().__init__(num_classes, width_divisor)
        rgb = self._encoder("RGB", shapes[0][0])
        depth = self._encoder("DEPTH", shapes[1][0])
        self.encoder_names = [rgb, depth]
        self.after_fusion_identity = nn.Identity()
        self.decoder_names = self._decoder("RGBD", num_classes)
        reference_init(self)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        height, width = rgb.shape[-2:]
        x, y = pad_to_multiple(rgb), pad_to_multiple(depth)
        indices, sizes = [], []
        for k, (rgb_name, depth_name) in enumerate(zip(*self.encoder_names, strict=True), start=1):
            y = getattr(self, depth_name)(y)
            x = (getattr(self, rgb_name)(x) + y) / 2
            sizes.append(x.shape)
            x, index = self.pool(x)
            indices.append(index)
            if k < 5:  # the depth stream stops after stage 5's fusion
                y = F.max_pool2d(y, 2, 2)
            if k >= 3:
                x = self.dropout(x)
                if k < 5:
                    y = self.dropout(y)
        x = self.after_fusion_identity(x)
        return self._decode(x, indices, sizes)[..., :height, :width]


def load_vgg16(net: _FuseNetBase, path: Path) -> None:
    """Copy a torchvision VGG16 ImageNet state_dict (``features.N.weight`` / ``.bias``) into every encoder of
    ``net``; a 1-channel first conv (depth) gets the mean of the RGB filters over their input channels."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a state_dict
        raise UserError(f"{path}: not a torch state_dict ({str(exc).splitlines()[0]})") from None
    missing = [f"features.{i}.weight" for i in VGG16_CONVS if f"features.{i}.weight" not in state]
    if missing:
        raise UserError(f"{path}: not a VGG16 state_dict (no {missing[0]})")
    with torch.no_grad():
        for convs in net.encoder_convs():
            for index, conv in zip(VGG16_CONVS, convs, strict=True):
                weight, bias = state[f"features.{index}.weight"], state[f"features.{index}.bias"]
                if conv.in_channels == 1 and weight.shape[1] == 3:
                    weight = weight.mean(dim=1, keepdim=True)
                if weight.shape != conv.weight.shape:
                    raise UserError(
                        f"{path}: VGG16 features.{index} has shape {tuple(weight.shape)} but the net's conv has"
                        f" {tuple(conv.weight.shape)} (VGG16 weights need train.width_divisor=1)"
                    )
                conv.weight.copy_(weight)
                conv.bias.copy_(bias)
