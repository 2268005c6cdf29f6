"""When can a patient's result change with no new data? The next day a window boundary passes.

Windows count back from the as-of date, so a record's verdict can only change by date alone on the day
after one of its dates leaves a window (``date + window + 1``), or on a birthday. We collect those
candidate days from the record and the configured windows; the sync job re-screens the patient then.
Conservative by design: a re-check that changes nothing writes nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

from fhir_adapter.config.types import Mappings
from fhir_adapter.facts.context import add_years, months_before
from fhir_adapter.facts.fhirjson import parse_date
from fhir_adapter.model import PatientRecord

_DATE_RE = re.compile(r"^\d{4}-\d{2}(-\d{2})?")


def _windows(mappings: Mappings) -> tuple[set[int], set[int], set[int]]:
    days: set[int] = set()
    months: set[int] = set()
    years: set[int] = set()
    for spec in mappings.facts.values():
        if spec.get("window_days") is not None:
            days.add(int(spec.get("window_days")))
        if spec.get("window_months") is not None:
            months.add(int(spec.get("window_months")))
        if spec.get("window_years") is not None:
            years.add(int(spec.get("window_years")))
    return days, months, years


def _dates(node: Any) -> Iterator[dt.date]:
    """Every date anywhere in a resource (effective, authoredOn, bounds, validity, onset...): a window can
    hinge on any of them, and one re-check too many costs a no-op, one too few a stale verdict. Walked
    with a stack, so no nesting depth exhausts the interpreter's."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(v for k, v in item.items() if k not in {"meta", "birthDate", "text"})
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and _DATE_RE.match(item):
            d = parse_date(item)
            if d is not None:
                yield d


def _leaves_month_window(day: dt.date, months: int) -> dt.date:
    """The first as-of date whose window ("on or after the same day N months earlier") excludes ``day``.
    Month ends clamp, so search the few days after the naive anniversary."""
    candidate = months_before(day, -months) - dt.timedelta(days=3)
    while months_before(candidate, months) <= day:
        candidate += dt.timedelta(days=1)
    return candidate


def _leaves_year_window(day: dt.date, years: int) -> dt.date:
    """Likewise for calendar-year windows (29 February clamps to 28 February)."""
    candidate = add_years(day, years) - dt.timedelta(days=3)
    while add_years(candidate, -years) <= day:
        candidate += dt.timedelta(days=1)
    return candidate


def _birth_range(birth: str) -> tuple[dt.date, dt.date] | None:
    """First and last possible birth day of a full or partial birthDate."""
    first = parse_date(birth)
    if first is None:
        return None
    if len(birth.strip()) >= 10:
        return first, first
    if len(birth.strip()) == 7:
        nxt = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
        return first, nxt - dt.timedelta(days=1)
    return first, dt.date(first.year, 12, 31)


def _anniversaries(day: dt.date, years: tuple[int, ...]) -> Iterator[dt.date]:
    for year in years:
        try:
            yield day.replace(year=year)
        except ValueError:  # 29 February: the birthday counts from 1 March in other years
            yield dt.date(year, 3, 1)


def next_recheck(record: PatientRecord, mappings: Mappings, as_of: dt.date) -> dt.date | None:
    days, months, years = _windows(mappings)
    best: dt.date | None = None

    def offer(candidate: dt.date) -> None:
        nonlocal best
        if candidate > as_of and (best is None or candidate < best):
            best = candidate

    for resources in record.resources.values():
        for resource in resources:
            for d in set(_dates(resource)):
                if d > as_of:
                    offer(d)  # a dated-in-the-future result starts counting on its date
                for w in days:
                    offer(d + dt.timedelta(days=w + 1))
                for m in months:
                    offer(_leaves_month_window(d, m))
                for y in years:
                    offer(_leaves_year_window(d, y))
    birth = (record.patient or {}).get("birthDate")
    span = _birth_range(birth) if isinstance(birth, str) else None
    if span is not None:
        # A partial birthDate allows a range of ages: each end of the range moves on its own anniversary.
        for end in span:
            for day in _anniversaries(end, (as_of.year, as_of.year + 1)):
                offer(day)
    return best
