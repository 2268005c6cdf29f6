"""Medication resources as ``Exposure``s: one drug, a route, the days it was taken and the mg per day.

MedicationRequest, MedicationStatement and MedicationAdministration all become Exposures. A
MedicationRequest whose administrations are in the record is represented by those administrations only, so
a dose is never counted twice; a taper (dosages in sequence with their own dates) is one Exposure per step.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fhir_adapter.config.types import Concept, Glucocorticoid
from fhir_adapter.facts import codes, dosage
from fhir_adapter.facts.context import Context
from fhir_adapter.facts.fhirjson import (
    codings,
    parse_date,
    period_bounds,
    ref_id,
    reference_label,
    status_of,
    texts,
)
from fhir_adapter.model import Resource

MED_TYPES = ("MedicationRequest", "MedicationStatement", "MedicationAdministration")


@dataclass(frozen=True, slots=True)
class Exposure:
    resource: Resource
    ref: str
    names: tuple[str, ...]
    codings: tuple[tuple[str, str, str], ...]
    medication: Resource | None
    start: dt.date | None
    end: dt.date | None  # inclusive
    mg_per_day: Decimal | str  # str: why unknown
    route: Any
    taken: bool

    def covers(self, day: dt.date) -> bool:
        return self.start is not None and self.start <= day and (self.end is None or day <= self.end)


def _medication(ctx: Context, resource: Resource) -> tuple[Any, Resource | None]:
    """The drug's CodeableConcept and its Medication resource (contained, referenced, or R5 CodeableReference)."""
    cc = resource.get("medicationCodeableConcept")
    ref = resource.get("medicationReference")
    r5 = resource.get("medication")
    if isinstance(r5, dict):
        cc = cc or r5.get("concept")
        ref = ref or r5.get("reference")
    medication = None
    key = ref.get("reference") if isinstance(ref, dict) else None
    if isinstance(key, str):
        if key.startswith("#"):
            medication = next(
                (
                    c
                    for c in resource.get("contained") or []
                    if isinstance(c, dict) and c.get("id") == key[1:]
                ),
                None,
            )
        else:
            medication = ctx.record.medications.get(key) or ctx.record.medications.get(ref_id(key) or "")
    if medication is not None and cc is None:
        cc = medication.get("code")
    return cc, medication


def _all_codings_and_names(
    cc: Any, medication: Resource | None
) -> tuple[list[tuple[str, str, str]], list[str]]:
    found = list(codings(cc))
    names = texts(cc)
    if medication is not None:
        found += list(codings(medication.get("code")))
        names += texts(medication.get("code"))
        for ing in medication.get("ingredient") or []:
            if isinstance(ing, dict):
                item = ing.get("itemCodeableConcept") or (ing.get("item") or {}).get("concept")
                found += list(codings(item))
                names += texts(item)
    return found, names


def _dosages(resource: Resource) -> list[Resource]:
    rtype = resource.get("resourceType")
    raw = resource.get("dosageInstruction") if rtype == "MedicationRequest" else resource.get("dosage")
    if isinstance(raw, dict):
        return [raw]
    return [d for d in raw or [] if isinstance(d, dict)]


def _bounds(dosage: Resource) -> Any:
    timing = dosage.get("timing")
    repeat = timing.get("repeat") if isinstance(timing, dict) else None
    return repeat.get("boundsPeriod") if isinstance(repeat, dict) else None


def _phases(dosages: list[Resource]) -> list[list[Resource]]:
    """A taper (dosages in sequence, each with its own boundsPeriod) is one phase per sequence, each
    taken over its own dates; otherwise the order's dosages form one phase."""
    groups: dict[Any, list[Resource]] = {}
    for i, d in enumerate(dosages):
        groups.setdefault(d.get("sequence", f"#{i}"), []).append(d)
    if len(groups) > 1 and any(_bounds(d) for d in dosages):
        return list(groups.values())
    return [dosages]


def _period(
    resource: Resource, dosages: list[Resource], as_of: dt.date
) -> tuple[dt.date | None, dt.date | None]:
    status = status_of(resource)
    start = end = None
    for d in dosages:
        timing: dict[str, Any] = d["timing"] if isinstance(d.get("timing"), dict) else {}
        repeat: dict[str, Any] = timing["repeat"] if isinstance(timing.get("repeat"), dict) else {}
        s, e = period_bounds(repeat.get("boundsPeriod"))
        start, end = start or s, end or e
    rtype = resource.get("resourceType")
    if rtype == "MedicationAdministration" or rtype == "MedicationStatement":
        s, e = period_bounds(resource.get("effectivePeriod"))
        instant = parse_date(resource.get("effectiveDateTime"))
        start = start or s or instant
        # An administration happens on its day(s): an open "in-progress" one is not given for ever.
        end = end or e or (instant or start if rtype == "MedicationAdministration" else None)
        if rtype == "MedicationStatement" and start is None:
            start = parse_date(resource.get("dateAsserted"))
    else:
        validity = (resource.get("dispenseRequest") or {}).get("validityPeriod")
        s, e = period_bounds(validity)
        start = start or s or parse_date(resource.get("authoredOn"))
        end = end or (e if status != "active" else None)
    if end is None and status in {"completed", "stopped"}:
        # Finished with no recorded end: the only day we know it was taken is its start.
        end = start
    if end is None and status not in {"active", "on-hold", "in-progress", ""} and start is not None:
        end = start
    return start, end


