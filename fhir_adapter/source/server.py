"""A FHIR server as a source: its candidates (a search for what the gate reads, a Group, or given ids),
then each candidate's record (``$everything`` or typed searches, chosen from the CapabilityStatement).

Failures: the server unreachable or refusing our credentials while the run is being set up (metadata,
the candidate search) is raised, since nothing can be screened; one patient whose record cannot be
fetched (an error status, 403, a timeout after the retries, a malformed or oversized answer, even a
bug in handling what the server sent) is an ``InputProblem`` for that patient, and the pipeline stops
the run only when many fail in a row. Authentication failing after a token refresh and an exhausted
throttling budget are raised: they doom every later patient.

``$everything`` that the server advertises but does not answer switches the run to typed searches
(once, logged); an ``$everything`` answer larger than the response limit falls back to typed
searches for that patient.

Records are fetched ``concurrency`` at a time (:mod:`fhir_adapter.source.fetch_pool`) and yielded in
candidate order, so what follows is the same whatever the concurrency.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal

from fhir_adapter import logs
from fhir_adapter.client.http import FhirClient
from fhir_adapter.client.urls import is_valid_id
from fhir_adapter.errors import (
    AuthError,
    OperationNotSupported,
    ResponseTooLarge,
    ServerError,
    SystemicFailure,
    UsageError,
)
from fhir_adapter.model import InputProblem
from fhir_adapter.screening import Screener
from fhir_adapter.source.attachments import fetch_attachments
from fhir_adapter.source.base import Absent, Screenable, SourceItem
from fhir_adapter.source.candidates import Candidates, find_candidates, given_patients, group_members
from fhir_adapter.source.fetch_pool import fetch_in_order
from fhir_adapter.source.records import Fetched, Strategy, fetch_record
from fhir_adapter.source.strategies import (
    Capabilities,
    Overrides,
    Strategies,
    choose_candidates,
    choose_records,
    read_capabilities,
)

log = logging.getLogger(__name__)

STRATEGY_NAMES = {"everything": "$everything", "typed": "typed searches"}
# Records fetched ahead during the candidate search, per fetch thread: they wait, built, for their turn.
AHEAD_PER_THREAD = 8


class ServerSource:
    """``patients`` (ids, possibly none) or ``group`` choose the patients; otherwise the gate's search does.

    ``missing``: what a given patient the server does not have becomes; a problem for ``screen``, an
    ``Absent`` for ``sync`` (a deleted patient leaves its queue quietly).
    """

    def __init__(
        self,
        client: FhirClient,
        screener: Screener,
        *,
        patients: Sequence[str] | None = None,
        group: str | None = None,
        strategy: Strategy | None = None,
        missing: Literal["problem", "absent"] = "problem",
        overrides: Overrides | None = None,
        concurrency: int = 1,
    ) -> None:
        self.client = client
        self.screener = screener
        self.patients = None if patients is None else tuple(patients)
        self.group = group
        self.strategy = strategy
        self.missing = missing
        self.overrides = overrides or Overrides()
        self.concurrency = max(1, concurrency)
        self._lock = threading.Lock()  # the strategy switch, counters and fetches ahead, shared by threads
        self._pool: ThreadPoolExecutor | None = None  # searches and fetches, from the candidate search on
        self._ahead: dict[str, Future[SourceItem]] = {}  # records fetched during the candidate search
        self.capabilities: Capabilities | None = None
        self.strategies: Strategies | None = None
        self.candidates: Candidates | None = None
        self.requests_per_patient: list[int] = []
        self.warnings: list[str] = []
        self.oversized = 0  # patients whose $everything was too large (fetched with typed searches)

    @property
    def description(self) -> str:
        return f"server: {self.client.base_url}"

    def prepare(self) -> Candidates:
        """Read the CapabilityStatement, choose the strategy and find the candidates (once)."""
        if self.candidates is None:
            caps = self.capabilities = read_capabilities(self.client.capabilities())
            forced = self.strategy or self.overrides.records
            if forced == "bulk":
                raise UsageError("the bulk records strategy reads a Bulk Data export: use --bulk")
            records = choose_records(caps, forced)
            assert records != "bulk"
            self.strategy = records
            candidates = choose_candidates(
                caps,
                given=self.patients is not None,
                group=self.group is not None,
                forced=self.overrides.candidates,
                gate_types=self.screener.gate.types or ("Condition",),
            )
            self.strategies = Strategies(candidates, records)
            log.info("strategies: %s", self.strategies.describe())
            if candidates == "given":
                self.candidates = given_patients(list(self.patients or ()))
            elif candidates == "group":
                if not self.group:
                    raise UsageError("the group candidates strategy needs --group ID")
                self.candidates = group_members(self.client, self.group)
            elif candidates == "search":
                self.candidates = self._search_candidates()
            else:
                raise UsageError("the bulk candidates strategy reads a Bulk Data export: use --bulk")
            self.warnings.extend(self.candidates.warnings)
        return self.candidates

    def _search_candidates(self) -> Candidates:
        """The gate's search; with several threads, the records of the patients its first pages name
        are fetched meanwhile, in the same pool (so ``concurrency`` bounds searches and fetches
        together), at most ``AHEAD_PER_THREAD`` per thread, and handed on at their turn in patient
        order. A server's paging (HAPI holds a search's second page about half a second) then no
        longer holds up the first record."""
        gate = self.screener.gate
        if self.concurrency < 2:
            return find_candidates(self.client, gate)
        pool = self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="fhir-fetch")
        limit = self.concurrency * AHEAD_PER_THREAD

        def found(pid: str) -> None:
            with self._lock:
                if pid not in self._ahead and len(self._ahead) < limit:
                    self._ahead[pid] = pool.submit(self._item, pid)

        try:
            return find_candidates(self.client, gate, self.concurrency, pool=pool, on_found=found)
        except BaseException:
            self._close_pool()
            raise

    def _close_pool(self) -> None:
        with self._lock:
            ahead, self._ahead = self._ahead, {}
        for future in ahead.values():
            future.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def expected(self) -> int | None:
        return len(self.prepare().patient_ids)

    def records(self) -> Iterator[SourceItem]:
        candidates = self.prepare()
        with self._lock:
            ahead, self._ahead = self._ahead, {}
        try:
            items = fetch_in_order(
                self._item, candidates.patient_ids, self.concurrency, pool=self._pool, started=ahead
            )
            for item in items:
                if isinstance(item, Screenable) and item.requests is not None:
                    self.requests_per_patient.append(item.requests)
                yield item
        finally:
            self._close_pool()

    def _item(self, pid: str) -> SourceItem:
        """One candidate's record, or why there is none; raises only what dooms every patient."""
        where = self.client.base_url
        before = self.client.thread_request_count
        if not is_valid_id(pid):
            # From a search, a Group or a change feed: server text, maybe a name; never repeated.
            return InputProblem(
                where, "a patient reference from the server is not a valid FHIR id (not shown): not fetched"
            )
        patient = f"Patient/{pid}"
        try:
            fetched = self._fetch(pid)
            record = fetched.record if fetched is not None else None
            if record is not None and self.screener.notes is not None:
                record = fetch_attachments(self.client, record, self.screener.notes)
        except (AuthError, SystemicFailure):
            raise  # every later patient would fail the same way
        except ServerError as exc:
            return InputProblem(
                where,
                f"{patient}: cannot fetch the record: {exc}",
                resource=patient,
                server_text=exc.server_text,
            )
        except Exception as exc:  # whatever the server sent, it is this patient's problem, not exit 70
            log.warning("%s: fetching the record failed: %s", patient, logs.where(exc))
            return InputProblem(
                where,
                f"{patient}: cannot fetch the record: internal error ({type(exc).__name__})",
                resource=patient,
            )
        if fetched is None:
            if self.missing == "absent":
                return Absent(pid)
            return InputProblem(where, f"{patient}: no such patient on the server", resource=patient)
        assert record is not None
        return Screenable(
            record, fetched.versions, self.client.thread_request_count - before, fetched.problems
        )

    def _fetch(self, pid: str) -> Fetched | None:
        assert self.strategy is not None
        types = self.screener.needed_types
        if self.strategy == "everything":
            try:
                return fetch_record(self.client, pid, "everything", types)
            except OperationNotSupported as exc:
                with self._lock:
                    if self.strategy == "everything":  # other fetch threads may have met it too
                        self.strategy = "typed"
                        if self.strategies is not None:
                            self.strategies = dataclasses.replace(self.strategies, records="typed")
                        note = f"{exc}; switched to typed searches for the rest of the run"
                        log.warning("%s", note)
                        self.warnings.append(note)
                return fetch_record(self.client, pid, "typed", types)
            except ResponseTooLarge:
                log.warning("Patient/%s: $everything is larger than the response limit; typed searches", pid)
                with self._lock:
                    self.oversized += 1
                return fetch_record(self.client, pid, "typed", types)
        return fetch_record(self.client, pid, self.strategy, types)

    def summary(self) -> list[str]:
        counts = self.requests_per_patient
        how = STRATEGY_NAMES.get(self.strategy or "", "?")
        searched = self.candidates.requests if self.candidates else 0
        if counts:
            line = (
                f"Requests per patient ({how}): mean {statistics.fmean(counts):.1f}, max {max(counts)}; "
                f"candidate search: {searched}"
            )
        else:
            line = f"No patient fetched ({how}); candidate search: {searched}"
        if self.oversized:
            line += f"; {self.oversized} patient(s) fetched with typed searches ($everything too large)"
        strategies = [f"Strategies: {self.strategies.describe()}"] if self.strategies else []
        return [*strategies, line, *self.warnings]
