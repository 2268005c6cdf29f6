"""Closed-world facts: diagnoses, conditions graded by a class, allergies and inpatient stays.

No record means "does not have it", so a ``False`` fact names what was searched.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from fhir_adapter.config.types import Concept, FactSpec
from fhir_adapter.facts import codes
from fhir_adapter.facts.context import Context, add_years
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
from fhir_adapter.facts.readings import ref_of, where
from fhir_adapter.model import Evidence, Fact, Resource

CURRENT = frozenset({"active", "recurrence", "relapse"})
REFUTED = frozenset({"refuted", "entered-in-error"})


def onset_date(condition: Resource) -> dt.date | None:
    """``onsetDateTime``, else ``onsetPeriod.start``, else ``recordedDate`` (as the second trial's spec defines onset)."""
    start, _ = period_bounds(condition.get("onsetPeriod"))
    return parse_date(condition.get("onsetDateTime")) or start or parse_date(condition.get("recordedDate"))


def usable(condition: Resource, as_of: dt.date) -> bool:
    if is_ignored(condition) or concept_code(condition.get("verificationStatus")) in REFUTED:
        return False
    recorded = onset_date(condition)
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
    n = ctx.record.count("Condition")
    detail = f"no {what} among {n} Condition resource(s)"
    return Fact(spec.name, False, evidence=(Evidence(ctx.patient_ref, detail),), reason=detail)


def conditions_of(ctx: Context, spec: FactSpec, scope: str = "ever") -> list[Resource]:
    """The usable Conditions in the fact's ``concepts`` but in none of its ``exclude_concepts``
    (basal cell carcinoma of the skin is a malignancy the trial does not count), each once."""
    excluded = [ctx.concept(n) for n in spec.get("exclude_concepts", [])]
    found: dict[int, Resource] = {}
    for name in spec.get("concepts"):
        for cond in matching_conditions(ctx, ctx.concept(name), scope):
            if not any(codes.matches(x, cond.get("code")) for x in excluded):
                found.setdefault(id(cond), cond)
    return list(found.values())


def condition(ctx: Context, spec: FactSpec) -> Fact:
    """Does the patient have one of the concepts' Conditions? ``scope``: ``ever`` (history counts),
    ``current``, or ``current-or-onset-in-window`` (current, or with an onset inside the fact's window;
    one that is neither current nor dated is unknown)."""
    scope = str(spec.get("scope", "ever"))
    if scope == "current-or-onset-in-window":
        return _current_or_recent(ctx, spec)
    found: list[Resource] = conditions_of(ctx, spec, scope)
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


def _current_or_recent(ctx: Context, spec: FactSpec) -> Fact:
    start = ctx.window_start(spec)
    found = conditions_of(ctx, spec)
    if not found:
        return _none_found(ctx, spec, spec.label)
    undated: list[Resource] = []
    older: list[Evidence] = []
    for cond in found:
        onset = onset_date(cond)
        if is_current(cond):
            detail = f"{_describe(cond)}: current"
        elif onset is not None and start is not None and onset >= start:
            detail = f"{_describe(cond)}: onset {onset}, on or after {start}"
        else:
            if onset is None:
                undated.append(cond)
            else:
                older.append(
                    Evidence(reference_label(cond), f"{_describe(cond)}: onset {onset}, before {start}")
                )
            continue
        return Fact(spec.name, True, evidence=(Evidence(reference_label(cond), detail),), reason=detail)
    if undated:
        refs = ", ".join(reference_label(c) for c in undated)
        return Fact(spec.name, None, reason=f"{spec.label}: {refs} is not current and has no onset date")
    detail = f"{spec.label}: none current, every onset before {start}"
    return Fact(spec.name, False, evidence=tuple(older), reason=detail)


def condition_onset_near(ctx: Context, spec: FactSpec) -> Fact:
    """A Condition of ``concepts`` whose onset lies within ``within_years`` calendar years before or
    after the earliest onset among the ``anchor_concepts`` Conditions (cancer within 2 years of the
    myositis). No such Condition: false; one without an onset, or no dated anchor: unknown."""
    found = conditions_of(ctx, spec)
    what = str(spec.get("condition_label"))
    anchor_label = str(spec.get("anchor_label"))
    if not found:
        return _none_found(ctx, spec, what)
    anchors = [
        (d, c)
        for name in spec.get("anchor_concepts")
        for c in matching_conditions(ctx, ctx.concept(name), "ever")
        if (d := onset_date(c)) is not None
    ]
    if not anchors:
        return Fact(
            spec.name, None, reason=f"{what} recorded, but no {anchor_label} Condition has an onset date"
        )
    anchor_day, anchor = min(anchors, key=lambda t: (t[0], reference_label(t[1])))
    years = int(spec.get("within_years"))
    low, high = add_years(anchor_day, -years), add_years(anchor_day, years)
    anchor_ev = Evidence(reference_label(anchor), f"{anchor_label} onset {anchor_day} (earliest)")
    undated, apart = [], []
    for cond in found:
        onset = onset_date(cond)
        if onset is None:
            undated.append(reference_label(cond))
        elif low <= onset <= high:
            detail = f"{what} {_describe(cond)} onset {onset}, within {years} years of {anchor_day} ({low}..{high})"
            return Fact(
                spec.name, True, evidence=(Evidence(reference_label(cond), detail), anchor_ev), reason=detail
            )
        else:
            apart.append(Evidence(reference_label(cond), f"{what} onset {onset}, outside {low}..{high}"))
    if undated:
        return Fact(spec.name, None, reason=f"{what} without an onset date: {', '.join(undated)}")
    detail = f"every {what} onset lies outside {low}..{high} ({years} years around {anchor_day})"
    return Fact(spec.name, False, evidence=(*apart, anchor_ev), reason=detail)


def _allergy_active(allergy: Resource) -> bool:
    if concept_code(allergy.get("verificationStatus")) in REFUTED:
        return False
    status = concept_code(allergy.get("clinicalStatus"))
    return status in {"", "active"}


def medication_allergy_count(ctx: Context, spec: FactSpec) -> Fact:
    distinct: dict[str, Resource] = {}
    none_known = ctx.concept(str(spec.get("none_concept")))
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


def _class_of(ctx: Context, spec: FactSpec, cc_or_obs: Resource) -> bool | None:
    """True for a high class (NYHA III/IV), False for a low one, None when the record does not say."""
    high = ctx.concept(str(spec.get("high_class_concept")))
    low = ctx.concept(str(spec.get("low_class_concept")))
    value = cc_or_obs.get("valueCodeableConcept")
    candidates: list[str] = []
    if value is not None:
        if codes.code_matches(high, value):
            return True
        if codes.code_matches(low, value):
            return False
        candidates = texts(value)
    for key in ("valueInteger", "valueString"):
        raw = cc_or_obs.get(key)
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw >= int(spec.get("high_class_from")) if raw >= 1 else None
        if isinstance(raw, str):
            candidates.append(raw)
    # High before low: "class i" is a substring of "class iii".
    padded = [f"{t} " for t in candidates]
    if codes.text_matches(high, padded):
        return True
    if codes.text_matches(low, padded):
        return False
    return None


def condition_class(ctx: Context, spec: FactSpec) -> Fact:
    """A condition graded by a class (heart failure by NYHA): true for a current class-specific Condition
    or a high class in the latest classifying Observation; the condition without a class is unknown."""
    condition_label, class_label = str(spec.get("condition_label")), str(spec.get("class_label"))
    high_label, low_label = str(spec.get("high_label")), str(spec.get("low_label"))
    high = ctx.concept(str(spec.get("high_class_concept")))
    for cond in ctx.record.of_type("Condition"):
        if usable(cond, ctx.as_of) and is_current(cond) and codes.code_matches(high, cond.get("code")):
            detail = f"{_describe(cond)}: {class_label} {high_label}"
            return Fact(spec.name, True, evidence=(Evidence(reference_label(cond), detail),), reason=detail)
    observations = in_window(
        ctx.observations(str(spec.get("class_observation_concept"))),
        ctx.as_of,
        ctx.window_start(spec),
    )
    graded = matching_conditions(ctx, ctx.concept(str(spec.get("condition_concept"))), "current")
    graded_evidence = tuple(Evidence(reference_label(c), _describe(c)) for c in graded)
    for dated in observations:
        is_high = _class_of(ctx, spec, dated.resource)
        if is_high is None:
            continue
        ev = Evidence(
            ref_of(dated.resource),
            f"{class_label} {high_label if is_high else low_label} on {dated.date}{where(dated.resource)}",
        )
        return Fact(spec.name, is_high, evidence=(ev, *graded_evidence), reason=ev.detail)
    if graded:
        refs = ", ".join(e.reference for e in graded_evidence)
        return Fact(spec.name, None, reason=f"{condition_label} ({refs}) without {class_label}")
    return _none_found(ctx, spec, f"{condition_label} or {class_label} {high_label}")


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
        why = _reason_matching(ctx, enc, reason, conditions)
        if why:
            detail = f"inpatient stay {begin}..{end or 'ongoing'} for {why}"
            return Fact(spec.name, True, evidence=(Evidence(reference_label(enc), detail),), reason=detail)
    detail = f"no {spec.label} since {start}"
    return Fact(spec.name, False, evidence=(Evidence(ctx.patient_ref, detail),), reason=detail)


def _reason_matching(
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
