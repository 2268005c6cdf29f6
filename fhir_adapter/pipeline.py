"""The one per-patient loop: source -> record -> verdicts (every trial) -> sinks (result files, write-back,
sync state). ``screen`` on files, ``screen --server`` and ``sync`` differ only in their source and sinks.

Per patient, failures stay that patient's: a record the source could not fetch, a write-back the server
refused or lost, even a bug in an evaluation, become an ``InputProblem`` naming the patient, and the
loop goes on. What dooms every later patient is raised: authentication refused after a token refresh,
or ``max_consecutive_failures`` patients failing in a row (a server that is down, not a patient that is
odd). File records may be screened by a pool of worker processes (:mod:`fhir_adapter.workers`); the
loop hands the results to the sinks in source order either way.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from fhir_adapter import logs
from fhir_adapter.errors import AdapterError, AuthError, LockedError, SystemicFailure
from fhir_adapter.model import CriterionResult, InputProblem, PatientRecord, SubjectResult
from fhir_adapter.screening import Screener
from fhir_adapter.settings import DEFAULT_MAX_CONSECUTIVE_FAILURES
from fhir_adapter.source.base import Absent, Screenable, Source, SourceItem, Unbuilt
from fhir_adapter.source.grouping import RawRecord
from fhir_adapter.workers import Evaluated, WorkerPool, evaluate

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
__all__ = ["DEFAULT_MAX_CONSECUTIVE_FAILURES", "Sink", "run"]


@dataclass(frozen=True, slots=True)
class Screened:
    """One patient's results (one per trial, in the screener's order) and what sinks need besides."""

    patient_id: str
    results: tuple[SubjectResult, ...]
    versions: Mapping[str, str] = field(default_factory=dict)  # for the Provenance (server sources)
    requests: int | None = None  # HTTP requests the record cost (server sources)
    record: PatientRecord | None = None  # None when a worker process screened it


class Sink(Protocol):
    """Receives each patient's results, in source order."""

    def accept(self, screened: Screened) -> list[InputProblem]:
        """Take the results; return this patient's problems (a refused write-back), never raise for
        them."""
        ...

    def absent(self, patient_id: str) -> None:
        """The source no longer has this patient."""
        ...

    def failed(self, patient_id: str, problem: InputProblem) -> None:
        """This patient could not be screened (the problem says why)."""
        ...


