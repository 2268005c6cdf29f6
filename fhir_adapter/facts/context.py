"""The per-patient evaluation context: record, mappings, as-of date, and the facts computed so far."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fhir_adapter.config.types import Concept, FactSpec, Mappings
from fhir_adapter.facts.codes import CodeIndex, matcher_for
from fhir_adapter.facts.readings import Views, build_views, slot_of
from fhir_adapter.model import Fact, PatientRecord, Resource

_VIEWS = "observation views"
_COMPONENTS = "observation components"


def months_before(day: dt.date, months: int) -> dt.date:
    """Same day ``months`` calendar months earlier, clamped to the month's end (spec: 2 calendar months)."""
    month0 = day.month - 1 - months
    year = day.year + month0 // 12
    month = month0 % 12 + 1
    for d in (day.day, 30, 29, 28):
        try:
            return dt.date(year, month, d)
        except ValueError:
            continue
    raise AssertionError("unreachable: every month has 28 days")


def add_years(day: dt.date, years: int) -> dt.date:
    """The same day ``years`` calendar years later (earlier when negative); 29 February becomes
    28 February in a year without one (the second trial's spec: "N calendar years")."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


@dataclass
class Context:
    record: PatientRecord
    mappings: Mappings
    as_of: dt.date
    derive: Callable[[Context, FactSpec], Fact]
    _facts: dict[str, Fact] = field(default_factory=dict)
    _indexes: dict[str, CodeIndex] = field(default_factory=dict)
    # Derived once per patient and shared by several facts (the medication exposures).
    cache: dict[str, Any] = field(default_factory=dict)

    def matching(self, resource_type: str, concept: str) -> tuple[Resource, ...]:
        """This patient's resources of a type whose ``code`` is in the concept (computed once)."""
        index = self._indexes.get(resource_type)
        if index is None:
            matcher = matcher_for(self.mappings.concepts)
            index = self._indexes[resource_type] = CodeIndex(self.record.of_type(resource_type), matcher)
        return index.matching(self.concept(concept))

    def observations(self, concept: str) -> tuple[Resource, ...]:
        """Every reading of the concept (computed once): whole Observations, those a DiagnosticReport
        contains, and components (see :mod:`fhir_adapter.facts.readings`)."""
        views: Views | None = self.cache.get(_VIEWS)
        if views is None:
            views = self.cache[_VIEWS] = build_views(self.record)
        if views.same_as_record:
            whole = self.matching("Observation", concept)
        else:
            index = self._indexes.get(_VIEWS)
            if index is None:
                index = self._indexes[_VIEWS] = CodeIndex(views.whole, matcher_for(self.mappings.concepts))
            whole = index.matching(self.concept(concept))
        if not views.components:
            return whole
        parts = self._indexes.get(_COMPONENTS)
        if parts is None:
            parts = self._indexes[_COMPONENTS] = CodeIndex(
                views.components, matcher_for(self.mappings.concepts)
            )
        # A parent coded as the concept is the reading; its components are its parts, not more readings.
        parents = {slot_of(obs) for obs in whole}
        return whole + tuple(c for c in parts.matching(self.concept(concept)) if slot_of(c) not in parents)

    @property
    def patient_ref(self) -> str:
        return f"Patient/{self.record.patient_id}"

    def fact(self, name: str) -> Fact:
        if name not in self._facts:
            spec = self.mappings.facts[name]
            self._facts[name] = self.derive(self, spec)
        return self._facts[name]

    def concept(self, name: str) -> Concept:
        return self.mappings.concepts[name]

    def window_start(self, spec: FactSpec) -> dt.date | None:
        """The first day of the fact's window (inclusive); None when it has no window."""
        if spec.get("window_years") is not None:
            return add_years(self.as_of, -int(spec.get("window_years")))
        if spec.get("window_months") is not None:
            return months_before(self.as_of, int(spec.get("window_months")))
        if spec.get("window_days") is not None:
            return self.as_of - dt.timedelta(days=int(spec.get("window_days")))
        return None

    def sex(self, spec: FactSpec) -> str | None:
        """The patient's sex as the fact named by ``spec``'s ``sex_fact`` gives it."""
        value = self.fact(str(spec.get("sex_fact"))).value
        return value if isinstance(value, str) else None
