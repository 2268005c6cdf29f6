"""Convert a quantity to a concept's canonical unit with the table in mappings/units.toml.

Returns None when the unit is missing or not convertible: the caller turns that into ``unknown``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fhir_adapter.config.types import UnitTable

UCUM = "http://unitsofmeasure.org"


def normalise_unit(table: UnitTable, unit: str) -> str:
    unit = unit.strip()
    if unit in table.aliases:
        return table.aliases[unit]
    return table.aliases_lower.get(unit.lower(), unit)


def quantity_unit(quantity: dict[str, Any]) -> str | None:
    """UCUM ``code`` when the system is UCUM (or absent), else the ``unit`` text (spec section 5)."""
    code = quantity.get("code")
    system = quantity.get("system")
    if isinstance(code, str) and code.strip() and (system is None or system == UCUM):
        return code.strip()
    unit = quantity.get("unit")
    if isinstance(unit, str) and unit.strip():
        return unit.strip()
    if isinstance(code, str) and code.strip():
        return code.strip()
    return None


def factor(table: UnitTable, source: str, target: str, concept: str) -> Decimal | None:
    """Multiplier from ``source`` to ``target`` for ``concept``, or None if the table has no way."""
    src = normalise_unit(table, source)
    dst = normalise_unit(table, target)
    if src == dst:
        return Decimal(1)
    for conv in table.conversions:
        if conv.concepts and concept not in conv.concepts:
            continue
        if conv.source == src and conv.target == dst:
            return conv.factor
        if conv.source == dst and conv.target == src:
            return Decimal(1) / conv.factor
    # One hop through an intermediate unit (lbs -> [lb_av] -> kg is an alias, g -> kg -> ...).
    for first in table.conversions:
        if first.concepts and concept not in first.concepts:
            continue
        if first.source == src:
            for second in table.conversions:
                if second.concepts and concept not in second.concepts:
                    continue
                if second.source == first.target and second.target == dst:
                    return first.factor * second.factor
    return None


def convert(table: UnitTable, value: Decimal, source: str, target: str, concept: str) -> Decimal | None:
    f = factor(table, source, target, concept)
    return None if f is None else value * f
