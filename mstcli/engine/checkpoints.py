"""Every checkpoint kind mst writes, defined once: what it records, how it is saved and how it is checked.

A stage's output is only as trustworthy as the inputs it was made from, so every checkpoint records the data set,
the fingerprint of the feature file, the split group and the settings that made it, plus the full provenance
record of engine/provenance.py (every resolved setting, the method's constants, git commit, versions, device),
and the checkpoints a later stage builds on (stage 1 -> masks -> student) record the fingerprint of the one they
continue. Loading checks the
kind and the schema version and reads with ``torch.load(weights_only=True)``: a checkpoint holds tensors and plain
Python values only, so a crafted ``.pt`` cannot run code. Any mismatch is a one-line :class:`UserError`.

Kinds:

- :class:`Stage1Checkpoint` (``models/<run>/stage1.pt``): the MM teacher, the student and the CM teacher of S1;
- :class:`MasksCheckpoint` (``models/<run>/masks.pt``): one MaskNet per (teacher, layer), fitted in S2;
- :class:`StudentCheckpoint` (``models/<run>/student.pt``): the student chosen in S3 or by a comparison method;
- :class:`ResumeState` (``models/<run>/.resume/<output>.pt``): the full state of a stage after its last finished
  epoch, so that a killed stage continues where it stopped (see engine/resume.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from mstcli.atomic_write import atomic_path
from mstcli.data.fingerprint import feature_fingerprint
from mstcli.errors import UserError

SCHEMA_VERSION = 3  # 3: every checkpoint carries ``provenance``

C = TypeVar("C", bound="Checkpoint")


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A digest of a state_dict's names and values: a later stage records the one of the weights it built on."""
    digest = hashlib.sha1()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Checkpoint:
    """Fields common to every kind; subclasses add theirs. ``KIND`` is stored in the file and checked on load."""

    KIND: ClassVar[str] = ""
    WHAT: ClassVar[str] = "checkpoint"  # how messages name it

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.KIND, "schema": SCHEMA_VERSION, **dataclasses.asdict(self)}

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(self.to_dict(), tmp)

    @classmethod
    def load(cls: type[C], path: Path) -> C:
        data = read_checkpoint_file(path, cls.WHAT)
        if data.get("kind") != cls.KIND:
            raise UserError(f"{path}: a {data.get('kind') or 'foreign'} checkpoint, not a {cls.WHAT}")
        if data.get("schema") != SCHEMA_VERSION:
            raise UserError(
                f"{path}: {cls.WHAT} of schema {data.get('schema')}, this mst reads schema {SCHEMA_VERSION}"
                " (rerun the stage that made it)"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(n for n in names if n not in data)
        if missing:
            raise UserError(f"{path}: malformed {cls.WHAT}, missing {', '.join(missing)}")
        return cls(**{n: data[n] for n in names})


def read_checkpoint_file(path: Path, what: str) -> dict[str, Any]:
    """The raw dict of a checkpoint file, read without executing anything (``weights_only=True``)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path} (run the stage that makes it first)")
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign, or holding objects that a weights-only load refuses
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable mst {what} ({reason})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not an mst {what}")
    return data


@dataclass
class Inputs:
    """What a checkpoint was made from; compared with what a later stage is given."""

    dataset: str
    features: str  # data.fingerprint.feature_fingerprint
    split_group: int


@dataclass
class MadeFrom(Checkpoint):
    spec: dict[str, Any]  # RunSpec.to_dict(): rebuilds the nets
    inputs: dict[str, Any]  # Inputs as a dict
    settings: dict[str, Any]  # the settings section of the stage that made it
    provenance: dict[str, Any] = field(default_factory=dict)  # engine/provenance.py: where the weights came from

    def check_inputs(self, path: Path, features: Any, split_group: int) -> None:
        """Refuse use with another feature file or another split group: the nets would read inputs of another
        meaning, or be tested on rows they were trained on."""
        made = Inputs(**self.inputs)
        shapes = {m: tuple(s) for m, s in self.spec["shapes"].items()}
        if made.dataset != features.dataset or any(features.modalities.get(m) != s for m, s in shapes.items()):
            raise UserError(
                f"{path} was made from data set '{made.dataset}' with shapes {shapes}, not from {features.path}"
            )
        if made.features != feature_fingerprint(features):
            raise UserError(f"{path} was made from another version of {features.path} (prepared with other settings)")
        if made.split_group != split_group:
            raise UserError(f"{path} was trained on split group {made.split_group}, not common.seed={split_group}")


@dataclass
class Stage1Checkpoint(MadeFrom):
    KIND: ClassVar[str] = "stage1"
    WHAT: ClassVar[str] = "stage-1 checkpoint"
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # the Trio's state_dict
    fingerprint: str = ""  # state_fingerprint(state): MaskNets and students record which S1 they continue


@dataclass
class MaskRecord:
    """One fitted MaskNet as masks.pt holds it: where it plugs in, what rebuilds it, its weights. In the file it is
    a plain dict of these fields (``dataclasses.asdict``), as it always was, so older masks.pt files load."""

    teacher: str  # the teacher key (mm, cm, cm_<modality>)
    layer: str  # the masked layer of that teacher's net
    shape: tuple[int, ...]  # the layer's output shape per sample
    dim: int  # MaskNet arguments: mask width, heads, hidden size factor, spatial (conv) input
    heads: int
    hidden_dim_factor: int
    spatial: bool
    state: dict[str, torch.Tensor]  # the MaskNet's state_dict at the best epoch
    parameters: int  # its parameter count (for the record)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MaskRecord:
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"a MaskNet record without {', '.join(missing)}")
        return cls(**{n: data[n] for n in names})

    def __post_init__(self) -> None:
        self.shape = tuple(self.shape)


@dataclass
class MasksCheckpoint(MadeFrom):
    KIND: ClassVar[str] = "masks"
    WHAT: ClassVar[str] = "MaskNet checkpoint"
    stage1: str = ""  # fingerprint of the stage-1 nets the MaskNets were fitted to
    masks: list[MaskRecord] = field(default_factory=list)  # one per MaskNet, in the order of S2's slots
    best_epoch: int = 0
    val_score: float = 0.0

    def __post_init__(self) -> None:
        # read from a file the records are dicts; the file format stays the dict (to_dict writes asdict's)
        self.masks = [m if isinstance(m, MaskRecord) else MaskRecord.from_dict(m) for m in self.masks]

    @classmethod
    def load(cls, path: Path) -> MasksCheckpoint:
        try:
            return super().load(path)
        except (ValueError, TypeError) as exc:
            raise UserError(f"{path}: malformed {cls.WHAT} ({exc})") from None

    def fingerprint(self) -> str:
        """Digest of every MaskNet's weights: a student records the MaskNets it learned from."""
        merged = {f"{i}.{name}": value for i, record in enumerate(self.masks) for name, value in record.state.items()}
        return state_fingerprint(merged)

    def check_stage1(self, path: Path, stage1_fingerprint: str) -> None:
        if self.stage1 != stage1_fingerprint:
            raise UserError(f"{path} was fitted for another stage-1 run (rerun `mst fit-masks`)")


@dataclass
class StudentCheckpoint(MadeFrom):
    KIND: ClassVar[str] = "student"
    WHAT: ClassVar[str] = "student checkpoint"
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # the student net's state_dict
    method: str = ""
    teacher: str | None = None
    best_epoch: int = 0
    val_ce: float = 0.0
    stage1: str = ""  # fingerprint of the stage-1 run whose teachers (or student) it learned from
    method_constants: dict[str, Any] = field(default_factory=dict)  # the constants the method ran with


@dataclass
class ResumeState(Checkpoint):
    """Everything a stage needs to continue after its last finished epoch as if it had never stopped."""

    KIND: ClassVar[str] = "resume"
    WHAT: ClassVar[str] = "resume state"
    stage: str  # the stage's name, e.g. "S1"
    key: str  # digest of the stage's settings and inputs: a state is used only by the same run
    epoch: int  # the last finished epoch (0-based)
    modules: dict[str, dict[str, torch.Tensor]]  # the trainable nets' state_dicts
    optimizer: dict[str, Any]
    task: dict[str, Any]  # the stage's (and its method's) own state: decayed weights, memory banks, ...
    rng: dict[str, Any]  # every random generator, the batch-order one included
    best_epoch: int
    best_score: float | None
    best_state: Any
    rows: list[dict[str, Any]]  # the curves so far
