"""What a method or stage hard-codes: the fixed numbers and choices in its code that no setting changes (the
settable constants of the comparison methods are methods/constants.py).

Settings are recorded from params.yaml; what a method hard-codes (an epsilon, a teacher order, whether it
continues the stage-1 student) would change a result just as much when the code changes, so the provenance of a
result records them too. They are read from the method's module (UPPER_CASE values of plain types) and its class
flags, so a new method needs nothing extra to be recorded.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

PLAIN = (bool, int, float, str)


def module_constants(module: ModuleType) -> dict[str, Any]:
    """UPPER_CASE module values that are plain numbers, strings or tuples/lists of them."""
    found: dict[str, Any] = {}
    for name, value in vars(module).items():
        if not name.isupper() or name.startswith("_"):
            continue
        if isinstance(value, PLAIN):
            found[name] = value
        elif isinstance(value, (tuple, list)) and all(isinstance(v, PLAIN) for v in value):
            found[name] = list(value)
    return found


def stage_record(stage: str, *modules: ModuleType) -> dict[str, Any]:
    """The record of a stage that is part of MST itself (S1, S2): its name and the constants of its modules."""
    constants: dict[str, Any] = {}
    for module in modules:
        constants.update({f"{module.__name__}.{k}": v for k, v in module_constants(module).items()})
    return {"name": stage, "constants": constants}
