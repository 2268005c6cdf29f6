"""Group a file export by patient without holding it in memory.

Pass 1 reads only the resources a trial's gate looks at (the lines that mention their type) and finds the
candidates: patients with a resource that can pass a gate. Pass 2 streams everything once and spools the
candidates' resources into a temporary SQLite file; other patients leave only their id and a count of
the gate's resource types behind. Memory therefore does not grow with the size of the export, nor with
the number of patients no trial can admit. A gate that every patient may pass (``Gate.everyone``)
skips pass 1 and spools every patient.

Most NDJSON lines are never parsed: :func:`scan.scan` reads a line's type and patient from its bytes when
that is certain, and pass 2 drops the lines of non-candidates and of types no criterion reads unparsed,
and spools a candidate's line as it is (parsed once, when its record is built). A line the scan cannot be
sure of is parsed, so the result never depends on how the JSON is spelled. What that costs in checking:
a skipped line is not validated, so a corrupt line of a patient no trial admits goes unreported; a
candidate's corrupt line is reported (file and line) when its record is built.
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from fhir_adapter.model import InputProblem, PatientRecord
from fhir_adapter.screening import Gate
from fhir_adapter.settings import ReadLimits
from fhir_adapter.source.grouping import RawRecord, Row, build
from fhir_adapter.source.reader import Item, Line, parse_line, read_raw
from fhir_adapter.source.routing import gate_hits, take
from fhir_adapter.source.scan import scan

log = logging.getLogger(__name__)

# Counts of the gate's types are flushed to disk in batches, so pass 1 holds no per-patient table.
_FLUSH_EVERY = 50_000
# Candidates' rows stay in memory up to this many bytes, then everything moves to the SQLite file: a small
# run never touches the disk, a large one holds no more than this.
SPOOL_MEMORY_BYTES = 64 * 1024 * 1024


def line_filter(types: Iterable[str]) -> tuple[bytes, ...]:
    """Byte strings one of which a line must contain to be parsed in pass 1.

    The type name as JSON writes it (``"Condition"``), or any ``\\u`` escape: a line that spells the type
    with escapes (``"\\u0043ondition"``) is parsed too, so the shortcut never changes what is screened.
    """
    return (*(f'"{t}"'.encode() for t in sorted(types)), b"\\u")


def rows_of(db: sqlite3.Connection, pid: str) -> tuple[Row, ...]:
    """A patient's rows from an index file, in the order they were read."""
    rows = db.execute("SELECT rtype, body, file, line FROM res WHERE pid = ? ORDER BY rowid", (pid,))
    return tuple(Row(*r) for r in rows)


