"""Tie the stages together: records -> facts -> verdicts -> result writer. No argv, no printing."""

from __future__ import annotations

import datetime as dt
import heapq
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from fhir_adapter.config.types import Mappings
from fhir_adapter.facts import codes
from fhir_adapter.facts.derive import context
from fhir_adapter.model import Evidence, Fact, InputProblem, PatientRecord, Resource, SubjectResult
from fhir_adapter.output.result_file import ResultWriter
from fhir_adapter.source.patient_index import PatientIndex
from fhir_adapter.verdicts.evaluate import evaluate_criterion, screen, status_of

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


def diagnosis_concepts(mappings: Mappings) -> list[str]:
    return list(mappings.facts["dm-diagnosis"].get("concepts"))


def is_dm_condition(mappings: Mappings) -> Callable[[Resource], bool]:
    concepts = [mappings.concepts[c] for c in diagnosis_concepts(mappings)]
    return lambda cond: any(codes.matches(c, cond.get("code")) for c in concepts)


def screen_record(record: PatientRecord, mappings: Mappings, as_of: dt.date) -> SubjectResult:
    ctx = context(record, mappings, as_of)
    return screen(f"Patient/{record.patient_id}", mappings.trial, ctx.fact)


def no_diagnosis(pid: str, n_conditions: int, mappings: Mappings) -> SubjectResult:
    """The listing of a patient without a DM Condition: ineligible, with the diagnosis criterion only."""
    detail = f"no dermatomyositis diagnosis among {n_conditions} Condition resource(s)"

    def facts(name: str) -> Fact:
        return Fact(name, False, evidence=(Evidence(f"Patient/{pid}", detail),), reason=detail)

    gate = next(c for c in mappings.trial.criteria if c.gate)
    result = evaluate_criterion(gate, facts)
    return SubjectResult(f"Patient/{pid}", status_of([result]), (result,))


def screen_files(
    paths: Iterable[Path],
    mappings: Mappings,
    as_of: dt.date,
    writer: ResultWriter,
    progress: Progress | None = None,
) -> list[InputProblem]:
    with PatientIndex() as index:
        index.build(paths, is_dm_condition(mappings))
        problems = list(index.problems)
        candidates = index.candidate_ids()
        log.info(
            "read %d resources; %d candidate(s) with a DM diagnosis", index.resources_read, len(candidates)
        )

        def evaluated() -> Iterator[tuple[str, SubjectResult]]:
            for n, pid in enumerate(candidates, 1):
                record = index.record(pid)
                if record.patient is None:
                    problems.append(
                        InputProblem("(input)", f"Patient/{pid} is referenced but not in the input")
                    )
                yield pid, screen_record(record, mappings, as_of)
                if progress:
                    progress(n, len(candidates))

        def others() -> Iterator[tuple[str, SubjectResult]]:
            for pid, n_conditions in index.non_candidates():
                yield pid, no_diagnosis(pid, n_conditions, mappings)

        for _, subject in heapq.merge(evaluated(), others(), key=lambda t: t[0]):
            writer.subject(subject)
    return problems
