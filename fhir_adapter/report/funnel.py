"""Counts: status totals and the ATLAS-style attrition funnel over the criteria in protocol order."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from fhir_adapter.report._data import (
    STATUSES,
    Criterion,
    Result,
    Subject,
    by_id,
    criteria,
    criterion_order,
    patient,
    status,
    subjects,
    text,
    verdict,
)

# What a verdict does to a patient at one step of the funnel.
PASS = "pass"  # inclusion met / exclusion not met: goes on
UNKNOWN = "unknown"  # goes on, but holds the patient at potential-candidate
FAIL = "fail"  # inclusion not met / exclusion met: excluded here
OTHER = "other"  # not-evaluable, not-applicable, or not reported for this patient: goes on
EFFECTS = (PASS, UNKNOWN, FAIL, OTHER)


def effect(criterion_type: str, verdict_code: str) -> str:
    """Classify one verdict of a criterion of the given type (missing criterion: ``verdict_code=""``)."""
    if verdict_code == "unknown":
        return UNKNOWN
    if criterion_type == "exclusion":
        return {"met": FAIL, "not-met": PASS}.get(verdict_code, OTHER)
    if criterion_type == "component":
        return {"met": PASS}.get(verdict_code, OTHER)
    return {"met": PASS, "not-met": FAIL}.get(verdict_code, OTHER)


def excludes(criterion: Criterion) -> bool:
    return effect(text(criterion.get("type")), verdict(criterion)) == FAIL


def status_counts(result: Result) -> dict[str, int]:
    """Subjects per status, the three spec statuses always present (others counted as they come)."""
    counts: Counter[str] = Counter(status(s) for s in subjects(result))
    return {**{st: counts.get(st, 0) for st in STATUSES}, **dict(counts)}


def expected_status(subject: Subject) -> str:
    """The status the spec's rule gives the subject's criteria (components are not read)."""
    cs = criteria(subject)
    if any(excludes(c) for c in cs):
        return "ineligible"
    if any(verdict(c) == "unknown" for c in cs):
        return "potential-candidate"
    return "candidate"


def status_mismatches(result: Result) -> list[tuple[str, str, str]]:
    """(patient, status in the result, status the criteria give) where the two disagree."""
    return [
        (patient(s), status(s), expected_status(s))
        for s in subjects(result)
        if status(s) != expected_status(s)
    ]


@dataclass(frozen=True, slots=True)
class FunnelStep:
    """One criterion of the attrition funnel.

    ``entering`` patients reached this step (not excluded by an earlier one); of them ``passed``,
    ``unknown``, ``failed`` (excluded here) and ``other`` (not-evaluable, not-applicable or not
    reported; ``not_reported`` of those had no verdict at all). ``remaining`` = entering - failed.
    ``failed_overall`` counts the whole run, ignoring the order (ATLAS's per-rule figure).
    """

    index: int
    id: str
    type: str
    entering: int
    passed: int
    unknown: int
    failed: int
    other: int
    not_reported: int
    remaining: int
    met_overall: int
    not_met_overall: int
    unknown_overall: int
    failed_overall: int


def funnel(result: Result, order: Sequence[str] | None = None) -> list[FunnelStep]:
    """Sequential attrition over the top-level criteria (see :func:`criterion_order`)."""
    subs = subjects(result)
    tables = [by_id(s) for s in subs]
    alive = list(range(len(subs)))
    steps: list[FunnelStep] = []
    for n, spec in enumerate(criterion_order(result, order), start=1):
        counts: Counter[str] = Counter()
        not_reported = 0
        survivors: list[int] = []
        for i in alive:
            c = tables[i].get(spec.id)
            eff = effect(spec.type, verdict(c) if c is not None else "")
            counts[eff] += 1
            not_reported += c is None
            if eff != FAIL:
                survivors.append(i)
        overall = Counter(verdict(t[spec.id]) for t in tables if spec.id in t)
        failed_overall = sum(1 for t in tables if spec.id in t and excludes(t[spec.id]))
        steps.append(
            FunnelStep(
                index=n,
                id=spec.id,
                type=spec.type,
                entering=len(alive),
                passed=counts[PASS],
                unknown=counts[UNKNOWN],
                failed=counts[FAIL],
                other=counts[OTHER],
                not_reported=not_reported,
                remaining=len(survivors),
                met_overall=overall["met"],
                not_met_overall=overall["not-met"],
                unknown_overall=overall["unknown"],
                failed_overall=failed_overall,
            )
        )
        alive = survivors
    return steps
