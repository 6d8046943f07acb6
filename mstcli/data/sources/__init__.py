"""Data-set sources: how each data set's own on-disk format becomes an mst feature file.

One module per data set registers a :class:`DataSource`; ``mst prepare`` looks the name up here and
nothing else in mst needs to change for a new data set.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mstcli.errors import UserError

# A builder reads the source at `source` with the prepare settings and writes the feature file `out`.
Builder = Callable[[Path, Any, Path, dict[str, Any]], None]


@dataclass(frozen=True)
class FeatureStep:
    """How one new raw input of a modality becomes a feature row the way prepare made the data set's rows, for
    ``mst predict``. Both functions get the prepare settings recorded in the feature file and the modality's
    stored state (``FeatureFile.transform``, None when the file has none), so no parameter is typed twice."""

    reads: str  # the kind of raw input it takes (mstcli.data.readers.RawInput.kind)
    check: Callable[[Any, dict[str, Any], dict[str, Any] | None], None]  # raises readers.BadInput
    apply: Callable[[list[Any], dict[str, Any], dict[str, Any] | None], Any]  # inputs -> N x feature shape
    # the same step as a torch module for ``mst export`` (-> data.graphs.FeatureGraph); None: the exported graph
    # reads feature rows and the step stays outside it
    graph: Callable[[dict[str, Any], dict[str, Any] | None], Any] | None = None


@dataclass(frozen=True)
class DataSource:
    name: str
    modalities: tuple[str, ...]  # empty: named by the source itself (a user's folder)
    default_source: str | None
    description: str
    build: Builder
    feature_steps: dict[str, FeatureStep] = field(default_factory=dict)  # modality -> step; empty: only .npy
    # for sources whose modalities are named by the data (a user's folder): the step of a modality, chosen by the
    # state prepare stored for it (FeatureFile.transform); None: the modality's files are feature rows already
    step_for: Callable[[str, dict[str, Any] | None], FeatureStep | None] | None = None
    # whether ``build`` takes ``readers=`` (folder.net_inputs.Readers: the run's nets by modality), for sources whose
    # rows follow the nets that read them (a user's folder); the built-in sources store float features for any net
    takes_readers: bool = False
    # modalities that are pictures stored as (C, H, W) maps, which ``train.augment`` may crop and mirror (a user's
    # folder marks its own: a modality of kind image stored as pixels)
    pictures: tuple[str, ...] = ()

    @property
    def steps_need_state(self) -> bool:
        """Whether finding a modality's feature step needs the feature file's stored state."""
        return self.step_for is not None

    def feature_step(self, modality: str, state: dict[str, Any] | None) -> FeatureStep | None:
        if self.step_for is not None:
            return self.step_for(modality, state)
        return self.feature_steps.get(modality)


_MODULES = ("avdigits", "avdigits3", "avmnist", "ravdess", "vggsound", "crisismmd", "nyudepth", "folder")
_REGISTRY: dict[str, DataSource] = {}


def register(source: DataSource) -> DataSource:
    _REGISTRY[source.name] = source
    return source


def all_sources() -> dict[str, DataSource]:
    for module in _MODULES:
        importlib.import_module(f"mstcli.data.sources.{module}")
    return dict(_REGISTRY)


def get_source(name: str) -> DataSource:
    sources = all_sources()
    if name not in sources:
        raise UserError(f"unknown data set '{name}' (known: {', '.join(sorted(sources))})")
    return sources[name]
