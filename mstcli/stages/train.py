"""``mst train``: S1, collaborative initialization (method.md §2.2).

The MM teacher, the CM teacher and the student learn together: each has its CE plus the KL towards the
other two (six KL terms, no detaching), one Adam over all three, no validation-based selection (the
last epoch is kept, as in the reference). Validation accuracy of each net is logged for the user.
"""

from __future__ import annotations

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
from mstcli.methods.mst.losses import mutual_loss
from mstcli.models.trio import RunSpec, Trio
from mstcli.ui import epoch_line, stderr_console, track


def train(params: Params, features_path: Path, out: Path, curves: Path) -> dict:
    settings, common = params.train, params.common
    features = FeatureFile.open(features_path)
    device = setup_runtime(common.device, common.threads, common.seed, common.precision)
    spec = RunSpec.from_features(features, common.student)
    trio = Trio(spec).to(device)
    splits = load_splits(
        features, common.seed, list(spec.modalities), device, names=("train", "val"), memory_mb=common.memory_mb
    )
    optimizer = torch.optim.Adam(trio.parameters(), lr=settings.lr)
    for net in (trio.mm, trio.student, trio.cm):
        maybe_compile(net.net, common.compile)
    generator = seeded_generator(common.seed)
    console = stderr_console()
    n_batches = -(-len(splits["train"]) // settings.batch_size)
    rows = []
    for epoch in range(settings.epochs):
        started = time.perf_counter()
        trio.train()
        means = EpochMeans()
        for index in track(
            batches(len(splits["train"]), settings.batch_size, generator, device), n_batches, "S1 batches", console
        ):
            batch = splits["train"].batch(index)
            with autocast(device, common.precision):
                logits = [trio.mm(batch.inputs), trio.student(batch.inputs), trio.cm(batch.inputs)]
                loss, terms = mutual_loss(logits, batch.labels, settings.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            means.add({"loss": loss, **terms}, len(index))
        trio.eval()
        row = {"epoch": epoch, **means.means()}
        for key in ("mm", "student", "cm"):
            with autocast(device, common.precision):
                logits = predict(getattr(trio, key), splits["val"], 1024).float()
            _, row[f"val_{key}_acc"] = loss_and_accuracy(logits, splits["val"].labels)
        row["epoch_s"] = time.perf_counter() - started
        rows.append(row)
        console.print(epoch_line("S1", epoch, settings.epochs, {k: v for k, v in row.items() if k != "epoch"}))
    save_checkpoint(
        {
            "kind": "stage1",
            **trio.checkpoint(),
            "split_group": params.common.seed,
            "settings": dataclasses.asdict(settings),
        },
        out,
    )
    write_tsv(curves, rows)
    return rows[-1]
