"""A comparison method's constants as data: named sets, chosen by ``distill.baseline_settings``, overridable per
method by ``distill.constants``, and recorded in every result.

Why sets: the MST-Distill reference code ships its own baseline scripts whose constants differ from the original
papers' (docs/method.md §4: RKD's embedding and weights, CRD's and OFA's mixing, MLLD's normalisation, ...). The
paper's table was most likely made with the reference's values, the original papers define the methods; a
reader must be able to run either and see which one a number came from. So each method declares a frozen
dataclass of its constants and one instance per set:

- ``reference``: the values of the MST-Distill reference scripts where the reference implements the method, the
  original paper's where it does not (DKD, DIST, PKT, DML have no reference script);
- ``paper``: the original paper's values (or, where the paper gives none, the authors' release, as each module
  says).

``distill.constants`` then changes single values of the chosen set, e.g. ``-S distill.constants={rkd:
{distance_weight: 1.0}}``; an unknown method or key is a one-line error.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from mstcli.config import check_value
from mstcli.errors import UserError

SET_NAMES = ("reference", "paper")


def resolve_constants(method: str, sets: Mapping[str, Any], chosen: str, overrides: Mapping[str, Any]) -> Any:
    """The constants of ``method``: the set ``chosen`` with ``overrides`` (one method's entry of
    ``distill.constants``) applied and type-checked."""
    if chosen not in sets:
        raise UserError(f"distill.baseline_settings must be one of {', '.join(sets)}, got {chosen!r}")
    base = sets[chosen]
    if not overrides:
        return base
    if not isinstance(overrides, Mapping):
        raise UserError(f"distill.constants.{method} must be a mapping of constant: value, got {overrides!r}")
    fields = {f.name: f for f in dataclasses.fields(base)}
    hints = typing.get_type_hints(type(base))
    changed = {}
    for key, value in overrides.items():
        if key not in fields:
            raise UserError(f"unknown constant distill.constants.{method}.{key} (known: {', '.join(fields)})")
        changed[key] = check_value(f"distill.constants.{method}.{key}", hints[key], value)
    return dataclasses.replace(base, **changed)


def check_method_names(constants: Mapping[str, Any], known: tuple[str, ...]) -> None:
    """Every key of ``distill.constants`` must name a method (a typo would silently change nothing)."""
    unknown = [name for name in constants if name not in known]
    if unknown:
        raise UserError(f"distill.constants names unknown method(s) {', '.join(unknown)} (known: {', '.join(known)})")


def constants_record(constants: Any) -> dict[str, Any]:
    """The constants as plain values, for checkpoints and metrics.json."""
    if constants is None:
        return {}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(constants).items()}
