"""Medication facts: prednisone-equivalent mg/kg/d, starts and dose changes of a drug class, IV drugs."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import defaultdict
from decimal import Decimal

from fhir_adapter.config.types import Concept, FactSpec, Glucocorticoid
from fhir_adapter.facts import codes, exposures
from fhir_adapter.facts.context import Context
from fhir_adapter.facts.exposures import Exposure
from fhir_adapter.facts.labs import fmt
from fhir_adapter.model import Evidence, Fact


def _window(ctx: Context, spec: FactSpec) -> tuple[dt.date, dt.date]:
    start = ctx.window_start(spec) or ctx.as_of
    return start, ctx.as_of


def glucocorticoid_dose(ctx: Context, spec: FactSpec) -> Fact:
    """Highest per-day sum of prednisone-equivalent mg over the window, divided by the latest weight."""
    start, end = _window(ctx, spec)
    iv_only = spec.get("routes") == "intravenous"
    relevant: list[tuple[Exposure, Glucocorticoid]] = []
    for exp in exposures.of_record(ctx):
        if not exp.taken or exp.start is None or exp.start > end or (exp.end is not None and exp.end < start):
            continue
        gc = exposures.glucocorticoid_of(ctx, exp)
        if gc is None or not exposures.is_systemic(ctx, exp) or (iv_only and not exposures.is_iv(ctx, exp)):
            continue
        relevant.append((exp, gc))
    kind = "intravenous glucocorticoid" if iv_only else "systemic glucocorticoid"
    if not relevant:
        detail = f"no {kind} taken {start}..{end}"
        return Fact(
            spec.name,
            Decimal(0),
            unit="mg/kg/d",
            evidence=(Evidence(ctx.patient_ref, detail),),
            reason=detail,
        )
    weight = ctx.fact(str(spec.get("weight_fact")))
    if not isinstance(weight.value, Decimal) or weight.value <= 0:
        return Fact(
            spec.name, None, reason=f"{weight.reason or 'no body weight'}; needed for the prednisone dose"
        )
    unknown = [f"{e.ref}: {e.mg_per_day}" for e, _ in relevant if isinstance(e.mg_per_day, str)]
    best_day, best_total, contributors = None, Decimal(0), []
    day = start
    while day <= end:
        total, parts = Decimal(0), []
        for exp, gc in relevant:
            if exp.covers(day) and isinstance(exp.mg_per_day, Decimal):
                eq = exp.mg_per_day * gc.factor
                total += eq
                parts.append((exp, gc, eq))
        if total > best_total:
            best_day, best_total, contributors = day, total, parts
        day += dt.timedelta(days=1)
    per_kg = best_total / weight.value
    evidence = [
        Evidence(exp.ref, f"{gc.name} {fmt(exp.mg_per_day)} mg/d = {fmt(eq)} mg/d prednisone-equivalent")  # type: ignore[arg-type]
        for exp, gc, eq in contributors
    ]
    evidence += list(weight.evidence)
    if unknown:
        reason = "dose unknown for " + "; ".join(unknown)
        if best_total == 0:
            return Fact(spec.name, None, reason=reason)
        detail = f"at least {fmt(per_kg)} mg/kg/d on {best_day} ({reason})"
        return Fact(
            spec.name, per_kg, unit="mg/kg/d", evidence=tuple(evidence), reason=detail, comparator=">="
        )
    detail = (
        f"highest {kind} {fmt(best_total)} mg/d prednisone-equivalent on {best_day} / "
        f"{fmt(weight.value)} kg = {fmt(per_kg)} mg/kg/d"
    )
    if best_day is None:
        detail = f"{kind} in {start}..{end} but no day with a dose"
    return Fact(spec.name, per_kg, unit="mg/kg/d", evidence=tuple(evidence), reason=detail)


def _ingredient_key(concept: Concept, exp: Exposure) -> str:
    """Which drug this is, so records of one drug are followed together and distinct drugs counted:
    the concept's name pattern the drug name contains ("methotrexate"), else its code, else the record.
    A name first, because one drug arrives coded in one record and as text only in the next."""
    for pattern in concept.text:
        if any(pattern in n.lower() for n in exp.names):
            return pattern
    for system, code, _ in exp.codings:
        if (system, code) in concept.codes:
            return f"{system}|{code}"
    return exp.ref


def _name(exp: Exposure) -> str:
    return exp.names[-1][:60] if exp.names else exp.ref


def _by_drug(ctx: Context, spec: FactSpec) -> dict[str, list[Exposure]]:
    """The patient's exposures to the fact's drugs, grouped by drug. The drugs: those of ``concept`` /
    ``concepts``, and with ``glucocorticoids = "systemic"`` every systemic glucocorticoid as well."""
    names = [spec.get("concept")] if spec.get("concept") else []
    concepts = [ctx.concept(str(n)) for n in [*names, *spec.get("concepts", [])]]
    with_glucocorticoids = spec.get("glucocorticoids") == "systemic"
    groups: dict[str, list[Exposure]] = defaultdict(list)
    for exp in exposures.of_record(ctx):
        concept = next((c for c in concepts if exposures.drug_matches(c, exp)), None)
        if concept is not None:
            groups[_ingredient_key(concept, exp)].append(exp)
        elif with_glucocorticoids:
            gc = exposures.glucocorticoid_of(ctx, exp)
            if gc is not None and exposures.is_systemic(ctx, exp):
                groups[gc.name].append(exp)
    return groups


def medication_started(ctx: Context, spec: FactSpec) -> Fact:
    start, end = _window(ctx, spec)
    groups = _by_drug(ctx, spec)
    undated = []
    for exps in groups.values():
        dated = [e for e in exps if e.start is not None and e.start <= end]
        undated += [e.ref for e in exps if e.start is None]
        if not dated:
            continue
        first = min(dated, key=lambda e: e.start or dt.date.max)
        if first.start is not None and first.start >= start:
            detail = f"{_name(first)} first recorded {first.start} (within {start}..{end})"
            return Fact(spec.name, True, evidence=(Evidence(first.ref, detail),), reason=detail)
    if undated:
        return Fact(spec.name, None, reason=f"{spec.label}: no start date on {', '.join(undated)}")
    if groups:
        firsts = [
            min(e.start for e in exps if e.start) for exps in groups.values() if any(e.start for e in exps)
        ]
        detail = (
            f"every {spec.get('drug_label')} started before {start} (first: {min(firsts)})"
            if firsts
            else "none dated"
        )
        refs = tuple(
            Evidence(exps[0].ref, f"{k} since {min((e.start for e in exps if e.start), default='?')}")
            for k, exps in groups.items()
        )
        return Fact(spec.name, False, evidence=refs, reason=detail)
    detail = f"no {spec.get('drug_label')} order, statement or administration"
    return Fact(spec.name, False, evidence=(Evidence(ctx.patient_ref, detail),), reason=detail)


def medication_dose_changed(ctx: Context, spec: FactSpec) -> Fact:
    """A change of one drug's daily dose in the window. ``method = "records"`` (default): a later record
    of the drug, starting in the window, whose daily dose differs from the record before it.
    ``method = "daily"``: a day in the window on which the drug is taken at a daily dose different from
    the day before, both days taken, whichever records they come from (stopping is no change)."""
    if spec.get("method") == "daily":
        return _daily_dose_changed(ctx, spec)
    start, end = _window(ctx, spec)
    undecided = []
    checked: list[Evidence] = []
    for drug, exps in _by_drug(ctx, spec).items():
        dated = sorted(
            (e for e in exps if e.start is not None and e.start <= end), key=lambda e: (e.start, e.ref)
        )
        for before, after in itertools.pairwise(dated):
            if after.start is None or after.start < start:
                continue
            if isinstance(before.mg_per_day, str) or isinstance(after.mg_per_day, str):
                undecided.append(
                    f"{drug} {after.ref} ({after.mg_per_day if isinstance(after.mg_per_day, str) else before.mg_per_day})"
                )
                continue
            if before.mg_per_day != after.mg_per_day:
                detail = (
                    f"{drug} {fmt(before.mg_per_day)} mg/d ({before.ref}) -> {fmt(after.mg_per_day)} mg/d "
                    f"from {after.start}"
                )
                return Fact(
                    spec.name,
                    True,
                    evidence=(Evidence(after.ref, detail), Evidence(before.ref, "previous dose")),
                    reason=detail,
                )
            checked.append(Evidence(after.ref, f"{drug} unchanged at {fmt(after.mg_per_day)} mg/d"))
    if undecided:
        return Fact(spec.name, None, reason="dose not comparable: " + "; ".join(undecided))
    detail = f"no {spec.get('drug_label')} dose change {start}..{end}"
    return Fact(
        spec.name, False, evidence=tuple(checked) or (Evidence(ctx.patient_ref, detail),), reason=detail
    )


def _day_dose(exps: list[Exposure], day: dt.date) -> tuple[Decimal | str | None, list[Exposure]]:
    """The drug's total mg on ``day`` over the taken records covering it; None when not taken, a str
    when a covering record's dose is unknown."""
    covering = [e for e in exps if e.taken and e.covers(day)]
    if not covering:
        return None, []
    unknown = next((e for e in covering if isinstance(e.mg_per_day, str)), None)
    if unknown is not None:
        return f"{unknown.ref}: {unknown.mg_per_day}", covering
    return sum((e.mg_per_day for e in covering if isinstance(e.mg_per_day, Decimal)), Decimal(0)), covering


