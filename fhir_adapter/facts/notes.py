"""Values of concepts found in a record's clinical text, for the measurement facts.

A value from a note is a suggestion: it is attached to the fact (and so to the criterion or component that
compares it) when the record has no usable result, or only an older one, and it changes nothing. Where the
site opted in for the concept (``[notes.rules.<concept>] decide = true``), the newest note value in the
window takes part like a recorded result: it decides when it is newer than every recorded one (on the same
day the recorded result wins), and its evidence says "from note".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from fhir_adapter.config.types import FactSpec
from fhir_adapter.facts import note_scan, note_text
from fhir_adapter.facts.context import Context
from fhir_adapter.facts.readings import VIA, Via
from fhir_adapter.model import Fact, Resource, Suggestion

_CACHE = "note-readings"


@dataclass(frozen=True, slots=True)
class NoteReading:
    concept: str
    value: Decimal
    written: str
    unit: str
    date: dt.date
    reference: str
    match: str
    sentence: str

    def suggestion(self) -> Suggestion:
        return Suggestion(
            concept=self.concept,
            value=self.written,
            unit=self.unit,
            date=self.date.isoformat(),
            reference=self.reference,
            match=self.match,
            text=self.sentence,
        )

    def as_view(self) -> Resource:
        """The value as an Observation-shaped reading (see :mod:`fhir_adapter.facts.readings`)."""
        rtype, _, rid = self.reference.partition("/")
        return {
            "resourceType": "Observation",
            "id": rid,
            "status": "final",
            "effectiveDateTime": self.date.isoformat(),
            "valueQuantity": {"value": self.written, "unit": self.unit, "code": self.unit},
            VIA: Via(
                self.reference, f", from note ({rtype}): '{self.match}'", self.reference, from_note=True
            ),
        }


def _all(ctx: Context) -> dict[str, list[NoteReading]]:
    cached = ctx.cache.get(_CACHE)
    if cached is None:
        settings = ctx.mappings.notes
        cached = {}
        if settings.enabled and settings.rules:
            rules = list(settings.rules.values())
            seen: set[tuple[str, str, Decimal, str]] = set()
            for doc in note_text.documents(ctx.record, settings):
                for f in note_scan.scan(doc.text, rules, settings):
                    key = (f.concept, doc.reference, f.value, f.unit)
                    if key in seen:
                        continue
                    seen.add(key)
                    cached.setdefault(f.concept, []).append(
                        NoteReading(
                            f.concept,
                            f.value,
                            f.written,
                            f.unit,
                            doc.date,
                            doc.reference,
                            f.match,
                            f.sentence,
                        )
                    )
        ctx.cache[_CACHE] = cached
    found: dict[str, list[NoteReading]] = cached
    return found


def in_window(ctx: Context, spec: FactSpec, concept: str) -> list[NoteReading]:
    """The concept's note values dated within the fact's window, newest first (then by reference)."""
    start = ctx.window_start(spec)
    found = [
        r for r in _all(ctx).get(concept, []) if r.date <= ctx.as_of and (start is None or r.date >= start)
    ]
    found.sort(key=lambda r: (r.date, r.reference), reverse=True)
    return found


def newest(readings: list[NoteReading]) -> list[NoteReading]:
    """The readings of the newest date (several when notes of that day give several values)."""
    return [r for r in readings if r.date == readings[0].date] if readings else []


def decides(ctx: Context, concept: str) -> bool:
    rule = ctx.mappings.notes.rules.get(concept)
    return ctx.mappings.notes.enabled and rule is not None and rule.decide


def disagreement(spec: FactSpec, readings: list[NoteReading]) -> Fact | None:
    """Unknown when the newest notes give different values; None when they agree."""
    day = newest(readings)
    values = sorted({f"{r.written} {r.unit}" for r in day})
    if len(values) < 2:
        return None
    refs = ", ".join(sorted({r.reference for r in day}))
    return Fact(
        spec.name,
        None,
        reason=f"{spec.label}: notes of {day[0].date} give different values ({'; '.join(values)}; {refs})",
    )


def with_suggestions(fact: Fact, readings: list[NoteReading], decided_on: dt.date | None) -> Fact:
    """``fact`` with the newest note values as suggestions, when they say something the record does not:
    the fact is unknown, or what decided it is older than the note."""
    day = newest(readings)
    if not day or (fact.value is not None and decided_on is not None and day[0].date <= decided_on):
        return fact
    return dataclasses.replace(fact, suggestions=(*fact.suggestions, *(r.suggestion() for r in day)))
