"""A stage's log through dvclive, DVC's own logger: per-epoch curves, the settings it used, its final figures.

One folder per stage run (``results/<run>/train``, ``fit_masks``, ``distill``), in dvclive's layout:

- ``plots/metrics/<key>.tsv``: one curve per key of the engine's epoch rows (``step`` = 0-based epoch), e.g.
  ``loss``, ``student_acc`` (train), ``val_student_acc``, ``val_ce``, ``epoch_s``;
- ``plots/custom/routing.json`` (S3 with specialized teachers): the routing share of every specialized teacher
  per epoch in long form (``epoch``, ``teacher``, ``share``), drawn with one line per teacher by the DVC template
  ``.dvc/plots/routing.json``;
- ``metrics.json``: the last epoch's values plus what the stage selected (``best_epoch``, ``best_score``), without
  the per-teacher terms and timings (they stay in the curves), so that ``dvc metrics show`` / ``dvc exp show``
  stay readable;
- ``params.yaml``: the settings the stage ran with.

``mst eval`` logs its test figures the same way (:func:`log_final`, ``results/<run>/eval``): those are the DVC
metrics of a run, while ``results/<run>/metrics.json`` adds the provenance record for ``mst compare`` and people.

dvc.yaml declares these files (the curves and params as cached outputs, the summary as metrics, the figures as
top-level plots), so dvclive is told not to write a dvc.yaml of its own and not to save experiments. It is also
kept away from the repository altogether: dvclive would otherwise open the DVC repo, read git, look for a Studio
token and even ``dvc init`` a bare git checkout; a stage's log needs none of that, and must work the same inside
``dvc repro``, ``dvc exp run``, a test's temporary folder and a plain folder.

Like every output, a log is written under a temporary name (``results/<run>/.<stage>.live/``, where dvclive writes
as the epochs go, for a look at a running stage) and renamed when the stage has written its outputs; a stage that stops
with an error (NaN guard, bad input) removes it, and one that is killed leaves only that hidden folder, so no log
can pass for a finished one. A resumed stage starts the log afresh and
replays the curves kept in its resume state, so its log is the same as an uninterrupted run's.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROUTING = "routing"  # the custom plot of the routing shares
SUMMARY_LEFT_OUT = ("step", "epoch_s")

os.environ.setdefault("DVC_STUDIO_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def _offline_live(folder: Path, params: dict[str, Any]):
    from dvclive import Live

    class OfflineLive(Live):
        def _init_dvc(self) -> None:  # no repo, no git, no Studio, no experiment: files only
            self._save_dvc_exp = False

    live = OfflineLive(str(folder), save_dvc_exp=False, dvcyaml=False, report=None)
    live.log_params(params)
    return live


class Logbook:
    """The dvclive log of one stage run. ``is_routing(key)`` picks the keys that are routing shares."""

    def __init__(self, folder: Path, params: dict[str, Any], is_routing: Callable[[str], bool] | None = None):
        self.folder = Path(folder)
        self.is_routing = is_routing or (lambda key: False)
        self._live = _offline_live(_fresh(live_folder(self.folder)), params)
        self._routing: list[dict[str, Any]] = []

    def epoch(self, row: dict[str, Any]) -> None:
        """Log one epoch row of the engine (``epoch`` is the step)."""
        self._live.step = int(row["epoch"])
        shares = {}
        for key, value in row.items():
            if key == "epoch" or not isinstance(value, (int, float)):
                continue
            if self.is_routing(key):
                shares[key] = float(value)
            else:
                self._live.log_metric(key, float(value))
        if shares:
            self._routing += [{"epoch": int(row["epoch"]), "teacher": k, "share": v} for k, v in shares.items()]
            self._live.log_plot(ROUTING, self._routing, x="epoch", y="share", title="routing share per teacher")
        self._live.next_step()

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Finish the log; ``summary`` (e.g. the selected epoch) joins the last epoch's values in metrics.json."""
        kept = {k: v for k, v in self._live.summary.items() if k not in SUMMARY_LEFT_OUT and "@" not in k}
        for key, value in (summary or {}).items():
            if value is not None and isinstance(value, (int, float)) and math.isfinite(value):
                kept[key] = value
        self._live.summary = kept
        self._live.end()
        _publish(live_folder(self.folder), self.folder)

    def discard(self) -> None:
        """Drop the unfinished log (the stage stopped with an error)."""
        shutil.rmtree(live_folder(self.folder), ignore_errors=True)


class SilentLogbook(Logbook):
    """The log of a torchrun process other than rank 0: the epochs are the same on every rank, so only rank 0
    writes them (two processes renaming the same folder would race)."""

    def __init__(self) -> None:
        pass

    def epoch(self, row: dict[str, Any]) -> None:
        pass

    def close(self, summary: dict[str, Any] | None = None) -> None:
        pass

    def discard(self) -> None:
        pass


def log_final(folder: Path, params: dict[str, Any], values: dict[str, Any]) -> None:
    """A result without epochs (the test figures of ``mst eval``): its numbers, nested dicts as ``a/b``, and the
    settings, as a dvclive summary in ``folder``."""
    folder = Path(folder)
    live = _offline_live(_fresh(live_folder(folder)), params)

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}/{key}" if prefix else str(key), inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            live.log_metric(prefix, value, plot=False)

    walk("", values)
    live.end()
    _publish(live_folder(folder), folder)


def live_folder(folder: Path) -> Path:
    """Where the log of ``folder`` is written until it is complete."""
    return folder.parent / f".{folder.name}.live"


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _publish(tmp: Path, folder: Path) -> None:
    """Replace ``folder`` by the finished log ``tmp``."""
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def read_curves(folder: Path) -> list[dict[str, Any]]:
    """The epoch rows back from a stage's log folder: ``[{"epoch": 0, "loss": ..., "mm@conv1": share, ...}]``."""
    folder = Path(folder)
    rows: dict[int, dict[str, Any]] = {}
    metrics = folder / "plots" / "metrics"
    for path in sorted(metrics.rglob("*.tsv")):
        lines = path.read_text().splitlines()
        if not lines:
            continue
        header = lines[0].split("\t")
        for line in lines[1:]:
            # not strict: a last row cut short by a killed run keeps the columns it has, as before
            values = dict(zip(header, line.split("\t"), strict=False))
            step = int(values.pop("step"))
            for key, text in values.items():
                rows.setdefault(step, {"epoch": step})[key] = float(text)
    routing = folder / "plots" / "custom" / f"{ROUTING}.json"
    if routing.exists():
        for point in json.loads(routing.read_text()):
            rows.setdefault(int(point["epoch"]), {"epoch": int(point["epoch"])})[point["teacher"]] = point["share"]
    return [rows[step] for step in sorted(rows)]


def routing_teachers(folder: Path) -> list[str]:
    """The specialized teachers in a stage log's routing plot, in the order they were logged."""
    path = Path(folder) / "plots" / "custom" / f"{ROUTING}.json"
    if not path.exists():
        return []
    return list(dict.fromkeys(point["teacher"] for point in json.loads(path.read_text())))
