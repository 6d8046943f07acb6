"""``mst predict``: the trained student on new files, through the feature step its data set was prepared with.

Raw inputs (an image, a clip) are read by the reader of their suffix (data/readers.py) and featurized by the data
set's registered feature step (data/sources), which takes its parameters from the feature file's records (the
prepare settings and the stored state, such as the PCA basis), so a prediction sees the features training saw.
``.npy`` arrays are taken as feature rows for any student. A bad file is reported with its reason and the rest
of the batch is still predicted; only when nothing is usable does the whole command fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mstcli.data.readers import READERS, SUFFIX_KINDS, BadInput, RawInput, read_input
from mstcli.data.row_scaling import GROUP_KEY
from mstcli.data.sources import FeatureStep, get_source
from mstcli.data.store import FeatureFile
from mstcli.engine.checkpoints import StudentCheckpoint
from mstcli.errors import UserError
from mstcli.models.trio import ModalNet, RunSpec


@dataclass
class Prediction:
    file: str
    probabilities: list[float]  # one per class, in the order of PredictReport.classes


@dataclass
class PredictReport:
    student: str  # the student's modality
    checkpoint: str
    classes: list[str]
    predictions: list[Prediction] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def to_dict(self, top: int) -> dict[str, Any]:
        """The JSON object of ``--json``: every prediction with its top classes and all probabilities."""
        return {
            "student": self.student,
            "checkpoint": self.checkpoint,
            "classes": self.classes,
            "predictions": [
                {
                    "file": p.file,
                    "class": self.top(p, 1)[0][0],
                    "probability": self.top(p, 1)[0][1],
                    "top": [{"class": c, "probability": q} for c, q in self.top(p, top)],
                    "probabilities": p.probabilities,
                }
                for p in self.predictions
            ],
            "errors": [{"file": f, "reason": r} for f, r in self.failures],
        }

    def top(self, prediction: Prediction, k: int) -> list[tuple[str, float]]:
        order = np.argsort(-np.asarray(prediction.probabilities), kind="stable")[:k]
        return [(self.classes[i], prediction.probabilities[i]) for i in order]


@dataclass
class Student:
    """A student net ready to predict, with what it needs to featurize raw inputs."""

    path: Path
    spec: RunSpec
    net: ModalNet
    fingerprint: str  # of the feature file it was trained on
    split_group: int = 0  # whose training rows a standardized array modality was scaled by

    @classmethod
    def load(cls, path: Path) -> Student:
        from mstcli.methods.tasks import task_kind

        checkpoint = StudentCheckpoint.load(path)
        spec = RunSpec.from_dict(checkpoint.spec)
        if task_kind(spec.task).dense:  # per-pixel logits: no class per input to show or export
            raise UserError(f"{path}: a per-pixel ({spec.task}) student; mst predict and export take per-sample ones")
        net = ModalNet(spec.build_student(), (spec.student,))
        net.net.load_state_dict(checkpoint.state)
        net.eval()
        return cls(path, spec, net, checkpoint.inputs["features"], int(checkpoint.inputs.get("split_group", 0)))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.spec.shapes[self.spec.student])

    def probabilities(self, rows: np.ndarray, batch_size: int) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(rows[start : start + batch_size]))
                out.append(torch.softmax(self.net({self.spec.student: batch}).float(), dim=1).numpy())
        return np.concatenate(out) if out else np.empty((0, self.spec.num_classes), dtype=np.float32)


def expand(
    inputs: list[Path], suffixes: Callable[[], set[str]] | None = None
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files to read: each folder becomes its files of ``suffixes()`` (what the student reads; default every readable
    suffix), sorted, not recursive; a folder without any is a failure. Named files are all kept (a wrong one is
    reported with its reason)."""
    files, failures = [], []
    for path in inputs:
        if path.is_dir():
            wanted = suffixes() if suffixes is not None else set(READERS)
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in wanted)
            if not found:
                failures.append((str(path), f"folder without input files of the student ({', '.join(sorted(wanted))})"))
            files.extend(found)
        else:
            files.append(path)
    return files, failures


