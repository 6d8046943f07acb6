"""``mst eval``: the student alone, on its own modality, on the test split of the group it was trained on.

``metrics.json`` keeps the keys ``mst compare`` and the bench scripts read (method, teacher, student, seed,
accuracy, ...) and adds ``provenance``: the settings the student was trained with (from its checkpoint, so a
``mst distill --method kd`` student is recorded as kd, whatever params.yaml says now) with this eval's own
section, the method's constants, the data, and the code, versions and device of this test (those of the training
under ``provenance.student``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mstcli.atomic_write import write_json, write_text
from mstcli.config import Params
from mstcli.data.store import FeatureFile
from mstcli.engine import distributed
from mstcli.engine.checkpoints import StudentCheckpoint
from mstcli.engine.logbook import log_final
from mstcli.engine.provenance import result_provenance
from mstcli.engine.run_lock import run_lock
from mstcli.engine.runtime import setup_runtime
from mstcli.engine.splits import load_splits
from mstcli.methods.tasks import task_kind
from mstcli.models.trio import ModalNet, RunSpec, check_models
from mstcli.stages.paths import RunPaths


def evaluate(params: Params, features_path: Path, student_path: Path, metrics_path: Path, confusion_path: Path) -> dict:
    """Test the student -> ``metrics_path`` (with provenance), ``confusion_path`` and the dvclive summary of the
    test figures in ``metrics_path``'s folder ``eval/`` (the run's DVC metrics), holding the lock of run common.run
    shared (it only reads the run: the students of a run are tested side by side) and its own results folder's
    exclusively (engine/run_lock.py)."""
    paths = RunPaths(params.common.run)
    with run_lock(paths.models, paths.run, "mst eval", shared=True, outputs=[metrics_path.parent]):
        checkpoint = StudentCheckpoint.load(student_path)
        features = FeatureFile.open(features_path)
        group = checkpoint.inputs["split_group"]  # a student is tested on the test split of the group it learned on
        checkpoint.check_inputs(student_path, features, group)
        device = setup_runtime(params.common.device, params.common.threads, group)
        check_models(student_path, checkpoint.spec, params.models)
        spec = RunSpec.from_dict(checkpoint.spec)
        student = ModalNet(spec.build_student(), (spec.student,))
        student.net.load_state_dict(checkpoint.state)
        student.to(device).eval()
        test = load_splits(features, group, [spec.student], device, names=("test",), memory_mb=params.common.memory_mb)
        test = test["test"]
        kind = task_kind(spec.task)  # per-sample or per-pixel figures (methods/tasks.py)
        metrics, confusion_text = kind.test_metrics(student, test, params.eval.batch_size, list(spec.class_names))
        confusion = metrics.pop("confusion")
        report = {
            "student": spec.student,
            "method": checkpoint.method,
            "teacher": checkpoint.teacher,
            "split_group": group,
            "seed": group,  # common.seed is both the seed and the split group
            "best_epoch": checkpoint.best_epoch,
            # which constants a comparison method ran with: the set and the values (empty for mst and none)
            "baseline_settings": checkpoint.settings.get("baseline_settings") if checkpoint.method_constants else None,
            "method_constants": checkpoint.method_constants,
            **metrics,
            "provenance": _provenance(params, features, group, device, checkpoint),
        }
        if distributed.is_main():  # one writer under torchrun; the others wait until the outputs exist
            write_json(metrics_path, report)
            keys = ("accuracy", "macro_f1", "per_class_accuracy", "n_test", "best_epoch", *DENSE_KEYS)
            figures = {k: report[k] for k in keys if k in report}
            logged = {"common": dataclasses.asdict(params.common), "eval": dataclasses.asdict(params.eval)}
            log_final(metrics_path.parent / "eval", logged, figures)
            write_text(confusion_path, confusion_text)
        distributed.barrier()
        report["confusion"] = confusion
        return report


DENSE_KEYS = ("mean_class_accuracy", "miou", "per_class_iou", "n_pixels")


def _provenance(params: Params, features: FeatureFile, group: int, device, checkpoint: StudentCheckpoint) -> dict:
    trained = checkpoint.provenance
    origin = result_provenance(params, features, group, device, trained.get("method"))
    origin["settings"] = {**trained.get("settings", origin["settings"]), "eval": dataclasses.asdict(params.eval)}
    origin["student"] = {key: trained.get(key) for key in ("code", "versions", "device")}
    return origin
