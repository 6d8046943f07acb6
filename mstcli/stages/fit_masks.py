"""``mst fit-masks``: S2, specialized teacher adaptation (method.md §2.3).

Each MaskNet is plugged alone into its frozen teacher and trained, with its own Adam, so that the masked
teacher's output matches the frozen student's (the student's logits are the stop-gradient target; the
reverse of usual KD). After every epoch the validation KL is averaged per teacher and summed; the states
of all MaskNets at the epoch with the lowest sum are kept (one common best epoch, as in the reference).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from mstcli.config import Params
from mstcli.data.store import FeatureFile
from mstcli.engine.data import Split, batches, load_splits, seeded_generator
from mstcli.engine.outputs import save_checkpoint, write_tsv
from mstcli.engine.runtime import setup_runtime
from mstcli.errors import UserError
from mstcli.methods.losses import kd_loss, kd_per_sample
from mstcli.models.experts import TEACHER_ORDER, MaskSlot
from mstcli.models.masknet import MaskNet, layer_output_shapes, masknet_for, plugged
from mstcli.models.trio import Trio, load_frozen_trio
from mstcli.ui import epoch_line, stderr_console, track


def build_masks(trio: Trio, sample: Split, layers: int, heads: int, factor: int) -> list[tuple[MaskSlot, MaskNet]]:
    masks = []
    for key in TEACHER_ORDER:
        teacher = trio.teacher(key)
        available = teacher.net.mask_layers
        if layers > len(available):
            raise UserError(
                f"fit_masks.layers={layers} but {type(teacher.net).__name__} has {len(available)} mask layers"
            )
        names = available[:layers]
        shapes = layer_output_shapes(teacher.net, names, *(sample.inputs[m] for m in teacher.reads))
        for name in names:
            masks.append((MaskSlot(key, name, shapes[name]), masknet_for(shapes[name], heads, factor)))
    return masks


def fit_masks(params: Params, features_path: Path, stage1_path: Path, out: Path, curves: Path) -> dict:
    settings = params.fit_masks
    features = FeatureFile.open(features_path)
    device = setup_runtime(params.common.device, params.common.threads, params.common.seed)
    trio = load_frozen_trio(stage1_path, features, params.common.seed, device)
    splits = load_splits(features, params.common.seed, list(trio.spec.modalities), device, names=("train", "val"))
    masks = build_masks(
        trio,
        splits["val"].batch(torch.arange(2, device=device)),
        settings.layers,
        settings.heads,
        settings.hidden_dim_factor,
    )
    for _, net in masks:
        net.to(device)
    optimizers = [torch.optim.Adam(net.parameters(), lr=settings.lr) for _, net in masks]
    generator = seeded_generator(params.common.seed)
    console = stderr_console()
    n_batches = -(-len(splits["train"]) // settings.batch_size)
    rows, best, best_epoch = [], float("inf"), 0
    best_states = [copy.deepcopy(net.state_dict()) for _, net in masks]
    for epoch in range(settings.epochs):
        train_kl = [0.0] * len(masks)
        for index in track(
            batches(len(splits["train"]), settings.batch_size, generator, device), n_batches, "S2 batches", console
        ):
            batch = splits["train"].batch(index)
            with torch.no_grad():
                target = trio.student(batch.inputs)
            for i, ((slot, net), optimizer) in enumerate(zip(masks, optimizers)):
                net.train()
                teacher = trio.teacher(slot.teacher)
                with plugged(teacher.net, [(slot.layer, net)]):
                    loss = kd_loss(teacher(batch.inputs), target, settings.temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                train_kl[i] += float(loss.detach()) * len(index) / len(splits["train"])
        val_kl = validation_kl(trio, masks, splits["val"], settings.temperature, settings.batch_size)
        score = selection_score([slot for slot, _ in masks], val_kl)
        row = {"epoch": epoch, "val_score": score}
        for (slot, _), tr, va in zip(masks, train_kl, val_kl):
            row[f"train_kl_{slot.teacher}@{slot.layer}"] = tr
            row[f"val_kl_{slot.teacher}@{slot.layer}"] = va
        rows.append(row)
        if score < best:
            best, best_epoch = score, epoch
            best_states = [copy.deepcopy(net.state_dict()) for _, net in masks]
        console.print(epoch_line("S2", epoch, settings.epochs, {"val_score": score, "best_epoch": best_epoch}))
    entries = []
    for (slot, net), state in zip(masks, best_states):
        entries.append(
            {
                "teacher": slot.teacher,
                "layer": slot.layer,
                "shape": slot.shape,
                "dim": net.dim,
                "heads": settings.heads,
                "hidden_dim_factor": settings.hidden_dim_factor,
                "spatial": net.reduce is not None,
                "state": state,
                "parameters": sum(p.numel() for p in net.parameters()),
            }
        )
    save_checkpoint(
        {
            "kind": "masks",
            "spec": trio.spec.to_dict(),
            "stage1_fingerprint": trio.fingerprint,
            "masks": entries,
            "best_epoch": best_epoch,
            "val_score": best,
            "settings": dataclasses.asdict(settings),
        },
        out,
    )
    write_tsv(curves, rows)
    return {"best_epoch": best_epoch, "val_score": best}


def selection_score(slots: list[MaskSlot], val_kl: list[float]) -> float:
    """Mean validation KL over each teacher's MaskNets, summed over the teachers (the reference's criterion)."""
    score = 0.0
    for key in TEACHER_ORDER:
        values = [kl for slot, kl in zip(slots, val_kl) if slot.teacher == key]
        score += sum(values) / len(values) if values else 0.0
    return score


@torch.no_grad()
def validation_kl(
    trio: Trio, masks: list[tuple[MaskSlot, MaskNet]], split: Split, temperature: float, batch_size: int
) -> list[float]:
    """Mean KL of every specialized teacher (its own mask only) to the student over the split."""
    totals = [0.0] * len(masks)
    for index in batches(len(split), batch_size, None, split.labels.device):
        batch = split.batch(index)
        target = trio.student(batch.inputs)
        for i, (slot, net) in enumerate(masks):
            net.eval()
            teacher = trio.teacher(slot.teacher)
            with plugged(teacher.net, [(slot.layer, net)]):
                totals[i] += float(kd_per_sample(teacher(batch.inputs), target, temperature).sum())
    return [t / len(split) for t in totals]