def _daily_dose_changed(ctx: Context, spec: FactSpec) -> Fact:
    start, end = _window(ctx, spec)
    undecided: list[str] = []
    checked: list[Evidence] = []
    for drug, exps in sorted(_by_drug(ctx, spec).items()):
        previous, before_refs = _day_dose(exps, start - dt.timedelta(days=1))
        day = start
        seen_taken = False
        while day <= end:
            dose, refs = _day_dose(exps, day)
            if dose is not None and previous is not None:
                if isinstance(dose, str) or isinstance(previous, str):
                    undecided.append(f"{drug} on {day} ({dose if isinstance(dose, str) else previous})")
                elif dose != previous:
                    detail = f"{drug} {fmt(previous)} mg/d on {day - dt.timedelta(days=1)} -> {fmt(dose)} mg/d on {day}"
                    now = {e.ref for e in refs}
                    evidence = tuple(
                        Evidence(ref, detail if ref in now else "previous dose")
                        for ref in dict.fromkeys(e.ref for e in [*refs, *before_refs])
                    )
                    return Fact(spec.name, True, evidence=evidence, reason=detail)
            if dose is not None:
                seen_taken = True
            previous, before_refs = dose, refs
            day += dt.timedelta(days=1)
        if seen_taken and isinstance(previous, Decimal):
            checked.append(Evidence(exps[0].ref, f"{drug} daily dose unchanged {start}..{end}"))
    if undecided:
        return Fact(spec.name, None, reason="daily dose not comparable: " + "; ".join(undecided[:5]))
    detail = f"no {spec.get('drug_label')} dose change {start}..{end}"
    return Fact(
        spec.name, False, evidence=tuple(checked) or (Evidence(ctx.patient_ref, detail),), reason=detail
    )