def _mg_per_day(
    ctx: Context, resource: Resource, dosages: list[Resource], medication: Resource | None, names: list[str]
) -> Decimal | str:
    rules, table = ctx.mappings.medications, ctx.mappings.units
    weight_fact = ctx.fact(rules.weight_fact)
    weight = weight_fact.value if isinstance(weight_fact.value, Decimal) else None
    if resource.get("resourceType") == "MedicationAdministration":
        dose = dosage.dose_quantity(dosages[0]) if dosages else None
        if dose is None:
            return "administration without a dose"
        return dosage.dose_mg(dose, rules, table, medication, names, weight)
    if not dosages:
        return "no dosage"
    # Dosages that share a sequence number are taken together; different sequences follow each other,
    # so the day's amount is the largest concurrent group.
    groups: dict[Any, Decimal] = defaultdict(Decimal)
    for i, d in enumerate(dosages):
        amount = dosage.dose_mg(dosage.dose_quantity(d), rules, table, medication, names, weight)
        if isinstance(amount, str):
            text = d.get("text")
            return (
                f"dosage only as text: {text.strip()[:80]!r}"
                if isinstance(text, str) and text.strip()
                else amount
            )
        freq = dosage.per_day(d, rules)
        if isinstance(freq, str):
            return freq
        groups[d.get("sequence", f"#{i}")] += amount * freq
    return max(groups.values())


def of_record(ctx: Context) -> list[Exposure]:
    cached = ctx.cache.get("exposures")
    if cached is not None:
        return list(cached)
    administered_requests = {
        ref_id(a.get("request"))
        for a in ctx.record.of_type("MedicationAdministration")
        if ref_id(a.get("request"))
    }
    out = []
    rules = ctx.mappings.medications
    for rtype in MED_TYPES:
        for resource in ctx.record.of_type(rtype):
            ref = reference_label(resource)
            status = status_of(resource)
            if status in rules.never_statuses:
                continue
            if rtype == "MedicationRequest" and ref in administered_requests:
                continue
            taken_set = (
                rules.administered_statuses if rtype == "MedicationAdministration" else rules.taken_statuses
            )
            cc, medication = _medication(ctx, resource)
            found, names = _all_codings_and_names(cc, medication)
            dosages = _dosages(resource)
            route = next((d.get("route") for d in dosages if d.get("route")), None)
            for part in _phases(dosages):
                start, end = _period(resource, part, ctx.as_of)
                out.append(
                    Exposure(
                        resource=resource,
                        ref=ref,
                        names=tuple(names),
                        codings=tuple(found),
                        medication=medication,
                        start=start,
                        end=end,
                        mg_per_day=_mg_per_day(ctx, resource, part, medication, names),
                        route=route,
                        taken=status in taken_set,
                    )
                )
    ctx.cache["exposures"] = tuple(out)
    return out


def drug_matches(concept: Concept, exp: Exposure) -> bool:
    # Text always counts for drugs: orders carry product-level codes (RxNorm SCD) the value set lacks.
    coded = {"coding": [{"system": s, "code": c} for s, c, _ in exp.codings]}
    return codes.code_matches(concept, coded) or codes.text_matches(concept, list(exp.names))


def glucocorticoid_of(ctx: Context, exp: Exposure) -> Glucocorticoid | None:
    for gc in ctx.mappings.medications.glucocorticoids:
        if any((s, c) in gc.codes for s, c, _ in exp.codings):
            return gc
    # Longest name wins: "methylprednisolone" over "prednisolone", "prednisolone" over "prednisone".
    best: tuple[int, Glucocorticoid] | None = None
    for gc in ctx.mappings.medications.glucocorticoids:
        for name in gc.names:
            if any(name in n.lower() for n in exp.names) and (best is None or len(name) > best[0]):
                best = (len(name), gc)
    return best[1] if best else None


def is_iv(ctx: Context, exp: Exposure) -> bool:
    route = ctx.concept(ctx.mappings.medications.intravenous_route_concept)
    return exp.route is not None and codes.matches(route, exp.route)


def is_systemic(ctx: Context, exp: Exposure) -> bool:
    rules = ctx.mappings.medications
    if exp.route is not None and codes.matches(ctx.concept(rules.non_systemic_route_concept), exp.route):
        return False
    return not codes.text_matches(ctx.concept(rules.non_systemic_form_concept), list(exp.names))
