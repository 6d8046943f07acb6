"""The nets of a run (MM teacher, student, CM teachers), built from the registry and a feature file.

Every net is called with the batch's ``inputs`` dict (modality -> tensor), so the stages never need to know
which modality a net reads.

A run has one CM teacher per modality other than the student's, kept one way whatever M is: a mapping modality ->
CM teacher (``RunSpec.cm_nets``, ``Trio.cms``, state-dict prefix ``cms.<modality>.``); two modalities are its
one-entry case. Their public names stay as users know them: the one CM teacher of a two-modality run is ``cm``,
with M >= 3 each is ``cm:<modality>``. Checkpoints written before (``cm``/``cm_net`` in the spec, ``cm.`` in the
state) are converted on load, so they keep working.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from mstcli.config import ModelsParams
from mstcli.data.store import FeatureFile
from mstcli.engine.checkpoints import Stage1Checkpoint, state_fingerprint
from mstcli.errors import UserError
from mstcli.models.chosen import (
    chosen_for_student,
    chosen_fusion,
    chosen_unimodal,
    configure,
    mm_is_chosen,
    models_of,
)
from mstcli.models.zoo import build_multimodal, build_unimodal, family, other_modalities

#: ``distill.teacher`` value of the multi-teacher baseline: every teacher of the run, their soft labels averaged
ALL_TEACHERS = "all"

#: names an nn.ModuleDict already has (its methods, nn.Module's, ``training``): torch refuses them as entries
_TAKEN_NAMES = frozenset(dir(nn.ModuleDict()))


def cm_slot(modality: str) -> str:
    """The entry of ``Trio.cms`` (and so the state-dict prefix ``cms.<entry>.``) of the CM teacher of ``modality``:
    the modality's own name, escaped where torch refuses it as a submodule name, so that any folder column prefix
    works: '.' (the path separator of state dicts) becomes %2E, '%' %25, and a name the container already has as
    an attribute ('values', 'type', ...) gets a leading '%'."""
    name = modality.replace("%", "%25").replace(".", "%2E")
    return f"%{name}" if name in _TAKEN_NAMES else name


@dataclass(frozen=True)
class RunSpec:
    """What is needed to rebuild the nets of a run; stored in every checkpoint."""

    dataset: str
    modalities: tuple[str, ...]
    student: str
    shapes: dict[str, tuple[int, ...]]
    num_classes: int
    class_names: tuple[str, ...]
    multimodal_net: str
    student_net: str
    # modality -> net of every CM teacher, in the data's order: one entry with two modalities, M - 1 with M
    cm_nets: dict[str, str]
    task: str = "classification"  # "segmentation" for per-pixel data sets (methods/tasks.py); older files lack it
    width_divisor: int = 1  # channel widths divided by this (scalable families only, e.g. FuseNet)
    # the nets a user chose in ``models`` (models/chosen.nets_record): empty for mst's own nets, as before
    nets: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.cm_nets:
            raise ValueError("a run has at least one CM teacher")  # a bug, not a user's mistake

    @classmethod
    def from_features(
        cls, features: FeatureFile, student: str, width_divisor: int = 1, nets: dict | None = None
    ) -> RunSpec:
        fam = family(features.dataset, features.modalities)
        others = other_modalities(fam, student)  # first: a student modality the data lack is a one-line error
        if width_divisor != 1 and not fam.scalable:
            raise UserError(f"train.width_divisor applies to scalable nets only; {features.dataset}'s are not")
        if (fam.task == "segmentation") != features.dense:
            kind = "per-pixel" if features.dense else "per-sample"
            raise UserError(f"{features.path}: {kind} labels do not fit data set {features.dataset}'s {fam.task} nets")
        return cls(
            dataset=features.dataset,
            modalities=fam.modalities,
            student=student,
            shapes={m: tuple(features.modalities[m]) for m in fam.modalities},
            num_classes=features.num_classes,
            class_names=tuple(features.class_names),
            multimodal_net=fam.multimodal,
            student_net=fam.unimodal[student],
            cm_nets={m: fam.unimodal[m] for m in others},
            task=fam.task,
            width_divisor=width_divisor,
            nets=dict(nets or {}),
        )

    @classmethod
    def from_dict(cls, data: dict) -> RunSpec:
        """The spec a checkpoint stores. Files written before the CM teachers were kept one way name the first CM
        teacher in ``cm``/``cm_net`` and have ``cm_nets`` empty (two modalities) or missing (older still): their
        one CM teacher becomes the mapping's one entry. A three-modality file of that time also filled ``cm_nets``
        (its first entry is ``cm``), which is then the mapping as it is."""
        data = dict(data)
        cm, cm_net = data.pop("cm", None), data.pop("cm_net", None)
        data["cm_nets"] = dict(data.get("cm_nets") or ({cm: cm_net} if cm is not None else {}))
        data["modalities"] = tuple(data["modalities"])
        data["shapes"] = {k: tuple(v) for k, v in data["shapes"].items()}
        data["class_names"] = tuple(data["class_names"])
        data["nets"] = dict(data.get("nets") or {})
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def net_options(self) -> dict:
        """Keyword arguments of the nets' constructors beyond shape and classes (none for most families)."""
        return {"width_divisor": self.width_divisor} if self.width_divisor != 1 else {}

    def build_student(self, load_weights: bool = False) -> nn.Module:
        """The student's net, configured by ``models`` (its hint layers, what is frozen). ``load_weights``: read a
        weights file / pretrained folder (a fresh net); a net whose checkpoint state follows needs none."""
        choice = chosen_for_student(self.nets) if self.nets else None
        if choice is not None and choice.kind != "auto":
            shape = self.shapes[self.student]
            net = chosen_unimodal(self.nets, choice, self.student, shape, self.num_classes, "student", load_weights)
        else:
            net = build_unimodal(self.student_net, self.shapes[self.student], self.num_classes, **self.net_options)
        configure(net, "student", self.nets)
        return net

    def build_unimodal(self, modality: str, net_name: str, load_weights: bool = False) -> nn.Module:
        """A CM teacher's net: the chosen encoder of ``modality`` with a classifier, or mst's own ``net_name``."""
        choice = models_of(self.nets).choice(modality) if self.nets else None
        if choice is not None and choice.kind != "auto":
            shape = self.shapes[modality]
            return chosen_unimodal(self.nets, choice, modality, shape, self.num_classes, modality, load_weights)
        return build_unimodal(net_name, self.shapes[modality], self.num_classes, **self.net_options)

    def build_multimodal(self, load_weights: bool = False) -> nn.Module:
        if self.nets and mm_is_chosen(self.nets, self.modalities):
            return chosen_fusion(self.nets, self.modalities, self.shapes, self.num_classes, load_weights)
        shapes = tuple(self.shapes[m] for m in self.modalities)
        return build_multimodal(self.multimodal_net, shapes, self.num_classes, **self.net_options)

    @property
    def cm_keys(self) -> dict[str, str]:
        """Teacher key -> modality of every CM teacher, in the data's order: ``{"cm": m}`` with two modalities (the
        name users and older results know), ``{"cm:<m>": m, ...}`` with more."""
        if len(self.cm_nets) == 1:
            return {"cm": next(iter(self.cm_nets))}
        return {f"cm:{m}": m for m in self.cm_nets}

    @property
    def teacher_keys(self) -> tuple[str, ...]:
        """The run's teachers in the reference order: the MM net, then the CM net(s) (``cm`` or ``cm:<modality>``)."""
        return ("mm", *self.cm_keys)

    def teacher_key(self, asked: str, setting: str = "distill.teacher") -> str:
        """The key of the teacher a user names (``mm``, ``cm``, ``cm:<modality>``), or a one-line error naming
        ``setting``. With two modalities ``cm:<the other modality>`` is ``cm``; with more, plain ``cm`` is
        ambiguous and refused."""
        if asked == "mm":
            return "mm"
        named = asked.removeprefix("cm:")
        if len(self.cm_nets) == 1:
            (cm,) = self.cm_nets
            if asked in ("cm", f"cm:{cm}"):
                return "cm"
            raise UserError(
                f"{setting}={asked}: the run's CM teacher reads {cm} ({named} is "
                f"{'the student' if named == self.student else 'not a modality of the run'}); use cm or mm"
            )
        choices = ", ".join(self.cm_keys)
        if asked == "cm":
            raise UserError(f"{setting}=cm: the run has {len(self.cm_nets)} CM teachers, name one: {choices}")
        if named not in self.cm_nets:
            raise UserError(f"{setting}={asked}: no such CM teacher; the run has {choices} (or mm)")
        return asked

    def upgrade_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A trio state_dict in today's layout: a two-modality state written before (its CM teacher under ``cm.``)
        gets the prefix ``cms.<modality>.``; a current one is returned as it is."""
        if len(self.cm_nets) != 1 or not any(k.startswith("cm.") for k in state):
            return state
        (cm,) = self.cm_nets
        return {(f"cms.{cm_slot(cm)}.{k[3:]}" if k.startswith("cm.") else k): v for k, v in state.items()}


class ModalNet(nn.Module):
    """A net plus the modalities it reads, called with the batch's inputs dict; ``net`` is what MaskNets hook into."""

    def __init__(self, net: nn.Module, reads: tuple[str, ...]) -> None:
        super().__init__()
        self.net = net
        self.reads = reads

    def train(self, mode: bool = True) -> ModalNet:
        """As nn.Module's, but the modules ``models.freeze`` fixed stay in eval mode (BatchNorm statistics kept)."""
        super().train(mode)
        for name in getattr(self.net, "frozen_modules", ()):
            self.net.get_submodule(name).eval()
        return self

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(*(inputs[m] for m in self.reads))


