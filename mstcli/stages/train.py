"""``mst train``: S1, collaborative initialization (docs/method.md §2.2).

The MM teacher, the CM teacher and the student learn together: each has its CE plus the KL towards the
other two (six KL terms, no detaching), one Adam over all three, no validation-based selection (the
last epoch is kept, as in the reference). Validation accuracy of each net is logged for the user.
With M >= 3 modalities every CM teacher joins: M + 1 nets, each with its CE and the KL towards every other
net (M(M + 1) KL terms), the direct generalization of the reference's pairwise terms. Their sum grows faster
than the M + 1 CE terms, so by default (``train.align_weighting: pairs``) it is scaled to weigh what the
reference's six terms weigh; with two modalities that factor is 1 and not applied.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from mstcli.config import Params
from mstcli.data.folder.net_inputs import Readers, check_inputs
from mstcli.data.store import FeatureFile
from mstcli.engine import distributed
from mstcli.engine.augment import describe_augment, training_augment
from mstcli.engine.loop import EpochEnd, EpochTask
from mstcli.engine.optimizers import adam
from mstcli.engine.provenance import result_provenance, stage_inputs
from mstcli.engine.run_lock import run_lock
from mstcli.engine.runtime import maybe_compile, runtime_for
from mstcli.engine.splits import Split, load_splits
from mstcli.methods.hardcoded import stage_record
from mstcli.methods.mst import losses as mst_losses
from mstcli.methods.mst.losses import AlignWeighting, mutual_loss
from mstcli.methods.tasks import task_kind
from mstcli.models.chosen import nets_record
from mstcli.models.pretrained import load_pretrained
from mstcli.models.trio import RunSpec, Trio
from mstcli.stages.paths import RunPaths
from mstcli.stages.stage_run import run_stage, stage_key, stage_logbook
from mstcli.ui import logger


def log_name(key: str) -> str:
    """A net's key as it appears in curve names: ``cm:audio`` -> ``cm_audio`` (``mm``, ``student``, ``cm`` as is)."""
    return key.replace(":", "_")


class CollaborativeTraining(EpochTask):
    """S1's own part: all three nets train on the mutual loss; validation accuracy of each is reported."""

    name = "S1"

    def __init__(
        self,
        trio: Trio,
        val: Split,
        lr: float,
        temperature: float,
        device: torch.device,
        precision: str,
        align_weighting: AlignWeighting = "sum",
    ):
        self.trio, self.val, self.temperature, self.align_weighting = trio, val, temperature, align_weighting
        self.device, self.precision = device, precision
        self.kind = task_kind(trio.spec.task)  # per-sample or per-pixel losses (methods/tasks.py)
        self.optimizer = adam(trio.parameters(), lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"trio": self.trio}

    def batch_loss(self, batch: Split):
        members = self.trio.members()
        logits = [net(batch.inputs) for _, net in members]
        loss, terms = mutual_loss(
            logits, batch.labels, self.temperature, self.kind.ce, self.kind.kd, self.align_weighting
        )
        with torch.no_grad():  # train accuracy of each net, averaged on the device like the loss terms
            for (key, _), net_logits in zip(members, logits, strict=True):
                terms[f"{log_name(key)}_acc"] = self.kind.accuracy(net_logits, batch.labels)
        return loss, terms

    def end_epoch(self, epoch: int) -> EpochEnd:
        self.trio.eval()
        row = {}
        for key, net in self.trio.members():
            _, row[f"val_{log_name(key)}_acc"] = self.kind.val_loss_and_accuracy(
                net, self.val, self.kind.val_batch, self.device, self.precision
            )
        return EpochEnd(row)  # no score: the last epoch's nets are kept, as in the reference


def train(params: Params, features_path: Path, out: Path, log_dir: Path, restart: bool = False) -> dict:
    """S1 -> ``out`` (stage-1 checkpoint) and its dvclive log in ``log_dir``; returns the last epoch's row. The run's
    lock (engine/run_lock.py) is held from the start, so that a second process on the run stops before any work."""
    paths = RunPaths(params.common.run)
    with run_lock(paths.models, paths.run, "mst train"):
        settings, common = params.train, params.common
        features = FeatureFile.open(features_path)
        device = runtime_for(common)
        check_inputs(features, Readers.of(params).mapping(features.modalities), params.prepare)
        nets = nets_record(params.models, dict(features.dtypes), Path.cwd())
        spec = RunSpec.from_features(features, common.student, settings.width_divisor, nets)
        trio = Trio(spec, load_weights=True)
        for note in trio.notes:
            logger().info(note)
        if settings.vgg16_weights:
            load_pretrained(trio, Path(settings.vgg16_weights).expanduser())
        trio = trio.to(device)
        splits = load_splits(
            features, common.seed, list(spec.modalities), device, names=("train", "val"), memory_mb=common.memory_mb
        )
        for _, net in trio.members():
            maybe_compile(net.net, common.compile)
        augment = training_augment(settings, features, list(spec.modalities))
        if augment is not None:
            logger().info(describe_augment(augment))
        task = CollaborativeTraining(
            trio, splits["val"], settings.lr, settings.temperature, device, common.precision, settings.align_weighting
        )
        inputs = stage_inputs(features, common.seed)
        logbook = stage_logbook(log_dir, "train", params, settings)
        result, store = run_stage(
            task,
            splits["train"],
            params,
            settings,
            device,
            out,
            stage_key("train", params, settings, inputs),
            restart,
            order_seed=common.seed,
            logbook=logbook,
            augment=augment,
        )
        if distributed.is_main():  # one writer under torchrun; the others wait until the outputs exist
            origin = result_provenance(params, features, common.seed, device, stage_record("S1", mst_losses))
            trio.checkpoint(inputs, dataclasses.asdict(settings), origin).save(out)
            logbook.close({"best_epoch": result.best_epoch})
            store.clear()
        distributed.barrier()
        return result.rows[-1]