class PatientIndex:
    """A temporary on-disk index of candidates' resources. Use as a context manager."""

    def __init__(
        self,
        workdir: Path | None = None,
        gate: Gate | None = None,
        types: frozenset[str] | None = None,
        limits: ReadLimits | None = None,
        spool_memory_bytes: int = SPOOL_MEMORY_BYTES,
    ) -> None:
        """``types``: the resource types worth keeping (what the trials read); None keeps all."""
        self._tmp = tempfile.TemporaryDirectory(prefix="fhir-adapter-", dir=workdir)
        self.path = Path(self._tmp.name) / "index.sqlite"
        self.db = sqlite3.connect(self.path)
        self.db.executescript(
            """
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
            CREATE TABLE res (pid TEXT, rtype TEXT, body BLOB, file TEXT, line INTEGER);
            CREATE TABLE med (key TEXT PRIMARY KEY, body BLOB);
            CREATE TABLE patient (pid TEXT PRIMARY KEY);
            CREATE TABLE candidate (pid TEXT PRIMARY KEY);
            CREATE TABLE counts (pid TEXT, rtype TEXT, n INTEGER, PRIMARY KEY (pid, rtype));
            """
        )
        self.gate = gate if gate is not None else Gate(everyone=True)
        self.types = types
        self.limits = limits or ReadLimits()
        self.problems: list[InputProblem] = []
        self.resources_read = 0
        # Resources of a type no criterion reads, by type: a misspelled resourceType shows up here.
        self.skipped_types: Counter[str] = Counter()
        self._memory: dict[str, list[Row]] | None = {}  # None once spilled to the SQLite file
        self._memory_bytes = 0
        self._memory_limit = spool_memory_bytes
        self._batch: list[tuple[str, str, bytes, str, int | None]] = []

    def __enter__(self) -> PatientIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.close()
        self._tmp.cleanup()

    def build(self, paths: Iterable[Path]) -> None:
        paths = list(paths)
        if not self.gate.everyone:
            self._find_candidates(paths)
        candidates = None if self.gate.everyone else self._candidate_set()
        patients: list[tuple[str]] = []
        for item in read_raw(paths, limits=self.limits):
            if isinstance(item, InputProblem):
                self.problems.append(item)
                continue
            if isinstance(item, Line):
                hit = scan(item.data)
                if hit is not None and hit.patient is not None:
                    self.resources_read += 1
                    if self.types is not None and hit.resource_type not in self.types:
                        self.skipped_types[hit.resource_type] += 1
                    elif candidates is None or hit.patient in candidates:
                        self._spool(hit.patient, Row(hit.resource_type, item.data, item.file, item.line))
                    continue
                parsed: Iterable[Item | InputProblem] = parse_line(item)
            else:
                parsed = (item,)
            for one in parsed:
                if isinstance(one, InputProblem):
                    self.problems.append(one)
                else:
                    self.resources_read += 1
                    self._take(one, candidates, patients)
            if len(patients) >= 2000:
                self.db.executemany("INSERT OR IGNORE INTO patient VALUES (?)", patients)
                patients.clear()
        self._flush()
        self.db.executemany("INSERT OR IGNORE INTO patient VALUES (?)", patients)
        if candidates is None:
            self.db.execute("INSERT OR IGNORE INTO candidate SELECT pid FROM patient")
            if self._memory is not None:
                self.db.executemany(
                    "INSERT OR IGNORE INTO candidate VALUES (?)", ((p,) for p in self._memory)
                )
            self.db.execute("INSERT OR IGNORE INTO candidate SELECT DISTINCT pid FROM res")
        self.db.execute("CREATE INDEX res_pid ON res (pid)")
        self.db.commit()

    def _spool(self, pid: str, row: Row) -> None:
        if self._memory is not None:
            self._memory.setdefault(pid, []).append(row)
            self._memory_bytes += len(row.body) + 100
            if self._memory_bytes > self._memory_limit:
                self._spill()
            return
        self._batch.append((pid, row.rtype, row.body, row.file, row.line))
        if len(self._batch) >= 2000:
            self._flush()

    def _spill(self) -> None:
        assert self._memory is not None
        memory, self._memory = self._memory, None
        log.info("candidates' resources exceed %d bytes: spooling to disk", self._memory_limit)
        self.db.executemany(
            "INSERT INTO res VALUES (?, ?, ?, ?, ?)",
            ((pid, r.rtype, r.body, r.file, r.line) for pid, rows in memory.items() for r in rows),
        )

    def _flush(self) -> None:
        if self._batch:
            self.db.executemany("INSERT INTO res VALUES (?, ?, ?, ?, ?)", self._batch)
            self._batch.clear()

    def _find_candidates(self, paths: list[Path]) -> None:
        """Pass 1: only lines that mention one of the gate's types are parsed at all."""
        types = self.gate.types
        found: set[str] = set()
        counts: Counter[tuple[str, str]] = Counter()
        for item in read_raw(paths, line_filter=line_filter(types), limits=self.limits):
            if isinstance(item, InputProblem):
                continue  # problems are reported by pass 2, which reads every line
            for pid, rtype, admitted in gate_hits(item, self.gate):
                counts[(pid, rtype)] += 1
                if admitted:
                    found.add(pid)
            if len(counts) > _FLUSH_EVERY:
                self._flush_counts(counts)
        self._flush_counts(counts)
        self.db.executemany("INSERT OR IGNORE INTO candidate VALUES (?)", ((p,) for p in found))

    def _flush_counts(self, counts: Counter[tuple[str, str]]) -> None:
        self.db.executemany(
            "INSERT INTO counts VALUES (?, ?, ?) ON CONFLICT(pid, rtype) DO UPDATE SET n = n + excluded.n",
            ((pid, rtype, n) for (pid, rtype), n in counts.items()),
        )
        counts.clear()

    def _candidate_set(self) -> frozenset[str]:
        # Candidates are the patients a gate may admit: a few percent of an export, so their ids fit.
        return frozenset(r[0] for r in self.db.execute("SELECT pid FROM candidate"))

    def _take(self, item: Item, candidates: frozenset[str] | None, patients: list[tuple[str]]) -> None:
        kind, key, value = take(item, self.types)
        if isinstance(value, InputProblem):
            self.problems.append(value)
        elif isinstance(value, bytes):  # a Medication
            self.db.execute("INSERT OR REPLACE INTO med VALUES (?, ?)", (key, value))
        elif value is None:  # a type no criterion reads
            if key:
                self.skipped_types[key] += 1
        else:
            if kind == "patient":
                patients.append((key,))
            if candidates is None or key in candidates:
                self._spool(key, value)

    def patients(self) -> Iterator[tuple[str, bool]]:
        """(patient id, is a candidate) of every patient in the input, sorted by id.

        A candidate referenced by resources but without a Patient resource is listed too.
        """
        yield from (
            (pid, bool(is_candidate))
            for pid, is_candidate in self.db.execute(
                "SELECT pid, MAX(c) FROM (SELECT pid, 0 AS c FROM patient UNION ALL "
                "SELECT pid, 1 FROM candidate) GROUP BY pid ORDER BY pid"
            )
        )

    def count(self) -> int:
        row = self.db.execute(
            "SELECT COUNT(*) FROM (SELECT pid FROM patient UNION SELECT pid FROM candidate)"
        ).fetchone()
        return int(row[0])

    def candidate_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM candidate").fetchone()[0])

    def has_patient(self, pid: str) -> bool:
        return self.db.execute("SELECT 1 FROM patient WHERE pid = ?", (pid,)).fetchone() is not None

    def stub(self, pid: str) -> RawRecord:
        """A patient no gate can admit: no resources, only how many of the gate's types it has."""
        counts = dict(self.db.execute("SELECT rtype, n FROM counts WHERE pid = ?", (pid,)).fetchall())
        for rtype in self.gate.types:
            counts.setdefault(rtype, 0)
        return RawRecord(pid, (), counts)

    def raw(self, pid: str) -> RawRecord:
        """The candidate's rows, unparsed (parsed where the record is screened, maybe another process)."""
        if self._memory is not None:
            return RawRecord(pid, tuple(self._memory.pop(pid, ())))
        return RawRecord(pid, rows_of(self.db, pid))

    def deferred(self, pid: str) -> RawRecord:
        """Like :meth:`raw`, but rows spooled to the index file stay there for a worker to read."""
        if self._memory is not None:
            return self.raw(pid)
        return RawRecord(pid, (), in_index=True)

    def medication(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT body FROM med WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def record(self, pid: str) -> tuple[PatientRecord, list[InputProblem]]:
        """The patient's record, and the problems of its lines (spooled unparsed, parsed only now)."""
        return build(self.raw(pid), self.medication)