class Trio(nn.Module):
    """The MM teacher, the student and the CM teacher(s) of a run (three nets with two modalities, M + 1 with M)."""

    def __init__(self, spec: RunSpec, load_weights: bool = False) -> None:
        super().__init__()
        self.spec = spec
        # built in this order (MM, student, CM teachers): the nets' initial weights come from one random stream
        self.mm = ModalNet(spec.build_multimodal(load_weights), spec.modalities)
        self.student = ModalNet(spec.build_student(load_weights), (spec.student,))
        self.cms = nn.ModuleDict(
            {cm_slot(m): ModalNet(spec.build_unimodal(m, name, load_weights), (m,)) for m, name in spec.cm_nets.items()}
        )
        self.notes: list[str] = []  # what models chose for the teachers (masked layers, frozen weights), for the log
        self.notes += configure(self.mm.net, "mm", spec.nets, None)
        for key, modality in spec.cm_keys.items():
            self.notes += configure(self.teacher(key).net, key, spec.nets, modality)

    def teacher(self, key: str) -> ModalNet:
        """The teacher under ``key`` (one of ``spec.teacher_keys``); KeyError for any other."""
        if key == "mm":
            return self.mm
        return self.cms[cm_slot(self.spec.cm_keys[key])]

    def members(self) -> list[tuple[str, ModalNet]]:
        """Every net with its key, in S1's order: MM teacher, student, CM teacher(s)."""
        return [("mm", self.mm), ("student", self.student)] + [(key, self.teacher(key)) for key in self.spec.cm_keys]

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False):
        """As nn.Module's, for states of either layout (``RunSpec.upgrade_state``): stage-1 checkpoints and S1's
        resume states written before the CM teachers were kept one way still load."""
        return super().load_state_dict(self.spec.upgrade_state(state_dict), strict=strict, assign=assign)

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
    def from_checkpoint(cls, checkpoint: Stage1Checkpoint) -> Trio:
        trio = cls(RunSpec.from_dict(checkpoint.spec))
        trio.load_state_dict(checkpoint.state)
        trio.fingerprint = checkpoint.fingerprint
        return trio


