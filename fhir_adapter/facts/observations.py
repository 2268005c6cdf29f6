"""Pick the deciding Observation for a concept and read its value: number, censored number or qualitative."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fhir_adapter.config.types import Concept, UnitTable
from fhir_adapter.facts import codes, units
from fhir_adapter.facts.fhirjson import (
    codings,
    effective_date,
    effective_instant,
    instant,
    is_ignored,
    to_decimal,
)
from fhir_adapter.model import Resource

_NUMBER_RE = re.compile(r"^\s*(<=|>=|≤|≥|＜|＞|<|>)?\s*(-?\d+(?:[.,]\d+)?)\s*(.*?)\s*$")
_FLAG_RE = re.compile(r"[↑↓]|(?:^|\s+)[HL]$")
_COMPARATORS = {"≤": "<=", "≥": ">=", "＜": "<", "＞": ">"}


@dataclass(frozen=True, slots=True)
class Reading:
    """A numeric observation value, possibly censored (``comparator``), in its original unit."""

    value: Decimal
    unit: str | None
    comparator: str | None


SortKey = tuple[dt.date, dt.datetime, dt.datetime, str]


@dataclass(frozen=True, slots=True)
class Dated:
    resource: Resource
    date: dt.date
    key: SortKey | None = None  # what ordered it: equal keys are a tie the spec's rule cannot break


def _to_decimal(value: Any) -> Decimal | None:
    # repr of a float is its shortest round-trip form: 52.0 stays "52.0", never 52.000000001.
    return to_decimal(value)


def in_window(resources: tuple[Resource, ...], as_of: dt.date, start: dt.date | None) -> list[Dated]:
    """Non-ignored observations (already matched to a concept) dated within [start, as_of], newest first.

    Ties on date go to the later ``issued``, then to the larger id (spec section 2).
    """
    found: list[tuple[SortKey, Resource]] = []
    for obs in resources:
        if is_ignored(obs):
            continue
        date = effective_date(obs)
        if date is None or date > as_of or (start is not None and date < start):
            continue
        # Same day: the later time of day, then the later issued instant, then the larger id.
        key = (date, effective_instant(obs), instant(obs.get("issued")), str(obs.get("id", "")))
        found.append((key, obs))
    found.sort(key=lambda t: t[0], reverse=True)
    return [Dated(resource=obs, date=key[0], key=key) for key, obs in found]


def has_value(obs: Resource) -> bool:
    return any(k.startswith("value") for k in obs)


def reading(obs: Resource) -> Reading | str:
    """The numeric value of an observation, or the reason there is none."""
    if "valueQuantity" in obs:
        q = obs["valueQuantity"]
        if not isinstance(q, dict):
            return "valueQuantity is not an object"
        value = _to_decimal(q.get("value"))
        if value is None:
            return f"value {q.get('value')!r} is not a number"
        comp = q.get("comparator")
        return Reading(value, units.quantity_unit(q), comp if comp in {"<", "<=", ">", ">="} else None)
    for key in ("valueInteger", "valueDecimal"):
        if key in obs:
            value = _to_decimal(obs[key])
            return Reading(value, None, None) if value is not None else f"{key} {obs[key]!r} is not a number"
    if "valueString" in obs:
        text = obs["valueString"]
        m = _NUMBER_RE.match(text) if isinstance(text, str) else None
        if not m:
            return f"valueString {str(text)[:40]!r} is not a number"
        comp = m.group(1)
        rest = _FLAG_RE.sub("", m.group(3)).strip()
        value = _to_decimal(m.group(2))
        if value is None:
            return f"valueString {text[:40]!r} is not a number"
        return Reading(value, rest or None, _COMPARATORS.get(comp or "", comp))
    if "dataAbsentReason" in obs:
        return "data absent (" + ", ".join(c for _, c, _ in codings(obs["dataAbsentReason"])) + ")"
    return "no value"


def reference_high(
    obs: Resource, sex: str | None, table: UnitTable, unit: str, concept: str, sexes: Mapping[str, Concept]
) -> tuple[Decimal, str] | None:
    """ULN from the result's own referenceRange (the one for the patient's sex when split), in ``unit``.

    Returns (value, unit it is expressed in) — the unit is the range's own when it cannot be converted,
    so a caller can still form a unit-free ratio with a value in the same unit.
    """
    ranges = obs.get("referenceRange")
    if not isinstance(ranges, list):
        return None
    for rr in ranges:
        if not isinstance(rr, dict):
            continue
        if not _applies_to_sex(rr.get("appliesTo"), sex, sexes):
            continue
        high = rr.get("high")
        if isinstance(high, dict):
            value = _to_decimal(high.get("value"))
            if value is None:
                continue
            h_unit = units.quantity_unit(high)
            if h_unit is None:
                return value, "?"
            converted = units.convert(table, value, h_unit, unit, concept)
            return (converted, unit) if converted is not None else (value, h_unit)
        text = rr.get("text")
        if isinstance(text, str):
            m = re.search(r"(?:^|[-~–<≤]|to)\s*(\d+(?:\.\d+)?)\s*$", text.strip().split(" ")[0])
            if m and not rr.get("appliesTo"):
                parsed = _to_decimal(m.group(1))
                if parsed is not None:
                    return parsed, "?"
    return None


def _applies_to_sex(applies: Any, sex: str | None, sexes: Mapping[str, Concept]) -> bool:
    """Whether a range's appliesTo fits the patient. Ranges for an age group or another population pass;
    a sex-specific range is chosen only for a patient of that sex (``sexes``: "female"/"male" concepts)."""
    if not isinstance(applies, list):
        return True
    found = {name for cc in applies for name, concept in sexes.items() if codes.matches(concept, cc)}
    return not found or sex in found
