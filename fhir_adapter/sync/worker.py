"""Screen and write back one queued patient at a time; a patient leaves the queue only when done."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import TextIO

from fhir_adapter import logs
from fhir_adapter.client.http import FhirClient
from fhir_adapter.config.types import Mappings
from fhir_adapter.errors import AdapterError, AuthError, ServerError
from fhir_adapter.model import InputProblem, SubjectResult
from fhir_adapter.output.result_file import ResultWriter
from fhir_adapter.pipeline import screen_record
from fhir_adapter.source.records import Strategy, choose_strategy, fetch_record
from fhir_adapter.sync.manifest import Counts
from fhir_adapter.sync.recheck import next_recheck
from fhir_adapter.sync.state import State
from fhir_adapter.writeback.subjects import Action, WriteBack, subject_reason

log = logging.getLogger(__name__)


def result_hash(subject: SubjectResult) -> str:
    """What the write-back depends on: the status and the reason naming failing and unknown criteria."""
    body = json.dumps([subject.status.value, subject_reason(subject)], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass
class Worker:
    """Screens and writes back one queued patient at a time; a patient leaves the queue only when done."""

    client: FhirClient
    state: State
    mappings: Mappings
    as_of: dt.date
    counts: Counts
    dry_run: bool
    out: TextIO
    writeback: WriteBack | None
    recovered: set[str]
    writer: ResultWriter | None = None
    problems: list[InputProblem] = field(default_factory=list)
    strategy: Strategy | None = None

    def guarded(self, pid: str) -> None:
        try:
            self.patient(pid)
        except AuthError:
            raise  # every later patient would fail the same way
        except ServerError as exc:
            if exc.status is None:
                raise  # the server is unreachable after retries: stop, the queue keeps the rest
            self.failed(pid, str(exc))
        except Exception as exc:  # one failing patient never stops the run; it stays queued
            log.debug("patient %s failed: %s", pid, logs.where(exc))
            self.failed(
                pid, str(exc) if isinstance(exc, AdapterError) else f"internal error ({type(exc).__name__})"
            )

    def patient(self, pid: str) -> None:
        if self.strategy is None:
            self.strategy = choose_strategy(self.client.capabilities())
        fetched = fetch_record(self.client, pid, self.strategy)
        if fetched is None:
            self.done(pid)  # gone from the server: nothing to screen, nothing to write
            return
        known = self.state.patient(pid)
        subject = screen_record(fetched.record, self.mappings, self.as_of)
        if len(subject.criteria) == 1 and known is None:
            self.counts.not_dm += 1  # never a candidate: no ResearchSubject, nothing to remember
            self.done(pid)
            return
        self.counts.evaluated += 1
        if self.writer is not None:
            self.writer.subject(subject)
        digest = result_hash(subject)
        if self.writeback is not None:
            result = self.writeback.write(subject, fetched.versions)
            if self.dry_run:
                print(result.describe(), file=self.out)
            if result.action is Action.FAILED:
                self.failed(pid, result.detail)
                return  # stays queued: the next run tries the write again
            if result.action is Action.STAFF:
                self.counts.staff_managed += 1
            elif result.action is Action.UNCHANGED:
                self.counts.unchanged += 1
                if pid in self.recovered and self.writeback.ensure_provenance(subject, fetched.versions):
                    log.info("patient %s: wrote the Provenance an interrupted run left out", pid)
            else:
                self.counts.written += 1
        elif known is not None and known.result_hash == digest:
            self.counts.unchanged += 1
        if not self.dry_run:
            recheck = next_recheck(fetched.record, self.mappings, self.as_of)
            self.state.record_result(pid, digest, subject.status.value, recheck)
        self.done(pid)

    def done(self, pid: str) -> None:
        if not self.dry_run:
            self.state.done(pid)

    def failed(self, pid: str, detail: str) -> None:
        self.counts.errors += 1
        self.problems.append(InputProblem(f"Patient/{pid}", detail))
        if not self.dry_run:
            self.state.record_error(pid, detail)
        log.warning("patient %s: %s", pid, detail)
