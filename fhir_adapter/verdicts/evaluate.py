"""Evaluate the criteria tree against a patient's facts: verdict, reason and evidence for every node."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from fhir_adapter.config.types import (
    AllOf,
    AnyOf,
    AtLeast,
    Compare,
    ComponentRef,
    Constant,
    Criterion,
    Not,
    Rule,
    Trial,
)
from fhir_adapter.facts.labs import fmt
from fhir_adapter.model import CriterionResult, Evidence, Fact, Status, SubjectResult, Suggestion, Verdict
from fhir_adapter.verdicts import logic

MET, NOT_MET, UNKNOWN = Verdict.MET, Verdict.NOT_MET, Verdict.UNKNOWN
FactLookup = Callable[[str], Fact]


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    reason: str
    evidence: tuple[Evidence, ...] = ()
    # Values found in notes for the facts compared here; never part of the verdict.
    suggestions: tuple[Suggestion, ...] = ()


@dataclass(frozen=True, slots=True)
class Interval:
    """The values a fact allows: ``None`` ends are unbounded; ``*_open`` excludes the end itself."""

    lo: Decimal | None
    lo_open: bool
    hi: Decimal | None
    hi_open: bool


def fact_interval(x: Decimal, comparator: str | None, upper: Decimal | None = None) -> Interval:
    if upper is not None:
        return Interval(x, False, upper, False)
    return {
        None: Interval(x, False, x, False),
        "<": Interval(None, True, x, True),
        "<=": Interval(None, True, x, False),
        ">": Interval(x, True, None, True),
        ">=": Interval(x, False, None, True),
    }[comparator]


def _region(op: str, t: Decimal) -> Interval:
    return {
        "<": Interval(None, True, t, True),
        "<=": Interval(None, True, t, False),
        ">": Interval(t, True, None, True),
        ">=": Interval(t, False, None, True),
        "==": Interval(t, False, t, False),
    }[op]


def _inside(a: Interval, b: Interval) -> bool:
    """Every value of ``a`` lies in ``b``."""
    lo_ok = b.lo is None or (
        a.lo is not None and (a.lo > b.lo or (a.lo == b.lo and (a.lo_open or not b.lo_open)))
    )
    hi_ok = b.hi is None or (
        a.hi is not None and (a.hi < b.hi or (a.hi == b.hi and (a.hi_open or not b.hi_open)))
    )
    return lo_ok and hi_ok


def _apart(a: Interval, b: Interval) -> bool:
    """No value of ``a`` lies in ``b``."""
    if a.hi is not None and b.lo is not None and (a.hi < b.lo or (a.hi == b.lo and (a.hi_open or b.lo_open))):
        return True
    return (
        a.lo is not None and b.hi is not None and (a.lo > b.hi or (a.lo == b.hi and (a.lo_open or b.hi_open)))
    )


def compare_censored(
    x: Decimal, comparator: str | None, op: str, t: Decimal, upper: Decimal | None = None
) -> Verdict:
    """Compare a fact that allows a range of values (censored ``<0.06``, a lower bound, or an interval
    such as the two ages a year-only birthDate allows) with ``op t``.

    Met when every allowed value satisfies the rule, not-met when none does, else unknown.
    """
    if op == "!=":
        return logic.negate(compare_censored(x, comparator, "==", t, upper))
    interval, region = fact_interval(x, comparator, upper), _region(op, t)
    if _inside(interval, region):
        return MET
    return NOT_MET if _apart(interval, region) else UNKNOWN


_WORDS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "==": "is", "!=": "is not"}


def _leaf(rule: Compare, fact: Fact) -> Outcome:
    outcome = _compare(rule, fact)
    return dataclasses.replace(outcome, suggestions=fact.suggestions) if fact.suggestions else outcome


def _compare(rule: Compare, fact: Fact) -> Outcome:
    if fact.value is None:
        return Outcome(UNKNOWN, fact.reason or f"{fact.name} unknown")
    if isinstance(rule.value, Decimal) and isinstance(fact.value, Decimal):
        verdict = compare_censored(fact.value, fact.comparator, rule.op, rule.value, fact.upper)
        reason = f"{fact.reason} ({_WORDS[rule.op]} {fmt(rule.value)}: {'yes' if verdict is MET else 'no' if verdict is NOT_MET else 'cannot tell'})"
    elif (isinstance(rule.value, bool) and isinstance(fact.value, bool)) or (
        isinstance(rule.value, str) and isinstance(fact.value, str)
    ):
        same = fact.value == rule.value
        verdict = MET if same == (rule.op == "==") else NOT_MET
        reason = fact.reason
    else:
        return Outcome(UNKNOWN, f"{fact.name}: value {fact.value!r} cannot be compared with {rule.value!r}")
    if verdict is MET and rule.on_match is not None:
        return Outcome(rule.on_match, f"{reason}: needs review")
    return Outcome(verdict, reason, fact.evidence if verdict is not UNKNOWN else ())


def _suggestions(outcomes: Sequence[Outcome]) -> tuple[Suggestion, ...]:
    found: dict[Suggestion, None] = {}
    for o in outcomes:
        found.update(dict.fromkeys(o.suggestions))
    return tuple(found)


_MISSING = re.compile(r"^no (?P<what>.+?) (?P<when>in the last .+)$")


def _collapse(reasons: list[str]) -> list[str]:
    """ "no CK in the last 90 days; no LDH in the last 90 days" -> "no CK or LDH in the last 90 days":
    the worklist says in one line what to order."""
    # Keyed by the reason itself, or by the window for "no X in the last ..."; dicts keep first-seen order.
    missing: dict[str, list[str]] = {}
    order: dict[str, None] = {}
    for reason in reasons:
        m = _MISSING.match(reason)
        key = reason if m is None else m.group("when")
        order.setdefault(key, None)
        if m is not None:
            missing.setdefault(key, []).append(m.group("what"))
    return [f"no {_or_list(missing[key])} {key}" if key in missing else key for key in order]


def _or_list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _join(outcomes: Sequence[Outcome]) -> tuple[str, tuple[Evidence, ...]]:
    reasons: list[str] = []
    evidence: list[Evidence] = []
    for o in outcomes:
        if o.reason and o.reason not in reasons:
            reasons.append(o.reason)
        for e in o.evidence:
            if e not in evidence:
                evidence.append(e)
    return "; ".join(_collapse(reasons)), tuple(evidence)


def evaluate(rule: Rule, facts: FactLookup, components: dict[str, CriterionResult]) -> Outcome:
    if isinstance(rule, Compare):
        return _leaf(rule, facts(rule.fact))
    if isinstance(rule, Constant):
        return Outcome(rule.verdict, "")
    if isinstance(rule, ComponentRef):
        c = components[rule.id]
        return Outcome(c.verdict, f"{rule.id}: {c.reason}", c.evidence)
    if isinstance(rule, Not):
        inner = evaluate(rule.item, facts, components)
        return Outcome(
            logic.negate(inner.verdict), f"not ({inner.reason})", inner.evidence, inner.suggestions
        )
    children = [evaluate(item, facts, components) for item in rule.items]
    outcome = _combine(rule, children)
    suggestions = _suggestions(children)
    return dataclasses.replace(outcome, suggestions=suggestions) if suggestions else outcome


def _combine(rule: AllOf | AnyOf | AtLeast, children: list[Outcome]) -> Outcome:
    verdicts = [c.verdict for c in children]
    if isinstance(rule, AllOf | AnyOf):
        verdict = logic.all_of(verdicts) if isinstance(rule, AllOf) else logic.any_of(verdicts)
        # The reason quotes the children that decided: the failing one of an AND, the met one of an
        # OR, or the undecided ones.
        picked = [c for c in children if _same_kind(c.verdict, verdict)]
        if verdict is UNKNOWN and all(c.verdict is not UNKNOWN for c in picked):
            # Undecided only because a branch can never be decided (not-evaluable): what the record
            # does say about the other branches is the useful part of the reason.
            picked = [c for c in children if c.verdict is not Verdict.NOT_APPLICABLE]
        reason, evidence = _join(picked)
        return Outcome(verdict, reason, evidence if verdict is not UNKNOWN else ())
    assert isinstance(rule, AtLeast)
    verdict = logic.at_least(rule.k, verdicts)
    met = [c for c in children if c.verdict is MET]
    unknown = [c for c in children if c.verdict in logic.UNDECIDED]
    n = len(children)
    if verdict is MET:
        reason, evidence = _join(met)
        return Outcome(verdict, f"{len(met)} of {n} met (need {rule.k}): {reason}", evidence)
    if verdict is NOT_MET:
        reason, evidence = _join([c for c in children if c.verdict is NOT_MET])
        return Outcome(
            verdict, f"only {len(met)} of {n} met, {len(unknown)} unknown (need {rule.k}): {reason}", evidence
        )
    reason, _ = _join(unknown)
    return Outcome(
        verdict, f"{len(met)} of {n} met, {len(unknown)} unknown (need {rule.k}); unknown: {reason}"
    )


def _same_kind(child: Verdict, verdict: Verdict) -> bool:
    return child in logic.UNDECIDED if verdict is UNKNOWN else child is verdict


def evaluate_criterion(criterion: Criterion, facts: FactLookup) -> CriterionResult:
    components: dict[str, CriterionResult] = {}
    for comp in criterion.components:
        o = evaluate(comp.rule, facts, {})
        reason = o.reason
        if o.verdict is Verdict.NOT_EVALUABLE and not reason:
            reason = f"{comp.text}: never decidable from the EHR".lstrip(": ")
        components[comp.id] = CriterionResult(
            comp.id, "component", o.verdict, reason, o.evidence, suggestions=o.suggestions
        )
    if criterion.applies_when is not None:
        gate = evaluate(criterion.applies_when, facts, components)
        if gate.verdict is NOT_MET:
            return CriterionResult(
                criterion.id, criterion.type, Verdict.NOT_APPLICABLE, f"does not apply: {gate.reason}"
            )
        o = evaluate(criterion.rule, facts, components)
        why = f"applies: {gate.reason}" if gate.verdict is MET else f"may apply ({gate.reason})"
        return CriterionResult(
            criterion.id,
            criterion.type,
            o.verdict,
            f"{why}; {criterion.text}".strip("; "),
            gate.evidence,
            suggestions=o.suggestions,
        )
    o = evaluate(criterion.rule, facts, components)
    reason = o.reason or criterion.text
    if o.verdict is Verdict.NOT_EVALUABLE:
        reason = f"{criterion.text}: never decidable from the EHR"
    return CriterionResult(
        criterion.id, criterion.type, o.verdict, reason, o.evidence, tuple(components.values()), o.suggestions
    )


def status_of(results: Sequence[CriterionResult]) -> Status:
    """Spec section 1: reads the criteria only, never their components."""
    for r in results:
        if (r.type == "inclusion" and r.verdict is NOT_MET) or (r.type == "exclusion" and r.verdict is MET):
            return Status.INELIGIBLE
    if any(r.verdict is UNKNOWN for r in results):
        return Status.POTENTIAL_CANDIDATE
    return Status.CANDIDATE


def screen(patient_ref: str, trial: Trial, facts: FactLookup) -> SubjectResult:
    results: list[CriterionResult] = []
    for criterion in trial.criteria:
        if criterion.gate:
            gate = evaluate_criterion(criterion, facts)
            if gate.verdict is not MET:
                return SubjectResult(patient_ref, status_of([gate]), (gate,), gate_met=False)
    for criterion in trial.criteria:
        results.append(evaluate_criterion(criterion, facts))
    return SubjectResult(patient_ref, status_of(results), tuple(results))