@contextlib.contextmanager
def _few_collections() -> Iterator[None]:
    """Parsed FHIR JSON is acyclic: the cyclic collector only costs time on it (a third of a screen)."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def run(
    source: Source,
    screener: Screener,
    sinks: Sequence[Sink],
    *,
    progress: Progress | None = None,
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES,
    pool: WorkerPool | None = None,
) -> list[InputProblem]:
    """Screen every patient the source yields; returns every problem of the run, in order."""
    problems: list[InputProblem] = []
    total = source.expected() if progress is not None else None
    done = 0
    in_a_row = 0
    with _few_collections():
        for item, evaluated in _evaluated(source.records(), screener, pool):
            if isinstance(item, InputProblem):
                problems.append(item)
                patient = _patient_of(item)
                if patient is None:
                    continue  # a file or line that could not be read: no patient to count
                for sink in sinks:
                    sink.failed(patient, item)
                failed = True
            elif isinstance(item, Absent):
                for sink in sinks:
                    sink.absent(item.patient_id)
                failed = False
            else:
                assert evaluated is not None
                own = _deliver(item, evaluated, sinks, problems)
                failed = bool(own)
            done += 1
            in_a_row = in_a_row + 1 if failed else 0
            if max_consecutive_failures and in_a_row >= max_consecutive_failures:
                raise SystemicFailure(
                    f"{in_a_row} patients in a row could not be screened or written (last: "
                    f"{problems[-1].reason[:200]}); stopping: the server, not the patients, looks like the "
                    "problem"
                )
            if progress is not None and total:
                progress(done, total)
    return problems


def _evaluated(
    items: Iterator[SourceItem], screener: Screener, pool: WorkerPool | None
) -> Iterator[tuple[SourceItem, Evaluated | None]]:
    stubs = _StubResults()

    def here(item: SourceItem) -> Evaluated | None:
        if isinstance(item, Unbuilt):
            if item.raw.is_stub:
                return stubs.evaluate(item.raw, screener)
            return evaluate(item.raw, screener, item.medication)
        if isinstance(item, Screenable):
            return _screen_built(item, screener)
        return None

    if pool is not None:
        # Only records with rows go to the workers: a stub (a patient no gate admits) is one criterion
        # on no data, cheaper here than its trip to a worker and back.
        yield from pool.ordered(items, lambda item: isinstance(item, Unbuilt) and not item.raw.is_stub, here)
        return
    for item in items:
        yield item, here(item)


class _StubResults:
    """Stubs (patients no gate admits: no rows, only counts of the gate's types) with the same counts get
    the same results but for the patient: most of a hospital's patients are stubs, so each distinct
    ``counts`` is screened once and the results are given the next patient's reference. Results that
    name their patient anywhere but in ``patient`` and in evidence references are never reused."""

    _MAX = 1024

    def __init__(self) -> None:
        self._by_counts: dict[tuple[tuple[str, int], ...], tuple[str, tuple[SubjectResult, ...]]] = {}

    def evaluate(self, raw: RawRecord, screener: Screener) -> Evaluated:
        key = tuple(sorted(raw.counts.items()))
        patient = f"Patient/{raw.patient_id}"
        known = self._by_counts.get(key)
        if known is not None:
            was, results = known
            return Evaluated(raw.patient_id, tuple(_for_patient(r, was, patient) for r in results), ())
        done = evaluate(raw, screener, _no_medication)
        if done.results is not None and done.failure is None and not done.problems:
            text = json.dumps([r.to_json() for r in done.results])
            places = sum(1 + _citations(r.criteria, patient) for r in done.results)
            if text.count(json.dumps(raw.patient_id)[1:-1]) == places and len(self._by_counts) < self._MAX:
                self._by_counts[key] = (patient, done.results)
        return done


def _citations(criteria: Sequence[CriterionResult], patient: str) -> int:
    return sum(
        sum(e.reference == patient for e in c.evidence) + _citations(c.components, patient) for c in criteria
    )


def _for_patient(result: SubjectResult, was: str, patient: str) -> SubjectResult:
    def criterion(c: CriterionResult) -> CriterionResult:
        evidence = tuple(replace(e, reference=patient) if e.reference == was else e for e in c.evidence)
        return replace(c, evidence=evidence, components=tuple(criterion(x) for x in c.components))

    return replace(result, patient=patient, criteria=tuple(criterion(c) for c in result.criteria))


def _no_medication(key: str) -> bytes | None:
    return None  # a stub has no medication resources to look anything up for


def _screen_built(item: Screenable, screener: Screener) -> Evaluated:
    pid = item.record.patient_id
    try:
        return Evaluated(pid, screener.screen(item.record), item.problems)
    except Exception as exc:  # a bug in one evaluation must not sink the run; where, never what
        return Evaluated(pid, None, (), _internal(f"Patient/{pid}", "screening", exc))


def _deliver(
    item: SourceItem, evaluated: Evaluated, sinks: Sequence[Sink], problems: list[InputProblem]
) -> list[InputProblem]:
    """Hand one evaluated patient to every sink; returns this patient's own failures."""
    problems.extend(evaluated.problems)
    pid = evaluated.patient_id
    if evaluated.results is None:
        assert evaluated.failure is not None
        problems.append(evaluated.failure)
        for sink in sinks:
            sink.failed(pid, evaluated.failure)
        return [evaluated.failure]
    screened = Screened(
        pid,
        evaluated.results,
        versions=item.versions if isinstance(item, Screenable) else {},
        requests=item.requests if isinstance(item, Screenable) else None,
        record=item.record if isinstance(item, Screenable) else None,
    )
    patient = f"Patient/{pid}"
    own: list[InputProblem] = []
    for sink in sinks:
        try:
            own.extend(sink.accept(screened))
        except (AuthError, LockedError, SystemicFailure):
            raise
        except AdapterError as exc:
            own.append(InputProblem(patient, str(exc), resource=patient))
        except Exception as exc:
            own.append(_internal(patient, type(sink).__name__, exc))
    problems.extend(own)
    return own


def _internal(patient: str, stage: str, exc: Exception) -> InputProblem:
    log.warning("%s: %s failed: %s", patient, stage, logs.where(exc))
    return InputProblem(patient, f"internal error in {stage} ({type(exc).__name__})", resource=patient)


def _patient_of(problem: InputProblem) -> str | None:
    if problem.resource and problem.resource.startswith("Patient/"):
        return problem.resource.removeprefix("Patient/")
    return None
