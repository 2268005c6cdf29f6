"""Frozen types passed between the stages: source -> record -> facts -> verdicts -> output.

FHIR itself stays plain JSON (``Resource``); only what we derive from it is typed.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

Resource = dict[str, Any]
"""A FHIR resource exactly as parsed from JSON."""


class Verdict(enum.Enum):
    MET = "met"
    NOT_MET = "not-met"
    UNKNOWN = "unknown"
    NOT_EVALUABLE = "not-evaluable"
    NOT_APPLICABLE = "not-applicable"


class Status(enum.Enum):
    """R4 ResearchSubject.status codes the adapter may set (never ``eligible``)."""

    CANDIDATE = "candidate"
    POTENTIAL_CANDIDATE = "potential-candidate"
    INELIGIBLE = "ineligible"


@dataclass(frozen=True, slots=True)
class Evidence:
    reference: str  # "Observation/abc", resolvable on the source
    detail: str  # "CK 812 U/L on 2026-05-02; ULN 200 U/L (reference range)"

    def to_json(self) -> dict[str, str]:
        return {"reference": self.reference, "detail": self.detail}


FactValue = Decimal | bool | str | None


@dataclass(frozen=True, slots=True)
class Fact:
    """One derived input to the criteria. ``value is None`` means unknown, and ``reason`` says why."""

    name: str
    value: FactValue
    unit: str | None = None
    evidence: tuple[Evidence, ...] = ()
    reason: str = ""
    # A censored value ("<0.06", or a dose that is at least this much because another dose is unknown):
    # the true value x satisfies ``x <comparator> value``.
    comparator: str | None = None
    # An interval [value, upper] when the record allows several values (a year-only birthDate).
    upper: Decimal | None = None


@dataclass(frozen=True, slots=True)
class CriterionResult:
    id: str
    type: str  # "inclusion" | "exclusion" | "component"
    verdict: Verdict
    reason: str
    evidence: tuple[Evidence, ...] = ()
    components: tuple[CriterionResult, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "evidence": [e.to_json() for e in self.evidence],
        }
        if self.components:
            out["components"] = [c.to_json() for c in self.components]
        return out


@dataclass(frozen=True, slots=True)
class SubjectResult:
    patient: str  # "Patient/123"
    status: Status
    criteria: tuple[CriterionResult, ...]
    # When the record's data changes its verdict by date alone (a lab leaves its window).
    recheck_on: dt.date | None = None
    # The trial's gate criterion (the diagnosis) is met: every criterion was evaluated, and this patient
    # is a candidate of the study (one who gets a ResearchSubject).
    gate_met: bool = True

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "patient": self.patient,
            "status": self.status.value,
            "criteria": [c.to_json() for c in self.criteria],
        }
        if self.recheck_on is not None:
            out["recheckOn"] = self.recheck_on.isoformat()
        return out


@dataclass(frozen=True, slots=True)
class InputProblem:
    """An input that could not be read. Never carries resource content (it may hold PHI)."""

    file: str
    reason: str
    line: int | None = None
    resource: str | None = None  # "Observation/abc" when known

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file, "reason": self.reason}
        if self.line is not None:
            out["line"] = self.line
        if self.resource is not None:
            out["resource"] = self.resource
        return out


@dataclass(frozen=True, slots=True)
class PatientRecord:
    """Everything the source holds about one patient, grouped by resourceType."""

    patient_id: str  # logical id, without "Patient/"
    patient: Resource | None
    resources: Mapping[str, tuple[Resource, ...]] = field(default_factory=dict)
    # Medication resources by every key a medicationReference may use ("Medication/x", "urn:uuid:..").
    medications: Mapping[str, Resource] = field(default_factory=dict)
    # Resources of a type the source saw for this patient but does not hold here (a patient no trial's
    # gate can admit is carried without its resources): "none among N Conditions" stays true.
    counts: Mapping[str, int] = field(default_factory=dict)

    def of_type(self, resource_type: str) -> tuple[Resource, ...]:
        return self.resources.get(resource_type, ())

    def count(self, resource_type: str) -> int:
        """How many resources of the type the source has for the patient (held or only counted)."""
        return self.counts.get(resource_type, len(self.of_type(resource_type)))
