"""Fact kinds by name: the only place that knows which function computes which kind."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from fhir_adapter import logs
from fhir_adapter.config.types import FactSpec, Mappings
from fhir_adapter.facts import conditions, demographics, labs, medications
from fhir_adapter.facts.context import Context
from fhir_adapter.model import Fact, PatientRecord

log = logging.getLogger(__name__)

KINDS: dict[str, Callable[[Context, FactSpec], Fact]] = {
    "age": demographics.age,
    "sex": demographics.sex,
    "condition": conditions.condition,
    "measurement": labs.measurement,
    "uln-ratio": labs.uln_ratio,
    "qualitative": labs.qualitative,
    "creatinine-clearance": labs.creatinine_clearance,
    "glucocorticoid-dose": medications.glucocorticoid_dose,
    "medication-started": medications.medication_started,
    "medication-dose-changed": medications.medication_dose_changed,
    "medication-given": medications.medication_given,
    "heart-failure-class": conditions.heart_failure_class,
    "inpatient-stay": conditions.inpatient_stay,
    "medication-allergy-count": conditions.medication_allergy_count,
}


def _derive(ctx: Context, spec: FactSpec) -> Fact:
    try:
        return KINDS[spec.kind](ctx, spec)
    except Exception as exc:  # one odd resource must not sink the patient, let alone the run
        # Where, never what: an exception's message may quote the data that broke it.
        log.warning("fact %s failed for a patient: %s", spec.name, logs.where(exc))
        return Fact(spec.name, None, reason=f"could not be computed ({type(exc).__name__}); see the log")


def context(record: PatientRecord, mappings: Mappings, as_of: dt.date) -> Context:
    return Context(record=record, mappings=mappings, as_of=as_of, derive=_derive)
