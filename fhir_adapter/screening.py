"""Screening one patient record against one or more trials: a pure function of record, rules and date.

Every engine (files, server, sync, worker processes, Spark) calls :meth:`Screener.screen`; nothing here
reads files or talks to a server. The trials share their facts, so one record is derived once and
judged by each trial's criteria.

The gate: a trial's ``gate = true`` criterion (the diagnosis) decides who is a candidate. Which
patients can pass it is read off the rule, not written in code: the facts it compares read certain
resources (``Condition`` coded as dermatomyositis, say); a patient without any such resource gets the
verdict the gate gives on an empty record. When that verdict is ``not-met``, sources may skip those
patients' other data (they are listed with the gate criterion only); when the gate reads something every
patient has (the Patient resource) or is met on an empty record, every patient is a candidate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

from fhir_adapter.config.types import (
    AllOf,
    AnyOf,
    AtLeast,
    Compare,
    Concept,
    Criterion,
    Mappings,
    Not,
    NoteSettings,
    Rule,
)
from fhir_adapter.errors import ConfigError
from fhir_adapter.facts import codes
from fhir_adapter.facts.derive import Read, context, reads_of
from fhir_adapter.model import PatientRecord, Resource, SubjectResult, Verdict
from fhir_adapter.verdicts.evaluate import evaluate_criterion, screen


def rule_facts(rule: Rule | None) -> Iterator[str]:
    """Every fact a rule compares (components are looked up by the caller)."""
    if isinstance(rule, Compare):
        yield rule.fact
    elif isinstance(rule, AllOf | AnyOf | AtLeast):
        for item in rule.items:
            yield from rule_facts(item)
    elif isinstance(rule, Not):
        yield from rule_facts(rule.item)


def criterion_facts(criterion: Criterion) -> Iterator[str]:
    yield from rule_facts(criterion.rule)
    yield from rule_facts(criterion.applies_when)
    for component in criterion.components:
        yield from rule_facts(component.rule)


@dataclass(frozen=True, slots=True)
class Gate:
    """Which resources can make a patient a candidate of at least one trial.

    ``everyone``: every patient is (the gate reads data every patient has, or passes on an empty record).
    Otherwise ``selectors`` lists (resource type, concepts): a patient with no resource matching one of
    them fails every trial's gate, whatever else the record holds.
    """

    everyone: bool
    selectors: tuple[tuple[str, tuple[Concept, ...]], ...] = ()

    @property
    def types(self) -> frozenset[str]:
        return frozenset(t for t, _ in self.selectors)

    def admits(self, resource: Resource) -> bool:
        """True when this resource can make its patient a candidate (always True for ``everyone``)."""
        if self.everyone:
            return True
        rtype = resource.get("resourceType")
        return any(
            rtype == t and any(codes.matches(c, resource.get("code")) for c in concepts)
            for t, concepts in self.selectors
        )


class Screener:
    """The trials of one run, evaluated together over each record (same order as given)."""

    def __init__(self, trials: Sequence[Mappings], as_of: dt.date) -> None:
        if not trials:
            raise ConfigError("no trial to screen for")
        self.trials = tuple(trials)
        self.as_of = as_of

    @cached_property
    def gate(self) -> Gate:
        return _gate(self.trials, self.as_of)

    @cached_property
    def reads(self) -> tuple[Read, ...]:
        return _all_reads(self.trials)

    @cached_property
    def needed_types(self) -> frozenset[str]:
        """Every resource type the trials' criteria read (what a source must fetch)."""
        return frozenset(r.type for r in self.reads)

    @property
    def notes(self) -> NoteSettings | None:
        """The clinical-text settings when the trials read notes (shared by every trial), else None."""
        return self.trials[0].notes if "DocumentReference" in self.needed_types else None

    @property
    def studies(self) -> tuple[str, ...]:
        return tuple(m.trial.study for m in self.trials)

    def screen(self, record: PatientRecord) -> tuple[SubjectResult, ...]:
        # Facts do not depend on the trial: one context (and one fact cache) serves all of them.
        ctx = context(record, self.trials[0], self.as_of)
        ref = f"Patient/{record.patient_id}"
        return tuple(screen(ref, m.trial, ctx.fact) for m in self.trials)


def screen_record(record: PatientRecord, mappings: Mappings, as_of: dt.date) -> SubjectResult:
    """One record against one trial (tests and tools; runs use a ``Screener``)."""
    return Screener([mappings], as_of).screen(record)[0]


def _all_reads(trials: Iterable[Mappings]) -> tuple[Read, ...]:
    found: dict[Read, None] = {}
    for m in trials:
        names = {f for c in m.trial.criteria for f in criterion_facts(c)}
        found.update(dict.fromkeys(reads_of(m, sorted(names))))
    return tuple(found)


def _gate(trials: Sequence[Mappings], as_of: dt.date) -> Gate:
    selectors: dict[str, dict[str, Concept]] = {}
    for m in trials:
        gates = [c for c in m.trial.criteria if c.gate]
        if not gates:
            return Gate(everyone=True)
        names = sorted({f for c in gates for f in criterion_facts(c)})
        reads = reads_of(m, names)
        if any(r.concepts is None for r in reads):
            return Gate(everyone=True)
        empty = context(PatientRecord(patient_id="", patient=None), m, as_of)
        if any(evaluate_criterion(c, empty.fact).verdict is not Verdict.NOT_MET for c in gates):
            return Gate(everyone=True)
        for read in reads:
            by_name = selectors.setdefault(read.type, {})
            for name in read.concepts or ():
                by_name[name] = m.concepts[name]
    return Gate(
        everyone=False,
        selectors=tuple((t, tuple(by_name.values())) for t, by_name in sorted(selectors.items())),
    )
