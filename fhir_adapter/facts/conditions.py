"""Closed-world facts: diagnoses, heart failure class, allergies and inpatient stays.

No record means "does not have it", so a ``False`` fact names what was searched.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from fhir_adapter.config.types import Concept, FactSpec
from fhir_adapter.facts import codes
from fhir_adapter.facts.context import Context
from fhir_adapter.facts.fhirjson import (
    codings,
    concept_code,
    is_ignored,
    parse_date,
    period_bounds,
    ref_id,
    reference_label,
    texts,
)
from fhir_adapter.facts.observations import in_window
from fhir_adapter.model import Evidence, Fact, Resource

CURRENT = frozenset({"active", "recurrence", "relapse"})
REFUTED = frozenset({"refuted", "entered-in-error"})


def usable(condition: Resource, as_of: dt.date) -> bool:
    if is_ignored(condition) or concept_code(condition.get("verificationStatus")) in REFUTED:
        return False
    recorded = parse_date(condition.get("onsetDateTime")) or parse_date(condition.get("recordedDate"))
    return recorded is None or recorded <= as_of


def is_current(condition: Resource) -> bool:
    status = concept_code(condition.get("clinicalStatus"))
    if status:
        return status in CURRENT
    return not any(k.startswith("abatement") for k in condition)


def label(cc: Any) -> str:
    shown = texts(cc)
    if shown:
        return shown[-1][:60]
    for system, code, _ in codings(cc):
        return f"{system}|{code}"
    return "uncoded"


def _describe(condition: Resource) -> str:
    status = concept_code(condition.get("clinicalStatus")) or "no clinicalStatus"
    return f"{label(condition.get('code'))} ({status})"


def matching_conditions(ctx: Context, concept: Concept, scope: str) -> list[Resource]:
    out = []
    for cond in ctx.matching("Condition", concept.name):
        if not usable(cond, ctx.as_of):
            continue
        if scope == "current" and not is_current(cond):
            continue
        out.append(cond)
    return out


def _none_found(ctx: Context, spec: FactSpec, what: str) -> Fact:
    n = len(ctx.record.of_type("Condition"))
    detail = f"no {what} among {n} Condition resource(s)"
    return Fact(spec.name, False, evidence=(Evidence(ctx.patient_ref, detail),), reason=detail)


def condition(ctx: Context, spec: FactSpec) -> Fact:
    scope = str(spec.get("scope", "ever"))
    found: list[Resource] = []
    for name in spec.get("concepts"):
        found.extend(matching_conditions(ctx, ctx.concept(name), scope))
    if spec.get("also_allergy_intolerance"):
        for name in spec.get("concepts"):
            concept = ctx.concept(name)
            for allergy in ctx.record.of_type("AllergyIntolerance"):
                if _allergy_active(allergy) and codes.matches(concept, allergy.get("code")):
                    found.append(allergy)
    if not found:
        qualifier = "current " if scope == "current" and not spec.label.startswith("current") else ""
        return _none_found(ctx, spec, f"{qualifier}{spec.label}")
    evidence = tuple(Evidence(reference_label(c), _describe(c)) for c in found)
    return Fact(
        spec.name, True, evidence=evidence, reason=f"{spec.label}: " + "; ".join(e.detail for e in evidence)
    )


def _allergy_active(allergy: Resource) -> bool:
    if concept_code(allergy.get("verificationStatus")) in REFUTED:
        return False
    status = concept_code(allergy.get("clinicalStatus"))
    return status in {"", "active"}


def medication_allergy_count(ctx: Context, spec: FactSpec) -> Fact:
    distinct: dict[str, Resource] = {}
    none_known = ctx.concept("no-known-allergy")
    for allergy in ctx.record.of_type("AllergyIntolerance"):
        categories = [c.strip().lower() for c in allergy.get("category") or [] if isinstance(c, str)]
        if "medication" not in categories or not _allergy_active(allergy):
            continue
        if codes.matches(none_known, allergy.get("code")):
            continue  # "no known drug allergy" is recorded as an AllergyIntolerance, but is none
        key = next((f"{s}|{c}" for s, c, _ in codings(allergy.get("code")) if c), None)
        key = key or label(allergy.get("code")).lower()
        distinct.setdefault(key, allergy)
    count = len(distinct)
    if not distinct:
        detail = (
            f"no active medication allergy among {len(ctx.record.of_type('AllergyIntolerance'))} record(s)"
        )
        return Fact(spec.name, Decimal(0), evidence=(Evidence(ctx.patient_ref, detail),), reason=detail)
    evidence = tuple(
        Evidence(reference_label(a), f"allergy to {label(a.get('code'))}") for a in distinct.values()
    )
    return Fact(
        spec.name, Decimal(count), evidence=evidence, reason=f"{count} distinct active medication allergies"
    )


def _nyha_class(ctx: Context, spec: FactSpec, cc_or_obs: Resource) -> int | None:
    """3 for class III/IV, 1 for class I/II, None when the record does not say."""
    high, low = (
        ctx.concept(str(spec.get("class_3_4_concept"))),
        ctx.concept(str(spec.get("class_1_2_concept"))),
    )
    value = cc_or_obs.get("valueCodeableConcept")
    candidates: list[str] = []
    if value is not None:
        if codes.code_matches(high, value):
            return 3
        if codes.code_matches(low, value):
            return 1
        candidates = texts(value)
    for key in ("valueInteger", "valueString"):
        raw = cc_or_obs.get(key)
        if isinstance(raw, int) and not isinstance(raw, bool):
            return 3 if raw >= 3 else 1 if raw >= 1 else None
        if isinstance(raw, str):
            candidates.append(raw)
    # III/IV before I/II: "class i" is a substring of "class iii".
    padded = [f"{t} " for t in candidates]
    if codes.text_matches(high, padded):
        return 3
    if codes.text_matches(low, padded):
        return 1
    return None


def heart_failure_class(ctx: Context, spec: FactSpec) -> Fact:
    high = ctx.concept(str(spec.get("class_3_4_concept")))
    for cond in ctx.record.of_type("Condition"):
        if usable(cond, ctx.as_of) and is_current(cond) and codes.code_matches(high, cond.get("code")):
            detail = f"{_describe(cond)}: NYHA class III/IV"
            return Fact(spec.name, True, evidence=(Evidence(reference_label(cond), detail),), reason=detail)
    nyha_concept = str(spec.get("nyha_observation_concept"))
    nyha = in_window(ctx.matching("Observation", nyha_concept), ctx.as_of, ctx.window_start(spec))
    hf = matching_conditions(ctx, ctx.concept(str(spec.get("heart_failure_concept"))), "current")
    hf_evidence = tuple(Evidence(reference_label(c), _describe(c)) for c in hf)
    for dated in nyha:
        klass = _nyha_class(ctx, spec, dated.resource)
        if klass is None:
            continue
        ev = Evidence(
            reference_label(dated.resource),
            f"NYHA class {'III/IV' if klass == 3 else 'I/II'} on {dated.date}",
        )
        return Fact(spec.name, klass == 3, evidence=(ev, *hf_evidence), reason=ev.detail)
    if hf:
        return Fact(
            spec.name,
            None,
            reason=f"heart failure ({', '.join(e.reference for e in hf_evidence)}) without NYHA class",
        )
    return _none_found(ctx, spec, "heart failure or NYHA class III/IV")


def _coding_concept(value: Any) -> Any:
    """Encounter.class is a Coding in R4 and a list of CodeableConcepts in R5."""
    if isinstance(value, dict) and "coding" not in value and "code" in value:
        return {"coding": [value]}
    return value


def inpatient_stay(ctx: Context, spec: FactSpec) -> Fact:
    kind = ctx.concept(str(spec.get("encounter_concept")))
    reason = ctx.concept(str(spec.get("reason_concept")))
    start = ctx.window_start(spec)
    conditions = {f"Condition/{c.get('id')}": c for c in ctx.record.of_type("Condition")}
    for enc in ctx.record.of_type("Encounter"):
        if is_ignored(enc) or enc.get("status") == "planned":
            continue
        classes = enc.get("class")
        class_list = classes if isinstance(classes, list) else [classes]
        if not any(codes.matches(kind, _coding_concept(c)) for c in [*class_list, *(enc.get("type") or [])]):
            continue
        begin, end = period_bounds(enc.get("period"))
        if begin is None or begin > ctx.as_of or (start is not None and (end or ctx.as_of) < start):
            continue
        why = _infection_reason(ctx, enc, reason, conditions)
        if why:
            detail = f"inpatient stay {begin}..{end or 'ongoing'} for {why}"
            return Fact(spec.name, True, evidence=(Evidence(reference_label(enc), detail),), reason=detail)
    detail = f"no inpatient stay for infection since {start}"
    return Fact(spec.name, False, evidence=(Evidence(ctx.patient_ref, detail),), reason=detail)


def _infection_reason(
    ctx: Context, enc: Resource, reason: Concept, conditions: dict[str, Resource]
) -> str | None:
    for cc in enc.get("reasonCode") or []:
        if codes.matches(reason, cc):
            return label(cc)
    refs = [ref_id(r) for r in enc.get("reasonReference") or []]
    refs += [ref_id(d.get("condition")) for d in enc.get("diagnosis") or [] if isinstance(d, dict)]
    for ref in refs:
        cond = conditions.get(ref or "")
        if cond is not None and usable(cond, ctx.as_of) and codes.matches(reason, cond.get("code")):
            return f"{label(cond.get('code'))} ({ref})"
    own = f"Encounter/{enc.get('id')}"
    for ref, cond in conditions.items():
        if (
            ref_id(cond.get("encounter")) == own
            and usable(cond, ctx.as_of)
            and codes.matches(reason, cond.get("code"))
        ):
            return f"{label(cond.get('code'))} ({ref})"
    return None