class FeatureContext:
    """The feature file's records, opened only when a raw input needs them (``.npy`` rows do not)."""

    def __init__(self, path: Path, student: Student) -> None:
        self.path, self.student = path, student
        self._features: FeatureFile | None = None

    def records(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        if self._features is None:
            from mstcli.data.fingerprint import feature_fingerprint

            features = FeatureFile.open(self.path)
            if (
                features.dataset != self.student.spec.dataset
                or feature_fingerprint(features) != self.student.fingerprint
            ):
                raise UserError(
                    f"{self.student.path} was not trained on {self.path}: its feature step cannot be recovered "
                    "from it (prepare the run's data again or give .npy features)"
                )
            self._features = features
        state = self._features.transform(self.student.spec.student)
        if state is not None:  # the student's split group: a standardized array is scaled by its training rows
            state = {**state, GROUP_KEY: self.student.split_group}
        return self._features.params.get("prepare", {}), state

    def row_dtype(self) -> str:
        """The type of the student modality's stored rows (float32 features, uint8 pixels, int64 tokens), which its
        input batch must have; float32 when the feature file cannot tell (``.npy`` feature rows need no file)."""
        try:
            self.records()
        except UserError:
            return "float32"
        assert self._features is not None
        return self._features.dtype(self.student.spec.student)


def feature_rows(item: RawInput, name: str, shape: tuple[int, ...]) -> list[tuple[str, np.ndarray]]:
    """A ``.npy`` array as feature rows: one row of the student's shape, or a stack of them (named file[i])."""
    if item.data.shape == shape:
        return [(name, item.data)]
    if item.data.ndim == len(shape) + 1 and item.data.shape[1:] == shape:
        return [(f"{name}[{i}]", row) for i, row in enumerate(item.data)]
    raise BadInput(f"array of shape {item.data.shape}, the student reads {shape} (or N x {shape})")


class StepLookup:
    """The student modality's feature step, found once: from the registry, or (for data sets whose modalities the
    data names, a user's folder) from the kind prepare stored, which needs the feature file."""

    def __init__(self, context: FeatureContext) -> None:
        self.context = context
        self.source = get_source(context.student.spec.dataset)
        self._step: FeatureStep | None = None
        self._found = False

    def __call__(self) -> FeatureStep | None:
        if not self._found:
            modality = self.context.student.spec.student
            state = self.context.records()[1] if self.source.steps_need_state else None
            self._step, self._found = self.source.feature_step(modality, state), True
        return self._step


def student_suffixes(step: FeatureStep | None) -> set[str]:
    """The suffixes of the raw inputs a student's feature step reads, and .npy feature rows."""
    kinds = {"features", step.reads} if step is not None else {"features"}
    return {suffix for suffix, kind in SUFFIX_KINDS.items() if kind in kinds}


def _step_reads_features(find_step: StepLookup) -> bool:
    """Whether the student's feature step takes .npy rows (a folder's standardized array modality); where the
    data set has no step for them, the rows are features already."""
    if not find_step.source.steps_need_state:
        return False
    step = find_step()
    return step is not None and step.reads == "features"


def text_inputs(texts: list[str]) -> list[tuple[str, RawInput]]:
    """``--text`` strings as raw inputs, named by their first words."""
    named = []
    for text in texts:
        name = " ".join(text.split())
        named.append((f'"{name[:40]}{"..." if len(name) > 40 else ""}"', RawInput("text", text)))
    return named


def featurize(
    step: FeatureStep, items: list[RawInput], context: FeatureContext, batch_size: int
) -> list[np.ndarray | BadInput]:
    """Each input's feature row, or the BadInput that its file turned out to be (a clip whose header reads but
    whose samples do not): a batch with a bad file is featurized again one input at a time, so the others are
    still predicted."""
    out: list[np.ndarray | BadInput] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        try:
            out.extend(step.apply(batch, *context.records()))
            continue
        except BadInput:
            pass
        for item in batch:
            try:
                out.append(step.apply([item], *context.records())[0])
            except BadInput as exc:
                out.append(exc)
    return out


def predict_files(
    inputs: list[Path], student_path: Path, features_path: Path, batch_size: int = 256, texts: list[str] = ()
) -> PredictReport:
    """Predict every usable input (files, and ``texts`` for a text student); unusable ones are listed with their
    reason. Raises UserError when the student cannot be loaded or no input is usable."""
    student = Student.load(student_path)
    spec = student.spec
    context = FeatureContext(features_path, student)
    find_step = StepLookup(context)
    report = PredictReport(spec.student, str(student_path), list(spec.class_names))
    files, report.failures = expand(inputs, lambda: student_suffixes(find_step()))

    named: list[tuple[str, np.ndarray | None]] = []  # feature rows in input order; None: a raw input, below
    raw: list[tuple[int, RawInput]] = []
    readings: list[tuple[str, Any]] = [(str(path), path) for path in files] + list(text_inputs(list(texts)))
    for name, given in readings:
        try:
            item = read_input(given) if isinstance(given, Path) else given
            if item.kind == "features":
                rows = feature_rows(item, name, student.shape)
                if not _step_reads_features(find_step):
                    named.extend(rows)
                    continue
                for row_name, row in rows:  # an array the folder's step standardizes, as the stages read it
                    raw.append((len(named), RawInput("features", row, path=item.path)))
                    named.append((row_name, None))
                continue
            step = find_step()
            if step is None:
                raise BadInput(f"no feature step for raw {item.kind} inputs of {spec.dataset}: give .npy features")
            if item.kind != step.reads:
                raise BadInput(
                    f"a{'n' if item.kind[0] in 'aeiou' else ''} {item.kind} file, the student reads {spec.student}"
                )
            step.check(item, *context.records())
        except BadInput as exc:
            report.failures.append((name, str(exc)))
            continue
        raw.append((len(named), item))
        named.append((name, None))

    if raw:
        step = find_step()
        assert step is not None
        rows = featurize(step, [item for _, item in raw], context, batch_size)
        for (position, _), row in zip(raw, rows, strict=True):
            if isinstance(row, BadInput):
                report.failures.append((named[position][0], str(row)))
            named[position] = (named[position][0], row)
        named = [(name, row) for name, row in named if not isinstance(row, BadInput)]

    if not named:
        if not report.failures:
            raise UserError("no inputs given")
        file, reason = report.failures[0]
        more = f" (and {len(report.failures) - 1} more bad inputs)" if len(report.failures) > 1 else ""
        raise UserError(f"{file}: {reason}{more}")
    batch = np.stack([row for _, row in named]).astype(context.row_dtype(), copy=False)
    probabilities = student.probabilities(batch, batch_size)
    report.predictions = [Prediction(name, p.tolist()) for (name, _), p in zip(named, probabilities, strict=True)]
    return report
