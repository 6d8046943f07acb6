"""``mst fit-masks``: S2, specialized teacher adaptation (method.md §2.3).

Each MaskNet is plugged alone into its frozen teacher and trained, by Adam, so that the masked
teacher's output matches the frozen student's (the student's logits are the stop-gradient target; the
reverse of usual KD). After every epoch the validation KL is averaged per teacher and summed; the states
of all MaskNets at the epoch with the lowest sum are kept (one common best epoch, as in the reference).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from mstcli.config import Params
from mstcli.data.store import FeatureFile
from mstcli.engine import distributed
from mstcli.engine.bank import logit_bank
from mstcli.engine.checkpoints import MasksCheckpoint
from mstcli.engine.layer_cache import build_layer_cache, plan_cache
from mstcli.engine.loop import EpochEnd, EpochTask
from mstcli.engine.outputs import write_tsv
from mstcli.engine.runtime import autocast, maybe_compile, runtime_for
from mstcli.engine.splits import Split, load_splits
from mstcli.methods.losses import kd_loss
from mstcli.methods.mst.experts import TEACHER_ORDER, MaskSlot
from mstcli.methods.mst.masked_teachers import (
    MaskedTeachers,
    build_masks,
    mask_entries,
    selection_score,
    validation_kl,
)
from mstcli.methods.mst.masknet import MaskNet
from mstcli.models.trio import Trio, load_frozen_trio
from mstcli.stages.provenance import run_stage, stage_inputs, stage_key
from mstcli.ui import stderr_console


class MaskFitting(EpochTask):
    """S2's own part: every MaskNet learns its KL to the frozen student; the lowest validation score is kept."""

    name = "S2"

    def __init__(
        self,
        masked: MaskedTeachers,
        targets: dict[str, torch.Tensor],
        val: Split,
        lr: float,
        temperature: float,
        batch_size: int,
        device: torch.device,
        precision: str,
    ) -> None:
        self.masked, self.targets, self.val = masked, targets, val
        self.temperature, self.batch_size, self.device, self.precision = temperature, batch_size, device, precision
        self.nets = nn.ModuleList(net for _, net in masked.masks)
        self.slots: list[MaskSlot] = [slot for slot, _ in masked.masks]
        # each loss reaches only its own MaskNet and Adam is per parameter, so one backward of the sum and one
        # Adam over all MaskNets take exactly the steps of one Adam per MaskNet, with fewer kernel launches
        self.optimizer = torch.optim.Adam(self.nets.parameters(), lr=lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"masknets": self.nets}

    def batch_loss(self, batch: Split):
        target = self.targets["train"][batch.rows]
        losses = {
            f"train_kl_{slot.teacher}@{slot.layer}": kd_loss(
                self.masked.logits(i, "train", batch), target, self.temperature
            )
            for i, slot in enumerate(self.slots)
        }
        return sum(losses.values()), losses

    def end_epoch(self, epoch: int) -> EpochEnd:
        with autocast(self.device, self.precision):
            val_kl = validation_kl(self.masked, self.val, self.targets["val"], self.temperature, self.batch_size)
        score = selection_score(self.slots, val_kl)
        row = {"val_score": score}
        row.update({f"val_kl_{slot.teacher}@{slot.layer}": kl for slot, kl in zip(self.slots, val_kl)})
        return EpochEnd(row, score=score, shown={"val_score": score})

    def selected_state(self) -> list[dict]:
        return [net.state_dict() for net in self.nets]


def fit_masks(
    params: Params, features_path: Path, stage1_path: Path, out: Path, curves: Path, restart: bool = False
) -> dict:
    settings, common = params.fit_masks, params.common
    features = FeatureFile.open(features_path)
    device = runtime_for(common)
    trio = load_frozen_trio(stage1_path, features, common.seed, device)
    splits = load_splits(
        features, common.seed, list(trio.spec.modalities), device, names=("train", "val"), memory_mb=common.memory_mb
    )
    masks = build_masks(
        trio,
        splits["val"].batch(torch.arange(2, device=device)),
        settings.layers,
        settings.heads,
        settings.hidden_dim_factor,
    )
    for _, net in masks:
        net.to(device)
        maybe_compile(net, common.compile)
    masked = _masked_teachers(trio, masks, splits, settings, common.precision, device)
    with autocast(device, common.precision):
        targets = {
            name: logit_bank(trio.student, split, max(settings.batch_size, 1024)) for name, split in splits.items()
        }
    task = MaskFitting(
        masked, targets, splits["val"], settings.lr, settings.temperature, settings.batch_size, device, common.precision
    )
    inputs = stage_inputs(features, common.seed)
    result, store = run_stage(
        task,
        splits["train"],
        params,
        settings,
        device,
        out,
        stage_key("fit_masks", params, settings, inputs, stage1=trio.fingerprint),
        restart,
        order_seed=common.seed,
    )
    if distributed.is_main():  # one writer under torchrun; the others wait until the outputs exist
        MasksCheckpoint(
            spec=trio.spec.to_dict(),
            inputs=inputs,
            settings=dataclasses.asdict(settings),
            stage1=trio.fingerprint,
            masks=mask_entries(masks, result.best_state, settings.heads, settings.hidden_dim_factor),
            best_epoch=result.best_epoch,
            val_score=result.best_score,
        ).save(out)
        write_tsv(curves, result.rows)
        store.clear()
    distributed.barrier()
    return {"best_epoch": result.best_epoch, "val_score": result.best_score}


def _masked_teachers(
    trio: Trio, masks: list[tuple[MaskSlot, MaskNet]], splits: dict[str, Split], settings, precision: str, device
) -> MaskedTeachers:
    """The masked teachers, with the frozen outputs at the masked layers cached while they fit fit_masks.cache_mb."""
    big = max(settings.batch_size, 1024)
    teachers = {key: trio.teacher(key) for key in TEACHER_ORDER}
    rows = sum(len(split) for split in splits.values())
    with autocast(device, precision):
        cached = plan_cache([((s.teacher, s.layer), s.shape) for s, _ in masks], teachers, rows, settings.cache_mb)
        cache = {name: build_layer_cache(teachers, cached, split, big) for name, split in splits.items()}
    if cached:
        stderr_console().print(f"S2: frozen outputs cached at {', '.join(f'{k}@{layer}' for k, layer in cached)}")
    return MaskedTeachers(trio, masks, cache)