def medication_count(ctx: Context, spec: FactSpec) -> Fact:
    """How many distinct drugs of the fact's drugs were taken in the window (closed world: no record is
    none). A taken record without dates makes the count a range (at least / at most)."""
    start, end = _window(ctx, spec)
    taken: dict[str, Exposure] = {}
    maybe: dict[str, Exposure] = {}
    for drug, exps in sorted(_by_drug(ctx, spec).items()):
        for exp in exps:
            if not exp.taken:
                continue
            if exp.start is None:
                maybe.setdefault(drug, exp)
            elif exp.start <= end and (exp.end is None or exp.end >= start):
                taken.setdefault(drug, exp)
                break
    maybe = {d: e for d, e in maybe.items() if d not in taken}
    n = len(taken)
    evidence = tuple(Evidence(e.ref, f"{drug} taken in {start}..{end}") for drug, e in taken.items())
    label = spec.get("drug_label")
    if maybe:
        detail = f"{n} to {n + len(maybe)} {label}(s) in {start}..{end}: no dates on {', '.join(e.ref for e in maybe.values())}"
        return Fact(spec.name, Decimal(n), evidence=evidence, reason=detail, upper=Decimal(n + len(maybe)))
    if not taken:
        detail = f"no {label} taken {start}..{end}"
        return Fact(spec.name, Decimal(0), evidence=(Evidence(ctx.patient_ref, detail),), reason=detail)
    detail = f"{n} {label}(s) taken {start}..{end}: {', '.join(taken)}"
    return Fact(spec.name, Decimal(n), evidence=evidence, reason=detail)


def medication_given(ctx: Context, spec: FactSpec) -> Fact:
    start, end = _window(ctx, spec)
    concept = ctx.concept(str(spec.get("concept")))
    route = ctx.concept(str(spec.get("route_concept")))
    for exp in exposures.of_record(ctx):
        if not exp.taken or exp.start is None or exp.start > end or (exp.end is not None and exp.end < start):
            continue
        if exposures.drug_matches(concept, exp) and exp.route is not None and codes.matches(route, exp.route):
            detail = f"{spec.label}: {(exp.names or ('?',))[-1][:60]} from {exp.start}"
            return Fact(spec.name, True, evidence=(Evidence(exp.ref, detail),), reason=detail)
    detail = f"no {spec.label} {start}..{end}"
    return Fact(spec.name, False, evidence=(Evidence(ctx.patient_ref, detail),), reason=detail)
