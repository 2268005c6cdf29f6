"""Fact kinds by name: the only place that knows which function computes which kind, and what it reads.

``reads`` says which resource types (and, where the kind only looks at some, which concepts) a fact
looks at. It decides which types a source must fetch (``_type`` of a bulk export, the typed searches)
and, for a trial's gate, which patients can pass it at all (the candidate prefilter).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fhir_adapter import logs
from fhir_adapter.config.loader import fact_dependencies
from fhir_adapter.config.types import FactSpec, Mappings
from fhir_adapter.facts import conditions, demographics, labs, medications
from fhir_adapter.facts.context import Context
from fhir_adapter.facts.exposures import MED_TYPES
from fhir_adapter.model import Fact, PatientRecord

log = logging.getLogger(__name__)


# Read only when the site turns notes on (mappings/notes.toml `[notes] enabled`), for every fact that reads
# Observations: DiagnosticReports hold panels and conclusions, DocumentReferences clinical notes.
NOTE_TYPES = ("DiagnosticReport", "DocumentReference")


@dataclass(frozen=True, slots=True)
class Read:
    """A fact reads resources of ``type``; only those coded in ``concepts`` when given, else all of them."""

    type: str
    concepts: tuple[str, ...] | None = None


def _concepts(spec: FactSpec, *keys: str) -> tuple[str, ...]:
    found: list[str] = []
    for key in keys:
        value = spec.get(key)
        found.extend(value if isinstance(value, list) else [value] if isinstance(value, str) else [])
    return tuple(found)


def _condition_reads(spec: FactSpec) -> list[Read]:
    concepts = _concepts(spec, "concepts")
    reads = [Read("Condition", concepts)]
    if spec.get("also_allergy_intolerance"):
        reads.append(Read("AllergyIntolerance", concepts))
    return reads


def _medication_reads(spec: FactSpec) -> list[Read]:
    # Drugs match by text too, so every medication resource is read; the Medications they reference ride along.
    return [Read(t) for t in (*MED_TYPES, "Medication")]


@dataclass(frozen=True, slots=True)
class Kind:
    derive: Callable[[Context, FactSpec], Fact]
    reads: Callable[[FactSpec], list[Read]]


KINDS: dict[str, Kind] = {
    "age-years": Kind(demographics.age, lambda s: [Read("Patient")]),
    "sex": Kind(demographics.sex, lambda s: [Read("Patient")]),
    "condition": Kind(conditions.condition, _condition_reads),
    "condition-onset-near": Kind(
        conditions.condition_onset_near,
        lambda s: [Read("Condition", _concepts(s, "concepts", "anchor_concepts"))],
    ),
    "measurement": Kind(labs.measurement, lambda s: [Read("Observation", _concepts(s, "concept"))]),
    "uln-ratio": Kind(labs.uln_ratio, lambda s: [Read("Observation", _concepts(s, "concept"))]),
    "qualitative": Kind(labs.qualitative, lambda s: [Read("Observation", _concepts(s, "concept"))]),
    "creatinine-clearance": Kind(
        labs.creatinine_clearance,
        lambda s: [Read("Observation", _concepts(s, "measured_concept", "creatinine_concept"))],
    ),
    "prednisone-equivalent-dose": Kind(medications.glucocorticoid_dose, _medication_reads),
    "medication-started": Kind(medications.medication_started, _medication_reads),
    "medication-dose-changed": Kind(medications.medication_dose_changed, _medication_reads),
    "medication-given": Kind(medications.medication_given, _medication_reads),
    "medication-count": Kind(medications.medication_count, _medication_reads),
    # Reads nothing itself: its inputs are facts (``*_fact``), whose reads are followed.
    "quotient": Kind(labs.quotient, lambda s: []),
    "condition-class": Kind(
        conditions.condition_class,
        lambda s: [
            Read("Condition", _concepts(s, "condition_concept", "high_class_concept")),
            Read("Observation", _concepts(s, "class_observation_concept")),
        ],
    ),
    "inpatient-stay": Kind(
        conditions.inpatient_stay,
        lambda s: [Read("Encounter"), Read("Condition", _concepts(s, "reason_concept"))],
    ),
    "medication-allergy-count": Kind(
        conditions.medication_allergy_count, lambda s: [Read("AllergyIntolerance")]
    ),
}


def reads_of(mappings: Mappings, fact_names: Iterable[str]) -> list[Read]:
    """Everything the named facts read, the facts they depend on included (medications: the weight)."""
    seen: set[str] = set()
    out: list[Read] = []
    pending = list(fact_names)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        spec = mappings.facts[name]
        out.extend(KINDS[spec.kind].reads(spec))
        pending.extend(fact_dependencies(spec))
        if KINDS[spec.kind].reads is _medication_reads:
            pending.append(mappings.medications.weight_fact)
    if mappings.notes.enabled and any(r.type == "Observation" for r in out):
        # Where clinical text is read, readings also come from reports (panels, conclusions) and notes.
        out.extend(Read(t) for t in NOTE_TYPES)
    return out


def _derive(ctx: Context, spec: FactSpec) -> Fact:
    try:
        return KINDS[spec.kind].derive(ctx, spec)
    except Exception as exc:  # one odd resource must not sink the patient, let alone the run
        # Where, never what: an exception's message may quote the data that broke it.
        log.warning("fact %s failed for a patient: %s", spec.name, logs.where(exc))
        return Fact(spec.name, None, reason=f"could not be computed ({type(exc).__name__}); see the log")


def context(record: PatientRecord, mappings: Mappings, as_of: dt.date) -> Context:
    return Context(record=record, mappings=mappings, as_of=as_of, derive=_derive)
