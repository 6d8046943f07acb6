"""``mst fit-masks``: S2, specialized teacher adaptation (docs/method.md §2.3).

Each MaskNet is plugged alone into its frozen teacher and trained, by Adam, so that the masked
teacher's output matches the frozen student's (the student's logits are the stop-gradient target; the
reverse of usual KD). After every epoch the validation KL is averaged per teacher and summed; the states
of all MaskNets at the epoch with the lowest sum are kept (one common best epoch, as in the reference).

``fit_masks.label_weight`` w > 0 (not in the reference) adds w CE(masked teacher, labels) to each MaskNet's loss
and to its validation score, so a mask cannot buy agreement with the student at the price of the teacher's
accuracy (what the reference's S2 was measured doing: the specialized teachers drift towards the student).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from mstcli.config import Params
from mstcli.data.store import FeatureFile
from mstcli.engine import distributed
from mstcli.engine.checkpoints import MasksCheckpoint
from mstcli.engine.loop import EpochEnd, EpochTask
from mstcli.engine.optimizers import adam
from mstcli.engine.provenance import result_provenance, stage_inputs
from mstcli.engine.run_lock import run_lock
from mstcli.engine.runtime import autocast, maybe_compile, runtime_for
from mstcli.engine.splits import Split, load_splits
from mstcli.methods.hardcoded import stage_record
from mstcli.methods.mst import experts as experts_module
from mstcli.methods.mst import masked_teachers as masked_teachers_module
from mstcli.methods.mst import masknet as masknet_module
from mstcli.methods.mst.experts import MaskSlot
from mstcli.methods.mst.layer_cache import build_layer_cache, plan_cache
from mstcli.methods.mst.masked_teachers import (
    MaskedTeachers,
    build_masks,
    mask_records,
    selection_score,
    validation_terms,
)
from mstcli.methods.mst.masknet import MaskNet
from mstcli.methods.tasks import CLASSIFICATION, TaskKind, task_kind
from mstcli.models.trio import Trio, load_frozen_trio
from mstcli.stages.paths import RunPaths
from mstcli.stages.stage_run import run_stage, stage_key, stage_logbook
from mstcli.ui import logger


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
        label_weight: float = 0.0,
        kind: TaskKind = CLASSIFICATION,
    ) -> None:
        self.masked, self.targets, self.val = masked, targets, val
        self.kind = kind  # per-sample or per-pixel losses (methods/tasks.py)
        self.label_weight = label_weight
        self.temperature, self.batch_size, self.device, self.precision = temperature, batch_size, device, precision
        self.nets = nn.ModuleList(net for _, net in masked.masks)
        self.slots: list[MaskSlot] = [slot for slot, _ in masked.masks]
        # each loss reaches only its own MaskNet and Adam is per parameter, so one backward of the sum and one
        # Adam over all MaskNets take exactly the steps of one Adam per MaskNet, with fewer kernel launches
        self.optimizer = adam(self.nets.parameters(), lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"masknets": self.nets}

    def batch_loss(self, batch: Split):
        target = self.targets["train"][batch.rows]
        losses, total, right = {}, 0.0, []
        for i, slot in enumerate(self.slots):
            logits = self.masked.logits(i, "train", batch)
            kl = self.kind.kd(logits, target, self.temperature)
            losses[f"train_kl_{slot.teacher}@{slot.layer}"] = kl
            total = total + kl
            if self.label_weight:
                ce = self.kind.ce(logits, batch.labels)
                losses[f"train_ce_{slot.teacher}@{slot.layer}"] = ce
                total = total + self.label_weight * ce
            right.append(self.kind.accuracy(logits.detach(), batch.labels))
        # the specialized teachers' mean train accuracy: a curve only, it is not part of the loss
        return total, {**losses, "masked_acc": torch.stack(right).mean()}

    def end_epoch(self, epoch: int) -> EpochEnd:
        with autocast(self.device, self.precision):
            val_kl, val_ce, val_acc = validation_terms(
                self.masked, self.val, self.targets["val"], self.temperature, self.batch_size, self.kind
            )
        score = selection_score(
            self.slots, [kl + self.label_weight * ce for kl, ce in zip(val_kl, val_ce, strict=True)]
        )
        row = {"val_score": score, "val_masked_acc": sum(val_acc) / len(val_acc)}
        row.update({f"val_kl_{slot.teacher}@{slot.layer}": kl for slot, kl in zip(self.slots, val_kl, strict=True)})
        row.update({f"val_ce_{slot.teacher}@{slot.layer}": ce for slot, ce in zip(self.slots, val_ce, strict=True)})
        row.update({f"val_acc_{slot.teacher}@{slot.layer}": acc for slot, acc in zip(self.slots, val_acc, strict=True)})
        return EpochEnd(row, score=score, shown={"val_score": score, "val_masked_acc": row["val_masked_acc"]})

    def selected_state(self) -> list[dict]:
        return [net.state_dict() for net in self.nets]


def fit_masks(
    params: Params, features_path: Path, stage1_path: Path, out: Path, log_dir: Path, restart: bool = False
) -> dict:
    """S2 -> ``out`` (MaskNet checkpoint) and its dvclive log in ``log_dir``, holding the run's lock
    (engine/run_lock.py) from the start, so that a second process on the run stops before any work."""
    paths = RunPaths(params.common.run)
    with run_lock(paths.models, paths.run, "mst fit-masks"):
        settings, common = params.fit_masks, params.common
        features = FeatureFile.open(features_path)
        device = runtime_for(common)
        trio = load_frozen_trio(stage1_path, features, common.seed, device, common.student, params.models)
        splits = load_splits(
            features,
            common.seed,
            list(trio.spec.modalities),
            device,
            names=("train", "val"),
            memory_mb=common.memory_mb,
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
        kind = task_kind(trio.spec.task)
        with autocast(device, common.precision):  # the frozen student's logits, once (or per batch when too large)
            targets = {
                name: kind.student_targets(trio, split, settings.batch_size, common.memory_mb)
                for name, split in splits.items()
            }
        task = MaskFitting(
            masked,
            targets,
            splits["val"],
            settings.lr,
            settings.temperature,
            settings.batch_size,
            device,
            common.precision,
            settings.label_weight,
            kind,
        )
        inputs = stage_inputs(features, common.seed)
        logbook = stage_logbook(log_dir, "fit_masks", params, settings)
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
            logbook=logbook,
        )
        record = stage_record("S2", masknet_module, masked_teachers_module, experts_module)
        record["constants"]["teacher_order"] = list(trio.spec.teacher_keys)  # the experts' order in S3
        if distributed.is_main():  # one writer under torchrun; the others wait until the outputs exist
            MasksCheckpoint(
                spec=trio.spec.to_dict(),
                inputs=inputs,
                settings=dataclasses.asdict(settings),
                provenance=result_provenance(params, features, common.seed, device, record),
                stage1=trio.fingerprint,
                masks=mask_records(masks, result.best_state, settings.heads, settings.hidden_dim_factor),
                best_epoch=result.best_epoch,
                val_score=result.best_score,
            ).save(out)
            logbook.close({"best_epoch": result.best_epoch, "best_score": result.best_score})
            store.clear()
        distributed.barrier()
        return {"best_epoch": result.best_epoch, "val_score": result.best_score}


def _masked_teachers(
    trio: Trio, masks: list[tuple[MaskSlot, MaskNet]], splits: dict[str, Split], settings, precision: str, device
) -> MaskedTeachers:
    """The masked teachers, with the frozen outputs at the masked layers cached while they fit fit_masks.cache_mb."""
    big = max(settings.batch_size, 1024)
    teachers = {key: trio.teacher(key) for key in trio.spec.teacher_keys}
    rows = sum(len(split) for split in splits.values())
    with autocast(device, precision):
        cached = plan_cache([((s.teacher, s.layer), s.shape) for s, _ in masks], teachers, rows, settings.cache_mb)
        cache = {name: build_layer_cache(teachers, cached, split, big) for name, split in splits.items()}
    if cached:
        logger().info(f"S2: frozen outputs cached at {', '.join(f'{k}@{layer}' for k, layer in cached)}")
    return MaskedTeachers(trio, masks, cache)