def check_models(path: Path, spec: dict, models: ModelsParams | None) -> None:
    """Refuse in one line a checkpoint whose nets were built from other ``models`` settings than ``models``: the
    stage would rebuild other nets than the ones whose weights it holds (or test another student than asked)."""
    if models is None:
        return
    recorded = models_of(dict(spec.get("nets") or {}))
    if recorded == models:
        return
    for f in dataclasses.fields(ModelsParams):
        was, now = getattr(recorded, f.name), getattr(models, f.name)
        if was != now:
            raise UserError(
                f"{path} was made with models.{f.name}={_shown(was)}, params say {_shown(now)}: run `mst train`"
                " again (or set them back)"
            )


def _shown(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").removesuffix("...").strip()


def load_frozen_trio(
    stage1_path: Path,
    features: FeatureFile,
    split_group: int,
    device: torch.device,
    student: str | None = None,
    models: ModelsParams | None = None,
) -> Trio:
    """The stage-1 nets, frozen and in eval mode. A checkpoint made from other features is refused (its nets would
    read inputs of another shape or meaning), and so is one trained on another split group: its training set
    overlaps this group's test set, so later stages would test on data the nets have seen; with ``student``
    (common.student), so is one whose student reads another modality (S1 chose the teachers for its student)."""
    checkpoint = Stage1Checkpoint.load(stage1_path)
    checkpoint.check_inputs(stage1_path, features, split_group)
    if student is not None and student != checkpoint.spec["student"]:
        modalities = tuple(checkpoint.spec["modalities"])
        if student not in modalities:
            raise UserError(f"common.student must be one of {', '.join(modalities)}, got '{student}'")
        raise UserError(
            f"{stage1_path} was trained for the {checkpoint.spec['student']} student, not {student}: run `mst train` "
            f"with common.student={student} (or another common.run)"
        )
    check_models(stage1_path, checkpoint.spec, models)
    trio = Trio.from_checkpoint(checkpoint).to(device).eval()
    trio.requires_grad_(False)
    return trio
