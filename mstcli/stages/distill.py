"""``mst distill``: S3 (docs/method.md §2.4) or a comparison method, then best-student selection.

The method (``methods/registry.py``) says how a batch becomes a loss; this stage owns the rest: the student (the
stage-1 one continued, or a fresh one), the Adam over the student and the method's extra modules, validation, and
selection: after each epoch the student's CE on the validation split (its own modality only) decides which state
is kept, the lowest, as in the reference. Every per-epoch statistic of the method goes into the stage's dvclive log
(engine/logbook.py); the routing frequencies of the specialized teachers (keys with "@") form its routing plot.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from mstcli.config import Params
from mstcli.data.store import FeatureFile
from mstcli.engine import distributed
from mstcli.engine.augment import ImageAugment, describe_augment, training_augment
from mstcli.engine.checkpoints import MasksCheckpoint, StudentCheckpoint
from mstcli.engine.loop import EpochEnd, EpochTask
from mstcli.engine.provenance import result_provenance, stage_inputs
from mstcli.engine.run_lock import run_lock
from mstcli.engine.runtime import maybe_compile, runtime_for
from mstcli.engine.splits import Split, load_splits
from mstcli.errors import UserError
from mstcli.methods.base import DistillContext, DistillMethod
from mstcli.methods.baselines.teachers import teacher_net
from mstcli.methods.constants import constants_record
from mstcli.methods.mst.experts import masks_from_records
from mstcli.methods.records import method_record
from mstcli.methods.registry import entry, method_class
from mstcli.methods.tasks import task_kind
from mstcli.methods.teacher_check import TeacherCheck, check_student, check_teacher, student_warning
from mstcli.models.chosen import keep_frozen
from mstcli.models.trio import ALL_TEACHERS, ModalNet, RunSpec, Trio, load_frozen_trio
from mstcli.stages.paths import RunPaths
from mstcli.stages.stage_run import run_stage, stage_key, stage_logbook
from mstcli.ui import logger


class Distillation(EpochTask):
    """S3's own part: the student and the method's extra modules learn the method's loss; the student with the
    lowest validation CE is kept."""

    def __init__(
        self,
        method: DistillMethod,
        student: ModalNet,
        val: Split,
        lr: float,
        device: torch.device,
        precision: str,
        task: str = "classification",
    ) -> None:
        self.method, self.student, self.val = method, student, val
        self.device, self.precision = device, precision
        self.kind = task_kind(task)  # per-sample or per-pixel accuracy and validation (methods/tasks.py)
        self.name = f"S3 {method.name}"
        trainable = [p for m in [student, *method.extra_modules()] for p in m.parameters()]
        self.optimizer = method.make_optimizer(trainable, lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, **{f"extra{i}": m for i, m in enumerate(self.method.extra_modules())}}

    def start_epoch(self, epoch: int) -> None:
        self.method.start_epoch(epoch)

    def train_mode(self) -> None:
        self.student.train()
        self.method.train(True)

    def batch_loss(self, batch: Split):
        logits = self.student(batch.inputs)
        loss, terms = self.method.loss(batch, logits)
        with torch.no_grad():  # the student's train accuracy, a curve only
            acc = self.kind.accuracy(logits, batch.labels)
        return loss, {**terms, "acc": acc}

    def end_epoch(self, epoch: int) -> EpochEnd:
        stats = self.method.end_epoch(epoch)
        self.student.eval()
        self.method.train(False)
        val_ce, val_acc = self.kind.val_loss_and_accuracy(
            self.student, self.val, self.kind.val_batch, self.device, self.precision
        )
        row = {**stats, "val_ce": val_ce, "val_acc": val_acc}
        shown = {k: v for k, v in row.items() if "@" not in k}  # routing shares: the routing plot, not the line
        # an epoch the method does not let be kept has no score: the engine then takes the next scored one
        return EpochEnd(row, score=val_ce if self.method.selectable(epoch) else None, shown=shown)

    def selected_state(self) -> dict:
        return self.student.net.state_dict()

    def state_dict(self) -> dict:
        return {"method": self.method.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state["method"])


@dataclasses.dataclass
class DistillSetup:
    """Everything S3 has built before its first epoch: the task on the engine and what it was made from."""

    task: Distillation
    train: Split
    trio: Trio
    method: DistillMethod
    features: FeatureFile
    device: torch.device
    masks_fingerprint: str | None
    teacher_check: TeacherCheck | None = None  # a comparison method's teacher against chance (methods/teacher_check.py)
    augment: ImageAugment | None = None  # train.augment on the training batches (engine/augment.py)


def _teacher_key(spec: RunSpec, settings, cls: type[DistillMethod]) -> str:
    """``distill.teacher`` as a key of the run's teachers (``cm:<the CM modality>`` of a two-modality run is ``cm``),
    or a one-line error; methods with a fixed teacher (MST-Distill, the student alone) ignore it."""
    if entry(settings.method).fixed_teacher is not None:
        return settings.teacher
    if settings.teacher == ALL_TEACHERS:
        if not cls.takes_all_teachers:
            raise UserError(f"distill.teacher=all: {settings.method} distills from one teacher (only kd takes all)")
        return ALL_TEACHERS
    return spec.teacher_key(settings.teacher)


def setup_distillation(params: Params, features_path: Path, stage1_path: Path, masks_path: Path | None) -> DistillSetup:
    """The stage's set-up (nets, MaskNets, splits, the method with its banks, the task), apart from its epochs so
    that ``mst bench stages`` and ``mst bench speed`` can time the epochs of two methods side by side."""
    settings, common = params.distill, params.common
    features = FeatureFile.open(features_path)
    device = runtime_for(common)
    trio = load_frozen_trio(stage1_path, features, common.seed, device, common.student, params.models)
    cls = method_class(settings.method)
    settings = dataclasses.replace(settings, teacher=_teacher_key(trio.spec, settings, cls))
    cls.check_run(settings, trio.spec)
    augment = training_augment(params.train, features, list(trio.spec.modalities))
    if augment is not None:
        logger().info(describe_augment(augment))
        if settings.bank:
            settings = dataclasses.replace(settings, bank=False)
            logger().info("distill.bank off while augmenting: the teachers see each epoch's crops, batch by batch")
    task_kind(trio.spec.task).check_method(settings.method)
    for name in settings.constants:  # every override is checked before anything slow, not only the chosen one's
        method_class(name).constants_for(settings)
    masks, masks_fingerprint = _masks(cls, masks_path, trio) if cls.needs_masks else (None, None)
    splits = load_splits(
        features, common.seed, list(trio.spec.modalities), device, names=("train", "val"), memory_mb=common.memory_mb
    )
    check = None
    if entry(settings.method).fixed_teacher is None:
        teacher = teacher_net(trio, settings.teacher, settings.temperature)
        check = check_teacher(settings.teacher, teacher, splits["val"])
        if check.at_chance and distributed.is_main():
            logger().warning(check.warning(settings.method))
    student = _initial_student(trio, settings.student_init, cls.continues_stage1, device)
    method = cls(DistillContext(settings, trio, student, splits, device, masks, common.compile, common.memory_mb))
    maybe_compile(student.net, common.compile)
    task = Distillation(method, student, splits["val"], settings.lr, device, common.precision, trio.spec.task)
    return DistillSetup(task, splits["train"], trio, method, features, device, masks_fingerprint, check, augment)


def distill(
    params: Params,
    features_path: Path,
    stage1_path: Path,
    masks_path: Path | None,
    out: Path,
    log_dir: Path,
    restart: bool = False,
) -> dict:
    """S3 (or a comparison method) -> ``out`` (student checkpoint) and its dvclive log in ``log_dir``, holding the
    lock of run common.run shared (it only reads the run's stage-1 and masks: the cells of a benchmark run side by
    side) and ``out`` and ``log_dir`` exclusively (engine/run_lock.py)."""
    paths = RunPaths(params.common.run)
    with run_lock(paths.models, paths.run, "mst distill", shared=True, outputs=[out, log_dir]):
        settings, common = params.distill, params.common
        setup = setup_distillation(params, features_path, stage1_path, masks_path)
        task, trio, method, features, device = setup.task, setup.trio, setup.method, setup.features, setup.device
        masks_fingerprint = setup.masks_fingerprint
        inputs = stage_inputs(features, common.seed)
        augmented = {"augment": dataclasses.asdict(setup.augment)} if setup.augment is not None else {}
        key = stage_key(
            "distill", params, settings, inputs, stage1=trio.fingerprint, masks=masks_fingerprint, **augmented
        )
        logbook = stage_logbook(log_dir, "distill", params, settings, routing=True)
        result, store = run_stage(
            task,
            setup.train,
            params,
            settings,
            device,
            out,
            key,
            restart,
            order_seed=common.seed + 1,
            logbook=logbook,
            augment=setup.augment,
        )
        student_check = None
        if not features.dense:
            best = next(row for row in result.rows if row["epoch"] == result.best_epoch)
            student_check = check_student(float(best["val_acc"]), setup.task.val)
            if student_check.at_chance and distributed.is_main():
                logger().warning(student_warning(student_check, settings.method))
        if distributed.is_main():  # one writer under torchrun; the others wait until the outputs exist
            StudentCheckpoint(
                spec=trio.spec.to_dict(),
                inputs=inputs,
                settings=dataclasses.asdict(settings),
                provenance=result_provenance(
                    params,
                    features,
                    common.seed,
                    device,
                    {
                        **method_record(settings.method),
                        "baseline_settings": settings.baseline_settings,
                        "method_constants": constants_record(method.constants),
                        "teacher_check": setup.teacher_check.record() if setup.teacher_check else None,
                        "student_check": student_check.record() if student_check else None,
                    },
                ),
                state=result.best_state if result.best_state is not None else task.selected_state(),
                method=settings.method,
                teacher=method.teacher_label(entry(method.name).fixed_teacher),
                best_epoch=result.best_epoch,
                val_ce=result.best_score,
                stage1=trio.fingerprint,
                method_constants=constants_record(method.constants),
            ).save(out)
            logbook.close({"best_epoch": result.best_epoch, "best_val_ce": result.best_score})
            store.clear()
        distributed.barrier()
        return {"best_epoch": result.best_epoch, "val_ce": result.best_score}


def _masks(cls: type[DistillMethod], masks_path: Path | None, trio: Trio) -> tuple[list, str]:
    """The S2 MaskNets for a method that needs them, checked against the stage-1 nets they were fitted to."""
    if masks_path is None:
        raise UserError(f"--method {cls.name} needs the MaskNets of `mst fit-masks` (models/<run>/masks.pt)")
    checkpoint = MasksCheckpoint.load(masks_path)
    checkpoint.check_stage1(masks_path, trio.fingerprint)
    return masks_from_records(checkpoint.masks), checkpoint.fingerprint()


def with_baseline_budget(params: Params) -> Params:
    """The project's rule for a baseline trained from scratch: train.epochs + distill.epochs epochs, as many passes
    over the data as the MST student gets in S1 and S3 together."""
    epochs = params.train.epochs + params.distill.epochs
    return dataclasses.replace(params, distill=dataclasses.replace(params.distill, epochs=epochs))


def _initial_student(trio: Trio, init: str, continues_stage1: bool, device: torch.device) -> ModalNet:
    """The stage-1 student (continued, as MST does) or a fresh one (as the reference's baselines)."""
    if init == "stage1" or (init == "auto" and continues_stage1):
        student = trio.student
    else:
        student = ModalNet(trio.spec.build_student(load_weights=True), (trio.spec.student,)).to(device)
    student.requires_grad_(True)
    keep_frozen(student.net)  # models.freeze.student: those weights stay as they are
    return student
