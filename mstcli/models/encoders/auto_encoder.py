"""``auto`` as one branch of an MM teacher whose other branches the user chose: the folder nets' encoder for the
stored shape (a small CNN for maps, an MLP otherwise, models/folder.py), 128 values wide."""

from __future__ import annotations

from mstcli.models.encoders.base import Encoder, EncoderRequest, as_unit_float
from mstcli.models.folder import ENCODER_WIDTH, encoder_for


class AutoEncoder(Encoder):
    def __init__(self, request: EncoderRequest) -> None:
        super().__init__()
        self.backbone = encoder_for(request.shape)
        self.width = ENCODER_WIDTH

    def encode(self, x):
        return self.backbone(as_unit_float(x))
