"""FitNets (Romero et al., ICLR 2015): hint training, then KD.

Stage 1 (the first ``hint_fraction`` of the epochs): a regressor maps each guided layer of the student to the
teacher's hint layer and the student (up to its guided layers) and the regressors learn the hint loss. Stage 2
(the remaining epochs): Hinton KD, (1 - alpha) CE + alpha tau^2 KL, alpha = 0.5, tau = ``distill.temperature``.

Constants: the reference runs 100 hint epochs then 100 KD epochs (``hint_fraction`` 0.5) with the MSE (mean over
the feature's elements) as hint loss; the paper's hint loss is 1/2 ||u_h - r(v_g)||^2 per sample and it gives no
epoch split for our setting, so the ``paper`` set's third of the epochs is our choice.

Hint and guided layers are the nets' ``mask_layers``, paired by position (the reference also uses two pairs; the
paper one). The paper's regressor is a convolution whose kernel makes the spatial sizes equal; here it is a
1x1 convolution and both maps are average-pooled (adaptive pooling) to the smaller of the two spatial sizes, so
any pair of nets fits. Where either side is a vector, maps are averaged over space and the regressor is linear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mstcli.engine.splits import Split
from mstcli.errors import UserError
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.baselines.feature_taps import TappedPair, as_vector, vector_width
from mstcli.methods.losses import kd_loss

HintLoss = Literal["half_sum", "mse"]


def hint_loss(prediction: torch.Tensor, hint: torch.Tensor, kind: HintLoss = "half_sum") -> torch.Tensor:
    """The paper's 1/2 ||u_h - r(v_g)||^2 per sample (summed over the feature's elements), averaged over the batch;
    or the reference's MSE (the mean over every element)."""
    if kind == "mse":
        return F.mse_loss(prediction, hint)
    return 0.5 * (prediction - hint).pow(2).flatten(1).sum(dim=1).mean()


@dataclass(frozen=True)
class FitNetConstants:
    hint_fraction: float  # share of the epochs spent on hint training (at least one epoch, one KD epoch left)
    hint_loss: HintLoss
    alpha: float  # KD phase: (1 - alpha) CE + alpha tau^2 KL


class HintRegressor(nn.Module):
    """Maps a guided feature of per-sample shape ``guided`` onto a hint of shape ``hint``; ``forward`` returns the
    prediction and the hint brought to the same shape."""

    def __init__(self, guided: tuple[int, ...], hint: tuple[int, ...]) -> None:
        super().__init__()
        self.spatial = len(guided) == 3 and len(hint) == 3
        if self.spatial:
            self.size = (min(guided[1], hint[1]), min(guided[2], hint[2]))
            self.map = nn.Conv2d(guided[0], hint[0], kernel_size=1)
        else:
            self.map = nn.Linear(vector_width(guided), vector_width(hint))

    def forward(self, guided: torch.Tensor, hint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.spatial:
            prediction = F.adaptive_avg_pool2d(self.map(guided), self.size)
            return prediction, F.adaptive_avg_pool2d(hint, self.size)
        return self.map(as_vector(guided)), as_vector(hint)


class FitNet(DistillMethod):
    name = "fitnet"
    CONSTANT_SETS = {
        "reference": FitNetConstants(hint_fraction=0.5, hint_loss="mse", alpha=0.5),
        "paper": FitNetConstants(hint_fraction=1 / 3, hint_loss="half_sum", alpha=0.5),
    }

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        settings = context.settings
        self.hint_epochs = max(1, int(round(self.constants.hint_fraction * settings.epochs, 6)))
        if self.hint_epochs >= settings.epochs:
            raise UserError(
                f"fitnet: hint_fraction {self.constants.hint_fraction:g} of distill.epochs={settings.epochs} leaves"
                " no KD epoch (lower distill.constants.fitnet.hint_fraction or raise distill.epochs)"
            )
        self.pair = TappedPair(context, layers=True, penultimate=False)
        if len(self.pair.student_layers) != len(self.pair.teacher_layers):
            raise UserError(
                f"fitnet pairs hint layers by position: the student has {len(self.pair.student_layers)}, teacher"
                f" {context.settings.teacher} {len(self.pair.teacher_layers)} (models.hint_layers names as many for"
                " both)"
            )
        self.pairs = list(zip(self.pair.student_layers, self.pair.teacher_layers, strict=True))
        self.regressors = nn.ModuleList(
            HintRegressor(self.pair.student_shapes[s], self.pair.teacher_shapes[t]) for s, t in self.pairs
        ).to(context.device)
        self.hinting = True

    def extra_modules(self) -> list[nn.Module]:
        return [self.regressors]

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        teacher_logits = self.pair.teach(batch)
        guided, hints = self.pair.student_tap, self.pair.teacher_tap
        with torch.set_grad_enabled(self.hinting):
            hint = sum(
                hint_loss(*r(guided[s], hints[t]), self.constants.hint_loss)
                for r, (s, t) in zip(self.regressors, self.pairs, strict=True)
            )
        ce = F.cross_entropy(student_logits, batch.labels)
        kd = kd_loss(student_logits, teacher_logits, self.settings.temperature)
        alpha = self.constants.alpha
        total = hint if self.hinting else (1 - alpha) * ce + alpha * kd
        return total, {"hint": hint.detach(), "ce": ce.detach(), "kd": kd.detach()}

    def start_epoch(self, epoch: int) -> None:
        """Hint training in epochs 0 .. hint_epochs - 1; KD from then on."""
        self.hinting = epoch < self.hint_epochs
