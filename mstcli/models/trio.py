"""The three nets of a run (MM teacher, student, CM teacher), built from the registry and a feature file.

Every net is called with the batch's ``inputs`` dict (modality -> tensor), so the stages never need to know
which modality a net reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from mstcli.data.store import FeatureFile
from mstcli.engine.checkpoints import Stage1Checkpoint, state_fingerprint
from mstcli.errors import UserError
from mstcli.models.zoo import build_multimodal, build_unimodal, family, other_modality


@dataclass(frozen=True)
class RunSpec:
    """What is needed to rebuild the nets of a run; stored in every checkpoint."""

    dataset: str
    modalities: tuple[str, ...]
    student: str
    cm: str
    shapes: dict[str, tuple[int, ...]]
    num_classes: int
    class_names: tuple[str, ...]
    multimodal_net: str
    student_net: str
    cm_net: str
    task: str = "classification"  # "segmentation" for per-pixel data sets (methods/tasks.py); older files lack it
    width_divisor: int = 1  # channel widths divided by this (scalable families only, e.g. FuseNet)

    @classmethod
    def from_features(cls, features: FeatureFile, student: str, width_divisor: int = 1) -> "RunSpec":
        fam = family(features.dataset, features.modalities)
        cm = other_modality(fam, student)
        if width_divisor != 1 and not fam.scalable:
            raise UserError(f"train.width_divisor applies to scalable nets only; {features.dataset}'s are not")
        if (fam.task == "segmentation") != features.dense:
            kind = "per-pixel" if features.dense else "per-sample"
            raise UserError(f"{features.path}: {kind} labels do not fit data set {features.dataset}'s {fam.task} nets")
        return cls(
            dataset=features.dataset,
            modalities=fam.modalities,
            student=student,
            cm=cm,
            shapes={m: tuple(features.modalities[m]) for m in fam.modalities},
            num_classes=features.num_classes,
            class_names=tuple(features.class_names),
            multimodal_net=fam.multimodal,
            student_net=fam.unimodal[student],
            cm_net=fam.unimodal[cm],
            task=fam.task,
            width_divisor=width_divisor,
        )

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        data = dict(data)
        data["modalities"] = tuple(data["modalities"])
        data["shapes"] = {k: tuple(v) for k, v in data["shapes"].items()}
        data["class_names"] = tuple(data["class_names"])
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def net_options(self) -> dict:
        """Keyword arguments of the nets' constructors beyond shape and classes (none for most families)."""
        return {"width_divisor": self.width_divisor} if self.width_divisor != 1 else {}

    def build_student(self) -> nn.Module:
        return build_unimodal(self.student_net, self.shapes[self.student], self.num_classes, **self.net_options)


class ModalNet(nn.Module):
    """A net plus the modalities it reads, called with the batch's inputs dict; ``net`` is what MaskNets hook into."""

    def __init__(self, net: nn.Module, reads: tuple[str, ...]) -> None:
        super().__init__()
        self.net = net
        self.reads = reads

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(*(inputs[m] for m in self.reads))


class Trio(nn.Module):
    def __init__(self, spec: RunSpec) -> None:
        super().__init__()
        self.spec = spec
        self.mm = ModalNet(
            build_multimodal(
                spec.multimodal_net,
                tuple(spec.shapes[m] for m in spec.modalities),
                spec.num_classes,
                **spec.net_options,
            ),
            spec.modalities,
        )
        self.student = ModalNet(spec.build_student(), (spec.student,))
        self.cm = ModalNet(
            build_unimodal(spec.cm_net, spec.shapes[spec.cm], spec.num_classes, **spec.net_options), (spec.cm,)
        )

    def teacher(self, key: str) -> ModalNet:
        return {"mm": self.mm, "cm": self.cm}[key]

    def checkpoint(self, inputs: dict, settings: dict, provenance: dict | None = None) -> Stage1Checkpoint:
        """The stage-1 checkpoint of these nets, made from ``inputs`` (see engine/checkpoints.py) with ``settings``."""
        state = self.state_dict()
        return Stage1Checkpoint(
            spec=self.spec.to_dict(),
            inputs=inputs,
            settings=settings,
            provenance=provenance or {},
            state=state,
            fingerprint=state_fingerprint(state),
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: Stage1Checkpoint) -> "Trio":
        trio = cls(RunSpec.from_dict(checkpoint.spec))
        trio.load_state_dict(checkpoint.state)
        trio.fingerprint = checkpoint.fingerprint
        return trio


def load_frozen_trio(stage1_path: Path, features: FeatureFile, split_group: int, device: torch.device) -> Trio:
    """The stage-1 nets, frozen and in eval mode. A checkpoint made from other features is refused (its nets would
    read inputs of another shape or meaning), and so is one trained on another split group: its training set
    overlaps this group's test set, so later stages would test on data the nets have seen."""
    checkpoint = Stage1Checkpoint.load(stage1_path)
    checkpoint.check_inputs(stage1_path, features, split_group)
    trio = Trio.from_checkpoint(checkpoint).to(device).eval()
    trio.requires_grad_(False)
    return trio
