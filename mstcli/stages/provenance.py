"""What a stage records about where its result came from, and the key that lets a killed stage resume.

Every checkpoint records its inputs (data set, feature-file fingerprint, split group); the resume key is a digest
of the stage's settings, the ``common`` settings that change its numbers, and the fingerprints of its inputs, so a
rerun continues a killed stage only when it would compute the same thing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mstcli.config import Params
from mstcli.data.fingerprint import feature_fingerprint
from mstcli.data.store import FeatureFile
from mstcli.engine.checkpoints import Inputs
from mstcli.engine.resume import resume_key

# common settings that change a stage's numbers (run, threads and memory_mb do not)
RESULT_COMMON = ("dataset", "student", "seed", "device", "precision", "compile", "deterministic")


def stage_inputs(features: FeatureFile, split_group: int) -> dict[str, Any]:
    return dataclasses.asdict(Inputs(features.dataset, feature_fingerprint(features), split_group))


def stage_key(stage: str, params: Params, settings: Any, inputs: dict[str, Any], **more_inputs: Any) -> str:
    common = {name: getattr(params.common, name) for name in RESULT_COMMON}
    return resume_key(stage, {"common": common, stage: dataclasses.asdict(settings)}, {**inputs, **more_inputs})
