"""``mst prepare``: a data set's source -> ``data/features/<dataset>.h5``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mstcli.config import Params
from mstcli.data.sources import get_source
from mstcli.errors import UserError

FEATURES_DIR = Path("data/features")


def feature_path(dataset: str) -> Path:
    return FEATURES_DIR / f"{dataset}.h5"


def prepare(params: Params, out: Path | None = None) -> Path:
    source = get_source(params.common.dataset)
    location = params.prepare.source or source.default_source
    if location is None:
        raise UserError(f"data set '{source.name}' needs prepare.source (its folder or file)")
    location = Path(location).expanduser()
    if not location.exists():
        raise UserError(f"prepare.source not found: {location}")
    out = Path(out) if out is not None else feature_path(source.name)
    meta = {"dataset": source.name, "source": str(location), "prepare": dataclasses.asdict(params.prepare)}
    source.build(location, params.prepare, out, meta)
    return out
