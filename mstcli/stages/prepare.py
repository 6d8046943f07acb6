"""``mst prepare``: a data set's source -> ``data/features/<dataset>.h5``."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from mstcli.config import Params
from mstcli.data.sources import get_source
from mstcli.errors import UserError

FEATURES_DIR = Path("data/features")


def feature_path(dataset: str) -> Path:
    return FEATURES_DIR / f"{dataset}.h5"


def check_out(out: Path, dataset: str, option: str = "--out") -> None:
    """Refuse an output path that cannot become the feature file before any work: preparing can take long,
    and the atomic rename at its very end would otherwise fail with a traceback (IsADirectoryError, ...)."""
    if out.is_dir():
        raise UserError(f"{option} {out} is a folder; give a file path such as {out / f'{dataset}.h5'}")
    existing = out.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UserError(f"cannot write {option} {out}: {existing} is a file, so the folder {out.parent} cannot be made")
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {option} {out}: no permission to write in {existing}")


def prepare(params: Params, out: Path | None = None) -> Path:
    source = get_source(params.common.dataset)
    target = Path(out) if out is not None else feature_path(source.name)
    check_out(target, source.name, "--out" if out is not None else "output")
    location = params.prepare.source or source.default_source
    if location is None:
        raise UserError(f"data set '{source.name}' needs prepare.source (its folder or file)")
    location = Path(location).expanduser()
    if not location.exists():
        raise UserError(f"prepare.source not found: {location}")
    meta = {"dataset": source.name, "source": str(location), "prepare": dataclasses.asdict(params.prepare)}
    if source.takes_readers:  # a folder's rows follow the nets that read them (models, common.student)
        from mstcli.data.folder.net_inputs import Readers

        source.build(location, params.prepare, target, meta, readers=Readers.of(params))
    else:
        source.build(location, params.prepare, target, meta)
    return target
