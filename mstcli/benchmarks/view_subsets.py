"""``mst bench views``: how much each modality, each pair and all of them tell alone (a data set's difficulty).

For every non-empty subset of the feature file's modalities a net is trained from scratch with CE only, through
the engine like every stage: the data set's unimodal net for one modality, the MM net of its family on the
subset's modalities otherwise (an MM net that can be built on some of its views is; else a subset smaller than
all modalities gets the folder fusion net, which takes any number of inputs). The state with the
lowest validation CE is kept and tested. This is the measurement behind a data card's "each modality alone is
below any pair, and all together are best".
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mstcli.config import Params
from mstcli.data.store import FeatureFile
from mstcli.engine.loop import EpochEnd, EpochTask, LoopConfig, run_epochs
from mstcli.engine.optimizers import adam
from mstcli.engine.runtime import runtime_for
from mstcli.engine.splits import Split, load_splits
from mstcli.errors import UserError
from mstcli.methods.tasks import task_kind
from mstcli.models.trio import ModalNet
from mstcli.models.zoo import MULTIMODAL_NETS, build_multimodal, build_unimodal, family


class ViewsOnly(EpochTask):
    """One net on some modalities, CE only; the state of the lowest validation CE is kept."""

    name = "views"

    def __init__(self, net: ModalNet, val: Split, lr: float, device: torch.device, precision: str) -> None:
        self.net, self.val, self.device, self.precision = net, val, device, precision
        self.kind = task_kind("classification")
        self.optimizer = adam(net.parameters(), lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def batch_loss(self, batch: Split):
        logits = self.net(batch.inputs)
        return F.cross_entropy(logits, batch.labels), {}

    def end_epoch(self, epoch: int) -> EpochEnd:
        self.net.eval()
        val_ce, val_acc = self.kind.val_loss_and_accuracy(self.net, self.val, 1024, self.device, self.precision)
        return EpochEnd({"val_ce": val_ce, "val_acc": val_acc}, score=val_ce)

    def selected_state(self) -> dict:
        return self.net.state_dict()


def _net_for(features: FeatureFile, views: tuple[str, ...]) -> nn.Module:
    fam = family(features.dataset, features.modalities)
    shapes = {m: tuple(features.modalities[m]) for m in fam.modalities}
    classes = features.num_classes
    if len(views) == 1:
        return build_unimodal(fam.unimodal[views[0]], shapes[views[0]], classes)
    if views == fam.modalities:
        return build_multimodal(fam.multimodal, tuple(shapes[m] for m in views), classes)
    if getattr(MULTIMODAL_NETS[fam.multimodal], "takes_views", False):  # the MM net's own build on the subset
        return build_multimodal(fam.multimodal, tuple(shapes[m] for m in views), classes, views=views)
    return build_multimodal("folder_fusion_net", tuple(shapes[m] for m in views), classes)


def measure(params: Params, features_path: Path, epochs: int) -> dict:
    """Test accuracy of a CE-only net on every subset of the modalities (split group ``common.seed``)."""
    if not features_path.is_file():
        raise UserError(f"feature file not found: {features_path} (run `mst prepare` first)")
    features = FeatureFile.open(features_path)
    if features.dense:
        raise UserError("mst bench views is for per-sample labels (classification data sets)")
    modalities = tuple(family(features.dataset, features.modalities).modalities)
    device = runtime_for(params.common)
    splits = load_splits(features, params.common.seed, list(modalities), device, memory_mb=params.common.memory_mb)
    kind = task_kind("classification")
    results = {}
    for size in range(1, len(modalities) + 1):
        for views in itertools.combinations(modalities, size):
            torch.manual_seed(params.common.seed)
            net = ModalNet(_net_for(features, views), views).to(device)
            task = ViewsOnly(net, splits["val"], params.train.lr, device, params.common.precision)
            config = LoopConfig(epochs, params.train.batch_size, device, params.common.precision,
                                order_seed=params.common.seed, resume_every=0)  # fmt: skip
            result = run_epochs(task, splits["train"], config)
            net.load_state_dict(result.best_state)
            net.eval()
            _, accuracy = kind.val_loss_and_accuracy(net, splits["test"], 1024, device, params.common.precision)
            results["+".join(views)] = {"modalities": list(views), "test_accuracy": round(float(accuracy), 4),
                                        "best_epoch": result.best_epoch}  # fmt: skip
    return {
        "dataset": features.dataset,
        "split_group": params.common.seed,
        "epochs": epochs,
        "n_train": len(splits["train"].labels),
        "n_test": len(splits["test"].labels),
        "views": results,
    }
