"""The one per-patient loop: source -> record -> verdicts (every trial) -> sinks (result files, write-back,
sync state). ``screen`` on files, ``screen --server`` and ``sync`` differ only in their source and sinks.

Per patient, failures stay that patient's: a record the source could not fetch, a write-back the server
refused or lost, even a bug in an evaluation, become an ``InputProblem`` naming the patient, and the
loop goes on. What dooms every later patient is raised: authentication refused after a token refresh,
or ``max_consecutive_failures`` patients failing in a row (a server that is down, not a patient that is
odd).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from fhir_adapter import logs
from fhir_adapter.errors import AdapterError, AuthError, LockedError, SystemicFailure
from fhir_adapter.model import InputProblem, SubjectResult
from fhir_adapter.screening import Screener
from fhir_adapter.source.base import Absent, Screenable, Source

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
DEFAULT_MAX_CONSECUTIVE_FAILURES = 10


class Sink(Protocol):
    """Receives each patient's results (one per trial, in the screener's order)."""

    def accept(self, item: Screenable, results: Sequence[SubjectResult]) -> list[InputProblem]:
        """Take the results; return this patient's problems (a refused write-back), never raise for
        them."""
        ...

    def absent(self, patient_id: str) -> None:
        """The source no longer has this patient."""
        ...

    def failed(self, patient_id: str, problem: InputProblem) -> None:
        """This patient could not be screened (the problem says why)."""
        ...


def run(
    source: Source,
    screener: Screener,
    sinks: Sequence[Sink],
    *,
    progress: Progress | None = None,
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES,
) -> list[InputProblem]:
    """Screen every patient the source yields; returns every problem of the run, in order."""
    problems: list[InputProblem] = []
    total = source.expected() if progress is not None else None
    done = 0
    in_a_row = 0
    for item in source.records():
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
            own = _screen_one(item, screener, sinks)
            problems.extend(own)
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


def _screen_one(item: Screenable, screener: Screener, sinks: Sequence[Sink]) -> list[InputProblem]:
    patient = f"Patient/{item.record.patient_id}"
    try:
        results = screener.screen(item.record)
    except Exception as exc:  # a bug in one evaluation must not sink the run; where, never what
        problem = _internal(patient, "screening", exc)
        for sink in sinks:
            sink.failed(item.record.patient_id, problem)
        return [problem]
    own: list[InputProblem] = []
    for sink in sinks:
        try:
            own.extend(sink.accept(item, results))
        except (AuthError, LockedError, SystemicFailure):
            raise
        except AdapterError as exc:
            own.append(InputProblem(patient, str(exc), resource=patient))
        except Exception as exc:
            own.append(_internal(patient, type(sink).__name__, exc))
    return own


def _internal(patient: str, stage: str, exc: Exception) -> InputProblem:
    log.warning("%s: %s failed: %s", patient, stage, logs.where(exc))
    return InputProblem(patient, f"internal error in {stage} ({type(exc).__name__})", resource=patient)


def _patient_of(problem: InputProblem) -> str | None:
    if problem.resource and problem.resource.startswith("Patient/"):
        return problem.resource.removeprefix("Patient/")
    return None
