"""A comparison method's constants as data: named sets, chosen by ``distill.baseline_settings``, overridable per
method by ``distill.constants``, and recorded in every result.

Why sets: the MST-Distill reference code ships its own baseline scripts whose constants differ from the original
papers' (method.md §4: RKD's embedding and weights, CRD's and OFA's mixing, MLLD's normalisation, ...). The
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
import types
import typing
from typing import Any, Mapping

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
        changed[key] = _coerce(f"distill.constants.{method}.{key}", hints[key], value)
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


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Check ``value`` against a constant's type (bool, int, float, str, a Literal, a tuple of floats, or optional)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(name, inner, value)
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"{name} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise UserError(f"{name} must be a non-empty list, got {value!r}")
        return tuple(_coerce(f"{name}[{i}]", args[0], v) for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{name} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{name} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{name} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{name} must be a string, got {value!r}")
        return value
    return value
