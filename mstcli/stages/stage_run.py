"""How a training stage (S1, S2, S3) runs its epochs on the engine: resumably, under the key that says when a
killed run may be continued, with its dvclive log.

The resume key is a digest of the stage's settings, the ``common`` settings that change its numbers, and the
fingerprints of its inputs (engine/provenance.py's ``stage_inputs``), so a rerun continues a killed stage only when
it would compute the same thing. What a result records about where it came from is engine/provenance.py's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mstcli.config import Params
from mstcli.engine import distributed
from mstcli.engine.augment import ImageAugment
from mstcli.engine.logbook import Logbook, SilentLogbook
from mstcli.engine.loop import EpochTask, LoopConfig, LoopResult, run_epochs
from mstcli.engine.resume import ResumeStore, resume_key
from mstcli.engine.splits import Split

# common settings that change a stage's numbers (run, threads and memory_mb do not)
RESULT_COMMON = ("dataset", "student", "seed", "device", "precision", "compile", "deterministic")


def stage_logbook(folder: Path, stage: str, params: Params, settings: Any, routing: bool = False) -> Logbook:
    """The dvclive log of a stage run in ``folder``, with the settings it reads (its section and ``common``).
    ``routing``: keys with "@" are routing shares of specialized teachers (S3)."""
    if not distributed.is_main():
        return SilentLogbook()
    logged = {"common": dataclasses.asdict(params.common), stage: dataclasses.asdict(settings)}
    return Logbook(folder, logged, (lambda key: "@" in key) if routing else None)


def stage_key(stage: str, params: Params, settings: Any, inputs: dict[str, Any], **more_inputs: Any) -> str:
    common = {name: getattr(params.common, name) for name in RESULT_COMMON}
    return resume_key(stage, {"common": common, stage: dataclasses.asdict(settings)}, {**inputs, **more_inputs})


def run_stage(
    task: EpochTask,
    train: Split,
    params: Params,
    settings: Any,
    device: Any,
    output: Path,
    key: str,
    restart: bool,
    order_seed: int,
    logbook: Logbook | None = None,
    augment: ImageAugment | None = None,
) -> tuple[LoopResult, ResumeStore]:
    """A stage's epochs on the engine, resumable from ``output``'s resume state. The caller writes its outputs,
    then clears the returned store (a state removed earlier would be lost if writing the outputs failed)."""
    store = ResumeStore.for_output(output, key, restart and distributed.is_main())
    distributed.barrier()  # under torchrun: no rank reads the resume state before rank 0 has cleared it
    config = LoopConfig(
        settings.epochs,
        settings.batch_size,
        device,
        params.common.precision,
        order_seed=order_seed,
        resume_every=params.common.resume_every,
        augment=augment,
    )
    try:
        return run_epochs(task, train, config, store, logbook=logbook), store
    except BaseException:
        if logbook is not None:
            logbook.discard()
        raise
