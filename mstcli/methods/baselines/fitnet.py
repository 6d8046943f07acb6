"""FitNets (Romero et al., ICLR 2015): hint training, then KD.

Stage 1 (the first ``distill.fitnet_hint_epochs`` epochs): a regressor maps each guided layer of the student to
the teacher's hint layer and the student (up to its guided layers) and the regressors learn the paper's hint loss
1/2 ||u_h - r(v_g)||^2. Stage 2 (the remaining epochs): Hinton KD, (1 - alpha) CE + alpha tau^2 KL, with
``distill.kd_alpha`` and ``distill.temperature`` (0.5 and 4, as the repo's KD).

Hint and guided layers are the nets' ``mask_layers``, paired by position (the reference also uses two pairs; the
paper one). The paper's regressor is a convolution whose kernel makes the spatial sizes equal; here it is a
1x1 convolution and both maps are average-pooled (adaptive pooling) to the smaller of the two spatial sizes, so
any pair of nets fits. Where either side is a vector, maps are averaged over space and the regressor is linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mstcli.engine.splits import Split
from mstcli.errors import UserError
from mstcli.methods.base import DistillContext, DistillMethod, LossTerms
from mstcli.methods.baselines.feature_taps import TappedPair, as_vector, vector_width
from mstcli.methods.losses import kd_loss


def hint_loss(prediction: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
    """The paper's 1/2 ||u_h - r(v_g)||^2 per sample (summed over the feature's elements), averaged over the batch."""
    return 0.5 * (prediction - hint).pow(2).flatten(1).sum(dim=1).mean()


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

    def __init__(self, context: DistillContext) -> None:
        super().__init__(context)
        settings = self.settings = context.settings
        self.hint_epochs = settings.fitnet_hint_epochs or max(1, settings.epochs // 3)
        if self.hint_epochs >= settings.epochs:
            raise UserError(
                f"distill.fitnet_hint_epochs={self.hint_epochs} leaves no KD epoch of distill.epochs={settings.epochs}"
            )
        self.pair = TappedPair(context, layers=True, penultimate=False)
        self.pairs = list(zip(self.pair.student_layers, self.pair.teacher_layers))
        self.regressors = nn.ModuleList(
            HintRegressor(self.pair.student_shapes[s], self.pair.teacher_shapes[t]) for s, t in self.pairs
        ).to(context.device)
        self.hinting = True

    def extra_modules(self) -> list[nn.Module]:
        return [self.regressors]

    def loss(self, batch: Split, student_logits: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        teacher_logits = self.pair.teach(batch.inputs)
        guided, hints = self.pair.student_tap, self.pair.teacher_tap
        with torch.set_grad_enabled(self.hinting):
            hint = sum(hint_loss(*r(guided[s], hints[t])) for r, (s, t) in zip(self.regressors, self.pairs))
        ce = F.cross_entropy(student_logits, batch.labels)
        kd = kd_loss(student_logits, teacher_logits, self.settings.temperature)
        alpha = self.settings.kd_alpha
        total = hint if self.hinting else (1 - alpha) * ce + alpha * kd
        return total, {"hint": hint.detach(), "ce": ce.detach(), "kd": kd.detach()}

    def start_epoch(self, epoch: int) -> None:
        """Hint training in epochs 0 .. hint_epochs - 1; KD from then on."""
        self.hinting = epoch < self.hint_epochs
