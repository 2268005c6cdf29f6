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
    # The value was read from clinical text (a site let notes decide this concept): the ResearchSubject's
    # reason says so. Not written to the result: the detail says "from note".
    from_note: bool = False

    def to_json(self) -> dict[str, str]:
        return {"reference": self.reference, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A value found in clinical text that does not decide anything: the coordinator confirms and records it.

    ``text`` is the sentence it came from (patient data: it goes into the result file, never into logs).
    """

    concept: str  # "mmt8"
    value: str  # the number as written: "118", "0.75"
    unit: str  # the unit the number is in: "{score}", "cm", "mm"
    date: str  # the note's date, YYYY-MM-DD
    reference: str  # "DocumentReference/abc" or "DiagnosticReport/abc"
    match: str  # what was read: "MMT-8: 118/150"
    text: str  # the sentence, cut to mappings' max_sentence_chars

    def to_json(self) -> dict[str, str]:
        return {
            "concept": self.concept,
            "value": self.value,
            "unit": self.unit,
            "date": self.date,
            "reference": self.reference,
            "match": self.match,
            "text": self.text,
        }


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
    # Values found in notes that would be newer than what decided (or that the record lacks): not used.
    suggestions: tuple[Suggestion, ...] = ()


@dataclass(frozen=True, slots=True)
class CriterionResult:
    id: str
    type: str  # "inclusion" | "exclusion" | "component"
    verdict: Verdict
    reason: str
    evidence: tuple[Evidence, ...] = ()
    components: tuple[CriterionResult, ...] = ()
    suggestions: tuple[Suggestion, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "evidence": [e.to_json() for e in self.evidence],
        }
        if self.suggestions:  # absent when empty: results without notes stay as they were
            out["suggestions"] = [s.to_json() for s in self.suggestions]
        if self.components:
            out["components"] = [c.to_json() for c in self.components]
        return out

    @property
    def from_notes(self) -> bool:
        """Its verdict rests on a value read from a note (the site opted in for that concept)."""
        return self.verdict in (Verdict.MET, Verdict.NOT_MET) and any(e.from_note for e in self.evidence)


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
    """An input that could not be read. Never carries resource content (it may hold PHI).

    ``server_text`` is the exception: a server's OperationOutcome free text about this failure, which
    can quote patient data. Only the result file (mode 0600) writes it (``to_json(server_text=True)``);
    logs, the terminal, the sync state and manifests use ``reason`` alone (docs/security.md).
    """

    file: str
    reason: str
    line: int | None = None
    resource: str | None = None  # "Observation/abc" when known
    server_text: str | None = None

    def to_json(self, *, server_text: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file, "reason": self.reason}
        if self.line is not None:
            out["line"] = self.line
        if self.resource is not None:
            out["resource"] = self.resource
        if server_text and self.server_text:
            out["serverText"] = self.server_text
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
    # Attachments a server source fetched for ``attachment.url`` (same origin only), by that url as written:
    # {"contentType": ..., "data": base64}. Files carry none: only inline ``data`` is read there.
    attachments: Mapping[str, Resource] = field(default_factory=dict)

    def of_type(self, resource_type: str) -> tuple[Resource, ...]:
        return self.resources.get(resource_type, ())

    def count(self, resource_type: str) -> int:
        """How many resources of the type the source has for the patient (held or only counted)."""
        return self.counts.get(resource_type, len(self.of_type(resource_type)))
