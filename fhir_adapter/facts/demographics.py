"""Age in whole years on the as-of date, and administrative sex."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

from fhir_adapter.config.types import FactSpec
from fhir_adapter.facts.context import Context
from fhir_adapter.model import Evidence, Fact

_FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}", re.ASCII)
# FHIR's partial dates: a year, or a year and month (full-width digits, a sign or a fifth digit are not).
_PARTIAL_DATE = re.compile(r"(\d{4})(?:-(0[1-9]|1[0-2]))?", re.ASCII)
# No one has lived this long: an age beyond it is a wrong birthDate, not a patient to judge by it.
_OLDEST = 150


def whole_years(born: dt.date, on: dt.date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def age(ctx: Context, spec: FactSpec) -> Fact:
    patient = ctx.record.patient
    if patient is None:
        return Fact(spec.name, None, reason="Patient resource not in the input")
    birth = patient.get("birthDate")
    if not isinstance(birth, str) or not birth.strip():
        return Fact(spec.name, None, reason="no birthDate")
    birth = birth.strip()
    if not _FULL_DATE.match(birth):
        # A year-only birthDate spans two possible ages; decide only if both agree.
        partial = _PARTIAL_DATE.fullmatch(birth)
        if partial is None or partial.group(1) == "0000":
            return Fact(spec.name, None, reason="birthDate is not a date")
        year = int(partial.group(1))
        month = int(partial.group(2)) if partial.group(2) else None
        first = dt.date(year, month or 1, 1)
        last = dt.date(year, month or 12, 28 if month == 2 else 30 if month in {4, 6, 9, 11} else 31)
        low, high = max(whole_years(last, ctx.as_of), 0), whole_years(first, ctx.as_of)
        implausible = _implausible(spec, first, ctx.as_of, high)
        if implausible is not None:
            return implausible
        if low != high:
            # Both ages are possible: the criterion decides when they agree (1980 is 45 or 46: adult).
            detail = f"{low} or {high} years on {ctx.as_of.isoformat()} (birthDate {birth} is partial)"
            return Fact(
                spec.name,
                Decimal(low),
                unit="a",
                evidence=(Evidence(ctx.patient_ref, f"birthDate {birth}"),),
                reason=detail,
                upper=Decimal(high),
            )
        born = first
    else:
        try:
            born = dt.date.fromisoformat(birth[:10])
        except ValueError:
            return Fact(spec.name, None, reason="birthDate is not a date")
    years = whole_years(born, ctx.as_of)
    implausible = _implausible(spec, born, ctx.as_of, years)
    if implausible is not None:
        return implausible
    return Fact(
        spec.name,
        Decimal(years),
        unit="a",
        evidence=(Evidence(ctx.patient_ref, f"birthDate {birth}"),),
        reason=f"{years} years on {ctx.as_of.isoformat()}",
    )


def _implausible(spec: FactSpec, born: dt.date, as_of: dt.date, years: int) -> Fact | None:
    """Unknown for a birth after the as-of date or an age no one reaches: a wrong birthDate, never an
    age a criterion should be judged by. (The date itself is not repeated: it identifies the patient.)"""
    if born > as_of:
        return Fact(spec.name, None, reason=f"birthDate is after {as_of.isoformat()}")
    if years > _OLDEST:
        return Fact(spec.name, None, reason=f"birthDate gives {years} years: not a plausible age")
    return None


def sex(ctx: Context, spec: FactSpec) -> Fact:
    patient = ctx.record.patient
    gender = patient.get("gender") if patient else None
    if isinstance(gender, str) and gender.strip().lower() in {"male", "female"}:
        value = gender.strip().lower()
        return Fact(spec.name, value, evidence=(Evidence(ctx.patient_ref, f"gender {value}"),), reason=value)
    return Fact(spec.name, None, reason="administrative gender not recorded as male or female")
