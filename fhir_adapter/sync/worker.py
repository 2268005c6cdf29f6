"""The sync job's sink: write back, remember each result, and let a patient leave the queue only when done.

A patient whose write-back fails, or whose record could not be fetched, stays queued (the next run tries
again) and its last error is kept in the state file (status, issue code and type: never server text).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from fhir_adapter.config.types import Mappings
from fhir_adapter.model import InputProblem, SubjectResult
from fhir_adapter.pipeline import Screened
from fhir_adapter.sync.manifest import Counts
from fhir_adapter.sync.recheck import next_recheck
from fhir_adapter.sync.state import State, StoredResult
from fhir_adapter.writeback.resources import subject_reason
from fhir_adapter.writeback.sink import WriteBackSink
from fhir_adapter.writeback.subjects import Action

log = logging.getLogger(__name__)


def result_hash(subject: SubjectResult) -> str:
    """What the write-back depends on: the status and the reason naming failing and unknown criteria."""
    body = json.dumps([subject.status.value, subject_reason(subject)], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass
class SyncSink:
    state: State
    trials: Sequence[Mappings]
    as_of: dt.date
    counts: Counts
    dry_run: bool
    writeback: WriteBackSink | None
    problems: list[InputProblem] = field(default_factory=list)

    def accept(self, screened: Screened) -> list[InputProblem]:
        pid, results = screened.patient_id, screened.results
        assert screened.record is not None  # sync screens server records in this process
        known = self.state.patient(pid)
        if known is None and not any(r.gate_met for r in results):
            self.counts.not_candidate += 1  # no trial admits the patient: nothing to write or remember
            self._done(pid)
            return []
        self.counts.evaluated += 1
        problems: list[InputProblem] = []
        if self.writeback is not None:
            problems = self.writeback.accept(screened)
            # An unchanged subject whose current version lacks its Provenance (a run killed between
            # the two writes) gets it from the write-back itself, in every run.
            for outcome in self.writeback.outcomes:
                self._count(outcome.action)
            if problems:
                for p in problems:
                    self.failed(pid, p)
                return problems  # stays queued: the next run tries the write again
        else:
            hashes = known.hashes if known else {}
            if all(
                hashes.get(m.trial.study) == result_hash(r) for m, r in zip(self.trials, results, strict=True)
            ):
                self.counts.unchanged += 1
        if not self.dry_run:
            stored = [
                StoredResult(m.trial.study, pid, result_hash(r), r.status.value, r.gate_met, r.to_json())
                for m, r in zip(self.trials, results, strict=True)
            ]
            recheck = next_recheck(screened.record, self.trials[0], self.as_of)
            self.state.record_results(pid, stored, recheck)
        self._done(pid)
        return []

    def _count(self, action: Action) -> None:
        if action is Action.STAFF:
            self.counts.staff_managed += 1
        elif action is Action.UNCHANGED:
            self.counts.unchanged += 1
        elif action in (Action.CREATED, Action.UPDATED):
            self.counts.written += 1

    def absent(self, patient_id: str) -> None:
        if not self.dry_run:
            self.state.forget(patient_id)  # gone from the server: nothing to screen, nothing to write
        self._done(patient_id)

    def failed(self, patient_id: str, problem: InputProblem) -> None:
        self.counts.errors += 1
        self.problems.append(problem)
        if not self.dry_run:
            self.state.record_error(patient_id, problem.reason)
        log.warning("patient %s: %s", patient_id, problem.reason)

    def _done(self, pid: str) -> None:
        if not self.dry_run:
            self.state.done(pid)
