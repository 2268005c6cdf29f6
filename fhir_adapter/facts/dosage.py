"""Reconstruct an amount in mg from a dose, and a daily amount from dose x frequency / period.

Every function returns either a Decimal or a string saying why the amount is unknown: a dose without a
strength, a unit we cannot convert, or a sig that exists only as text is never guessed (spec section 6).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from fhir_adapter.config.types import MedicationRules, UnitTable
from fhir_adapter.facts import units
from fhir_adapter.facts.fhirjson import to_decimal
from fhir_adapter.model import Resource

_STRENGTH_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(MG|MCG|G)\b(?!\s*/)", re.IGNORECASE)
_CONCENTRATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*MG\s*/\s*(\d+(?:\.\d+)?)?\s*ML", re.IGNORECASE)
_TO_MG = {"mg": Decimal(1), "mcg": Decimal("0.001"), "g": Decimal(1000)}


def _decimal(value: Any) -> Decimal | None:
    return to_decimal(value)


def strength_from_medication(medication: Resource | None, table: UnitTable) -> Decimal | None:
    """mg per unit of product from Medication.ingredient[].strength (numerator mg / denominator 1)."""
    if not medication:
        return None
    for ingredient in medication.get("ingredient") or []:
        strength = ingredient.get("strength") if isinstance(ingredient, dict) else None
        if not isinstance(strength, dict):
            continue
        num, den = strength.get("numerator") or {}, strength.get("denominator") or {}
        value, per = _decimal(num.get("value")), _decimal(den.get("value", 1))
        unit = units.quantity_unit(num) if isinstance(num, dict) else None
        if value is None or not per or unit is None:
            continue
        mg = units.convert(table, value, unit, "mg", "dose")
        den_unit = units.quantity_unit(den) if isinstance(den, dict) else None
        if mg is not None and (den_unit is None or den_unit.lower() not in {"ml", "l"}):
            return mg / per
    return None


def strength_from_name(names: list[str]) -> Decimal | None:
    """ "predniSONE 20 MG Oral Tablet" -> 20 (mg per tablet). Only when exactly one strength is named."""
    found = set()
    for name in names:
        for m in _STRENGTH_RE.finditer(name):
            found.add(Decimal(m.group(1)) * _TO_MG[m.group(2).lower()])
    return found.pop() if len(found) == 1 else None


def concentration_from_name(names: list[str]) -> Decimal | None:
    for name in names:
        m = _CONCENTRATION_RE.search(name)
        if m:
            return Decimal(m.group(1)) / Decimal(m.group(2) or 1)
    return None


def dose_mg(
    quantity: Any,
    rules: MedicationRules,
    table: UnitTable,
    medication: Resource | None,
    names: list[str],
    weight_kg: Decimal | None,
) -> Decimal | str:
    """One dose in mg of the drug."""
    if not isinstance(quantity, dict):
        return "no structured dose"
    value = _decimal(quantity.get("value"))
    if value is None:
        return "dose has no value"
    unit = (units.quantity_unit(quantity) or "").strip()
    normalised = units.normalise_unit(table, unit) if unit else ""
    mg = units.convert(table, value, normalised, "mg", "dose") if normalised else None
    if mg is not None:
        return mg
    if normalised.lower() in {"mg/kg", "mg/kg/dose"}:
        if weight_kg is None:
            return "dose in mg/kg and no body weight"
        return value * weight_kg
    if normalised.lower() in {"ml"}:
        conc = concentration_from_name(names)
        return value * conc if conc is not None else "dose in mL and no concentration in the drug name"
    if unit.lower() in rules.count_units or normalised.lower() in rules.count_units:
        strength = strength_from_medication(medication, table) or strength_from_name(names)
        if strength is None:
            return f"dose of {value} {unit or 'unit(s)'} and no strength in the Medication or the drug name"
        return value * strength
    return f"dose unit {unit!r} is not a mass"


def per_day(dosage: Resource, rules: MedicationRules) -> Decimal | str:
    """Administrations per day from timing.repeat (frequency / period) or timing.code."""
    timing = dosage.get("timing")
    if isinstance(timing, dict):
        repeat = timing.get("repeat")
        if isinstance(repeat, dict) and repeat.get("frequency") is not None:
            freq = _decimal(repeat.get("frequencyMax") or repeat.get("frequency"))
            period = _decimal(repeat.get("period", 1))
            unit = str(repeat.get("periodUnit", "d"))
            per_day = rules.periods_per_day.get(unit)
            if freq is None or not period or per_day is None:
                return f"timing {freq}/{period} {unit} not understood"
            # One division at the end keeps "every 12 h" at exactly 2 a day.
            return freq * per_day[0] / (period * per_day[1])
        code = timing.get("code")
        if isinstance(code, dict):
            for coding in code.get("coding") or []:
                c = str(coding.get("code", "")).upper()
                if c in rules.frequency_codes:
                    num, den = rules.frequency_codes[c]
                    return num / den
            code_text = str(code.get("text", "")).upper()
            if code_text in rules.frequency_codes:
                num, den = rules.frequency_codes[code_text]
                return num / den
    sig = dosage.get("text")
    if isinstance(sig, str) and sig.strip():
        return f"dosage only as text: {sig.strip()[:80]!r}"
    return "no frequency"


def dose_quantity(dosage: Resource) -> Any:
    """doseQuantity, or the high end of a doseRange (the highest the order allows)."""
    for dr in dosage.get("doseAndRate") or []:
        if not isinstance(dr, dict):
            continue
        if "doseQuantity" in dr:
            return dr["doseQuantity"]
        if isinstance(dr.get("doseRange"), dict) and "high" in dr["doseRange"]:
            return dr["doseRange"]["high"]
    return dosage.get("dose")  # MedicationAdministration.dosage.dose
