"""When can a patient's result change with no new data? The next day a window boundary passes.

Windows count back from the as-of date, so a record's verdict can only change by date alone on the day
after one of its dates leaves a window (``date + window + 1``), or on a birthday. We collect those
candidate days from the record and the configured windows; the sync job re-screens the patient then.
Conservative by design: a re-check that changes nothing writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from fhir_adapter.config.types import Mappings
from fhir_adapter.facts.context import months_before
from fhir_adapter.facts.fhirjson import effective_date, parse_date, period_bounds
from fhir_adapter.model import PatientRecord, Resource

_DATE_KEYS = (
    "authoredOn",
    "effectiveDateTime",
    "onsetDateTime",
    "abatementDateTime",
    "recordedDate",
    "issued",
)


def _windows(mappings: Mappings) -> tuple[set[int], set[int]]:
    days: set[int] = set()
    months: set[int] = set()
    for spec in mappings.facts.values():
        if spec.get("window_days") is not None:
            days.add(int(spec.get("window_days")))
        if spec.get("window_months") is not None:
            months.add(int(spec.get("window_months")))
    return days, months


def _dates(resource: Resource) -> Iterator[dt.date]:
    d = effective_date(resource)
    if d:
        yield d
    for key in _DATE_KEYS:
        d = parse_date(resource.get(key))
        if d:
            yield d
    for key in ("effectivePeriod", "period"):
        yield from (x for x in period_bounds(resource.get(key)) if x)
    for dosage in resource.get("dosageInstruction") or []:
        if isinstance(dosage, dict):
            repeat = (dosage.get("timing") or {}).get("repeat") or {}
            yield from (x for x in period_bounds(repeat.get("boundsPeriod")) if x)


def _add_months(day: dt.date, months: int) -> dt.date:
    # months_before with a negative count moves forward, clamped to the month's end the same way.
    return months_before(day, -months)


def next_recheck(record: PatientRecord, mappings: Mappings, as_of: dt.date) -> dt.date | None:
    days, months = _windows(mappings)
    best: dt.date | None = None

    def offer(candidate: dt.date) -> None:
        nonlocal best
        if candidate > as_of and (best is None or candidate < best):
            best = candidate

    for resources in record.resources.values():
        for resource in resources:
            for d in _dates(resource):
                if d > as_of:
                    offer(d)  # a dated-in-the-future result starts counting on its date
                for w in days:
                    offer(d + dt.timedelta(days=w + 1))
                for m in months:
                    offer(_add_months(d, m) + dt.timedelta(days=1))
    birth = parse_date((record.patient or {}).get("birthDate"))
    if birth is not None:
        for year in (as_of.year, as_of.year + 1):
            try:
                offer(birth.replace(year=year))
            except ValueError:  # 29 February
                offer(dt.date(year, 3, 1))
    return best
