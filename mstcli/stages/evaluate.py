"""``mst eval``: the student alone, on its own modality, on the test split of the group it was trained on."""

from __future__ import annotations

from pathlib import Path

from mstcli.config import Params
from mstcli.data.store import FeatureFile
from mstcli.engine.splits import load_splits
from mstcli.engine.evaluation import classification_metrics, predict
from mstcli.engine import distributed
from mstcli.engine.checkpoints import StudentCheckpoint
from mstcli.engine.outputs import write_json, write_text
from mstcli.engine.runtime import setup_runtime
from mstcli.models.trio import ModalNet, RunSpec


def evaluate(params: Params, features_path: Path, student_path: Path, metrics_path: Path, confusion_path: Path) -> dict:
    checkpoint = StudentCheckpoint.load(student_path)
    features = FeatureFile.open(features_path)
    group = checkpoint.inputs["split_group"]  # a student is tested on the test split of the group it learned on
    checkpoint.check_inputs(student_path, features, group)
    device = setup_runtime(params.common.device, params.common.threads, group)
    spec = RunSpec.from_dict(checkpoint.spec)
    student = ModalNet(spec.build_student(), (spec.student,))
    student.net.load_state_dict(checkpoint.state)
    student.to(device).eval()
    test = load_splits(features, group, [spec.student], device, names=("test",), memory_mb=params.common.memory_mb)
    test = test["test"]
    predicted = predict(student, test, params.eval.batch_size).argmax(1).cpu().numpy()
    actual = test.labels.cpu().numpy()
    metrics = classification_metrics(predicted, actual, list(spec.class_names))
    confusion = metrics.pop("confusion")
    report = {
        "student": spec.student,
        "method": checkpoint.method,
        "teacher": checkpoint.teacher,
        "split_group": group,
        "seed": group,  # common.seed is both the seed and the split group
        "best_epoch": checkpoint.best_epoch,
        **metrics,
    }
    if distributed.is_main():  # one writer under torchrun; the others wait until the outputs exist
        write_json(metrics_path, report)
        lines = ["actual,predicted"] + [
            f"{spec.class_names[a]},{spec.class_names[p]}" for a, p in zip(actual.tolist(), predicted.tolist())
        ]
        write_text(confusion_path, "\n".join(lines) + "\n")
    distributed.barrier()
    report["confusion"] = confusion
    return report
