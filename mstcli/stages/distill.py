"""``mst distill``: S3 (method.md §2.4) or a comparison method, then best-student selection.

After each epoch the student's CE on the validation split (its own modality only) decides which state is
kept: the lowest, as in the reference. The per-epoch routing frequency of each specialized teacher goes
to ``routing.tsv`` (empty of experts for methods without routing).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import torch

from mstcli.config import Params
from mstcli.data.store import FeatureFile
from mstcli.engine.splits import batches, load_splits, seeded_generator
from mstcli.engine.evaluation import loss_and_accuracy, predict
from mstcli.engine.outputs import save_checkpoint, write_tsv
from mstcli.engine.meters import EpochMeans
from mstcli.engine.runtime import autocast, maybe_compile, setup_runtime
from mstcli.methods.base import DistillContext
from mstcli.methods.registry import METHODS, build_method
from mstcli.models.trio import ModalNet, load_frozen_trio
from mstcli.ui import epoch_line, stderr_console, track


def distill(
    params: Params,
    features_path: Path,
    stage1_path: Path,
    masks_path: Path | None,
    out: Path,
    curves: Path,
    routing: Path,
) -> dict:
    settings, common = params.distill, params.common
    features = FeatureFile.open(features_path)
    device = setup_runtime(common.device, common.threads, common.seed, common.precision)
    trio = load_frozen_trio(stage1_path, features, common.seed, device)
    splits = load_splits(
        features, common.seed, list(trio.spec.modalities), device, names=("train", "val"), memory_mb=common.memory_mb
    )
    continues = METHODS[settings.method].continues_stage1 if settings.method in METHODS else False
    student = _initial_student(trio, settings.student_init, continues, device)
    method = build_method(settings.method, DistillContext(settings, trio, student, splits, masks_path, device))

    trainable = [p for m in [student, *method.extra_modules()] for p in m.parameters()]
    optimizer = torch.optim.Adam(trainable, lr=settings.lr)
    maybe_compile(student.net, common.compile)
    generator = seeded_generator(common.seed + 1)
    console = stderr_console()
    train = splits["train"]
    n_batches = -(-len(train) // settings.batch_size)
    curve_rows, routing_rows = [], []
    best_loss, best_epoch, best_state = float("inf"), -1, None
    for epoch in range(settings.epochs):
        started = time.perf_counter()
        student.train()
        for module in method.extra_modules():
            module.train()
        means = EpochMeans()
        for index in track(
            batches(len(train), settings.batch_size, generator, device), n_batches, "S3 batches", console
        ):
            batch = train.batch(index)
            with autocast(device, common.precision):
                loss, terms = method.loss(batch, student(batch.inputs))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            means.add({"loss": loss, **terms}, len(index))
        totals = means.means()
        stats = method.end_epoch(epoch)
        student.eval()
        with autocast(device, common.precision):
            val_logits = predict(student, splits["val"], 1024).float()
        val_loss, val_acc = loss_and_accuracy(val_logits, splits["val"].labels)
        if val_loss < best_loss or best_state is None:  # a NaN validation loss still leaves a checkpoint
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(student.net.state_dict())
        curve_rows.append(
            {"epoch": epoch, **totals, "val_ce": val_loss, "val_acc": val_acc, "epoch_s": time.perf_counter() - started}
        )
        routing_rows.append({"epoch": epoch, **{k: v for k, v in stats.items() if "@" in k}})
        console.print(
            epoch_line(
                f"S3 {settings.method}", epoch, settings.epochs, {**totals, "val_ce": val_loss, "val_acc": val_acc}
            )
        )
    save_checkpoint(
        {
            "kind": "student",
            "spec": trio.spec.to_dict(),
            "state": best_state,
            "best_epoch": best_epoch,
            "val_ce": best_loss,
            "split_group": params.common.seed,
            "method": settings.method,
            "teacher": getattr(method, "teacher_label", settings.teacher),
            "settings": dataclasses.asdict(settings),
        },
        out,
    )
    write_tsv(curves, curve_rows)
    write_tsv(routing, routing_rows)
    return {"best_epoch": best_epoch, "val_ce": best_loss}


def with_baseline_budget(params: Params) -> Params:
    """The project's rule for a baseline trained from scratch: train.epochs + distill.epochs epochs, as many passes
    over the data as the MST student gets in S1 and S3 together."""
    epochs = params.train.epochs + params.distill.epochs
    return dataclasses.replace(params, distill=dataclasses.replace(params.distill, epochs=epochs))


def _initial_student(trio, init: str, continues_stage1: bool, device: torch.device) -> ModalNet:
    """The stage-1 student (continued, as MST does) or a fresh one (as the reference's baselines)."""
    if init == "stage1" or (init == "auto" and continues_stage1):
        student = trio.student
    else:
        student = ModalNet(trio.spec.build_student(), (trio.spec.student,)).to(device)
    student.requires_grad_(True)
    return student
