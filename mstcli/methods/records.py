"""The provenance record of a distillation method (S3): its registry entry, class flags and module constants.

Apart from methods/constants.py because it reads the method registry, which names every method: stages that are
not S3 (S1, S2) record their constants without depending on every method's code.
"""

from __future__ import annotations

import sys
from typing import Any

from mstcli.methods.hardcoded import module_constants


def method_record(name: str) -> dict[str, Any]:
    """Name, registry entry, class flags and module constants of the distillation method ``name``."""
    from mstcli.methods.registry import entry

    found = entry(name)
    cls = found.load()
    return {
        "name": found.name,
        "display": found.display,
        "target": found.target,
        "role": found.role,
        "fixed_teacher": found.fixed_teacher,
        "continues_stage1": bool(cls.continues_stage1),
        "needs_masks": bool(cls.needs_masks),
        "constants": module_constants(sys.modules[cls.__module__]),
    }


def constants_table_rows() -> list[tuple[str, str, list[str]]]:
    """(method, constant, its value in each set of SET_NAMES) for every method with constants sets, in the
    registry's order; the method's name only on its first row. The one source of `mst methods --constants` and of
    the settings reference page."""
    from mstcli.methods.constants import SET_NAMES, constants_record
    from mstcli.methods.registry import ENTRIES

    rows = []
    for found in ENTRIES:
        sets = found.load().CONSTANT_SETS
        if not sets:
            continue
        records = {name: constants_record(sets[name]) for name in SET_NAMES}
        for i, key in enumerate(records["reference"]):
            rows.append((found.name if i == 0 else "", key, [str(records[name][key]) for name in SET_NAMES]))
    return rows
