"""``mst fit-masks``: S2, specialized teacher adaptation (method.md §2.3).

Each MaskNet is plugged alone into its frozen teacher and trained, by Adam, so that the masked
teacher's output matches the frozen student's (the student's logits are the stop-gradient target; the
reverse of usual KD). After every epoch the validation KL is averaged per teacher and summed; the states
of all MaskNets at the epoch with the lowest sum are kept (one common best epoch, as in the reference).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import torch

from mstcli.config import Params
from mstcli.data.store import FeatureFile
from mstcli.engine.splits import Split, batches, load_splits, seeded_generator
from mstcli.engine.outputs import save_checkpoint, write_tsv
from mstcli.engine.bank import logit_bank
from mstcli.engine.layer_cache import build_layer_cache, plan_cache
from mstcli.engine.meters import EpochMeans
from mstcli.engine.runtime import autocast, maybe_compile, setup_runtime
from mstcli.errors import UserError
from mstcli.methods.losses import kd_loss, kd_per_sample
from mstcli.methods.mst.experts import TEACHER_ORDER, MaskSlot
from mstcli.methods.mst.masknet import MaskNet, layer_output_shapes, masknet_for, plugged
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


class MaskedTeachers:
    """Computes each specialized teacher's logits for a batch of a split, from the layer cache where it holds the
    masked layer's input, else by plugging the MaskNet into the full teacher forward."""

    def __init__(self, trio: Trio, masks: list[tuple[MaskSlot, MaskNet]], cache: dict[str, dict]) -> None:
        self.trio, self.masks, self.cache = trio, masks, cache

    def logits(self, i: int, split_name: str, batch: Split) -> torch.Tensor:
        slot, net = self.masks[i]
        teacher = self.trio.teacher(slot.teacher)
        cached = self.cache.get(split_name, {}).get((slot.teacher, slot.layer))
        if cached is not None:
            return teacher.net.tail(slot.layer, net(cached[batch.rows]))
        with plugged(teacher.net, [(slot.layer, net)]):
            return teacher(batch.inputs)


def fit_masks(params: Params, features_path: Path, stage1_path: Path, out: Path, curves: Path) -> dict:
    settings, common = params.fit_masks, params.common
    features = FeatureFile.open(features_path)
    device = setup_runtime(common.device, common.threads, common.seed, common.precision)
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
    optimizer = torch.optim.Adam([p for _, net in masks for p in net.parameters()], lr=settings.lr)
    n = len(masks)
    console = stderr_console()
    big = max(settings.batch_size, 1024)
    with autocast(device, common.precision):
        targets = {name: logit_bank(trio.student, split, big) for name, split in splits.items()}
        teachers = {key: trio.teacher(key) for key in TEACHER_ORDER}
        rows = sum(len(split) for split in splits.values())
        cached = plan_cache([((s.teacher, s.layer), s.shape) for s, _ in masks], teachers, rows, settings.cache_mb)
        cache = {name: build_layer_cache(teachers, cached, split, big) for name, split in splits.items()}
    if cached:
        console.print(f"S2: frozen outputs cached at {', '.join(f'{k}@{layer}' for k, layer in cached)}")
    masked = MaskedTeachers(trio, masks, cache)
    generator = seeded_generator(common.seed)
    train = splits["train"]
    n_batches = -(-len(train) // settings.batch_size)
    history, best, best_epoch = [], float("inf"), 0
    best_states = [copy.deepcopy(net.state_dict()) for _, net in masks]
    for epoch in range(settings.epochs):
        started = time.perf_counter()
        means = EpochMeans()
        for _, net in masks:
            net.train()
        for index in track(
            batches(len(train), settings.batch_size, generator, device), n_batches, "S2 batches", console
        ):
            batch = train.batch(index)
            target = targets["train"][index]
            with autocast(device, common.precision):
                losses = {i: kd_loss(masked.logits(i, "train", batch), target, settings.temperature) for i in range(n)}
            # each loss reaches only its own MaskNet and Adam is per parameter, so one backward of the sum and one
            # Adam over all MaskNets take exactly the steps of one Adam per MaskNet, with fewer kernel launches
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
            means.add(losses, len(index))
        train_kl = means.means()
        with autocast(device, common.precision):
            val_kl = validation_kl(masked, splits["val"], targets["val"], settings.temperature, settings.batch_size)
        score = selection_score([slot for slot, _ in masks], val_kl)
        row = {"epoch": epoch, "val_score": score, "epoch_s": time.perf_counter() - started}
        for i, ((slot, _), va) in enumerate(zip(masks, val_kl)):
            row[f"train_kl_{slot.teacher}@{slot.layer}"] = train_kl[i]
            row[f"val_kl_{slot.teacher}@{slot.layer}"] = va
        history.append(row)
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
    write_tsv(curves, history)
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
    masked: MaskedTeachers, split: Split, targets: torch.Tensor, temperature: float, batch_size: int
) -> list[float]:
    """Mean KL of every specialized teacher (its own mask only) to the student over the split."""
    totals = torch.zeros(len(masked.masks), device=targets.device)
    for i, (_, net) in enumerate(masked.masks):
        net.eval()
        for index in batches(len(split), batch_size, None, targets.device):
            logits = masked.logits(i, "val", split.batch(index))
            totals[i] += kd_per_sample(logits.float(), targets[index].float(), temperature).sum()
    return (totals / len(split)).tolist()
