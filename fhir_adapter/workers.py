"""Screen file records on every core: a process pool that builds and screens records, in order.

Each worker loads the same rules (the run's trial ids, overlays and as-of date) and screens the rows the
file source spooled: parsing and evaluating happen in the workers, the writing of results in the main
process. Results come back in the order the records went out, so the result file is byte-identical to
one written with one worker; no more than ``window`` records are with the workers and no more than
``max_waiting`` wait in all (the rest are stubs, screened here), so memory stays bounded whatever the
size of the export.
"""

from __future__ import annotations

import gc
import logging
import sqlite3
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir_adapter import logs
from fhir_adapter.model import InputProblem, SubjectResult
from fhir_adapter.settings import RuleSettings
from fhir_adapter.source.grouping import RawRecord, build
from fhir_adapter.source.patient_index import IndexRows

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Evaluated:
    """What screening one record gave: its results, or the failure, and problems of its rows."""

    patient_id: str
    results: tuple[SubjectResult, ...] | None
    problems: tuple[InputProblem, ...]  # rows that were not JSON objects (the patient is still screened)
    failure: InputProblem | None = None


def evaluate(raw: RawRecord, screener: Any, medication: Any) -> Evaluated:
    """Build and screen one record; a bug in either becomes this patient's failure, never an exception."""
    patient = f"Patient/{raw.patient_id}"
    try:
        record, problems = build(raw, medication)
        return Evaluated(raw.patient_id, screener.screen(record), tuple(problems))
    except Exception as exc:  # where, never what: the message may quote the data
        log.warning("%s: screening failed: %s", patient, logs.where(exc))
        failure = InputProblem(
            patient, f"internal error in screening ({type(exc).__name__})", resource=patient
        )
        return Evaluated(raw.patient_id, None, (), failure)


# -- the worker side ---------------------------------------------------------------------------------------
_STATE: dict[str, Any] = {}


def _start(rules: RuleSettings, as_of: Any, index: str) -> None:
    from fhir_adapter.config.loader import load_trials
    from fhir_adapter.screening import Screener

    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)  # parsed JSON is acyclic: collecting it is pure overhead
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True, check_same_thread=False)
    _STATE["db"] = db
    _STATE["rows"] = IndexRows(db)
    _STATE["screener"] = Screener(load_trials(rules.trials, rules.overlays, rules.mappings_dir), as_of)


def _medication(key: str) -> bytes | None:
    row = _STATE["db"].execute("SELECT body FROM med WHERE key = ?", (key,)).fetchone()
    return bytes(row[0]) if row else None


def _work_many(raws: list[RawRecord]) -> list[Evaluated]:
    return [evaluate(_with_rows(raw), _STATE["screener"], _medication) for raw in raws]


def _with_rows(raw: RawRecord) -> RawRecord:
    if not raw.in_index:
        return raw
    return RawRecord(raw.patient_id, _STATE["rows"].rows(raw.patient_id), raw.counts)


# -- the main side -----------------------------------------------------------------------------------------
class WorkerPool:
    """``workers`` processes screening records of one run. Use as a context manager."""

    def __init__(
        self, workers: int, rules: RuleSettings, as_of: Any, index: Path, window: int = 0, batch: int = 8
    ) -> None:
        self.workers = workers
        self.batch = batch
        self.window = window or workers * 8 * batch
        # Records screened here wait in order behind the workers' ones; they are small (a stub's results),
        # so many may, and a sparse population (1 % candidates) still keeps every worker busy.
        self.max_waiting = max(self.window, 10_000)
        self._executor = ProcessPoolExecutor(workers, initializer=_start, initargs=(rules, as_of, str(index)))

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def ordered(
        self, items: Iterator[Any], remote: Any, local: Any
    ) -> Iterator[tuple[Any, Evaluated | None]]:
        """Each item with its evaluation, in input order: ``remote(item)`` ones by the workers, in batches
        of ``batch`` (one round trip per batch, not per record), the rest by ``local(item)`` in this
        process (a patient no gate admits costs less than its trip to a worker)."""
        pending: deque[tuple[Any, Evaluated | tuple[_Batch, int] | None]] = deque()
        filling = _Batch()

        def submit(batch: _Batch) -> None:
            if batch.future is None and batch.raws:
                # A copy: the feeder thread pickles it later, and a sent batch takes no more records.
                batch.future = self._executor.submit(_work_many, list(batch.raws))

        def ready() -> bool:
            head = pending[0][1]
            return not isinstance(head, tuple) or (head[0].future is not None and head[0].future.done())

        def take() -> tuple[Any, Evaluated | None]:
            item, slot = pending.popleft()
            if not isinstance(slot, tuple):
                return item, slot
            batch, position = slot
            submit(batch)  # the head waits on it: a part-filled batch goes now
            assert batch.future is not None
            return item, batch.future.result()[position]

        remote_waiting = 0
        for item in items:
            if remote(item):
                if filling.future is not None:  # sent part-filled because the head waited on it
                    filling = _Batch()
                pending.append((item, (filling, len(filling.raws))))
                remote_waiting += 1
                filling.raws.append(item.raw)
                if len(filling.raws) >= self.batch:
                    submit(filling)
                    filling = _Batch()
            else:
                pending.append((item, local(item)))
            while remote_waiting > self.window or len(pending) > self.max_waiting or (pending and ready()):
                if isinstance(pending[0][1], tuple):
                    remote_waiting -= 1
                yield take()
        submit(filling)
        while pending:
            yield take()


@dataclass(slots=True)
class _Batch:
    """Records sent to a worker together; ``future`` is set once sent."""

    raws: list[RawRecord] = field(default_factory=list)
    future: Future[list[Evaluated]] | None = None
