"""Group a file export by patient without holding it in memory.

Pass 1 reads only the resources a trial's gate looks at (the lines that mention their type) and finds the
candidates: patients with a resource that can pass a gate. Pass 2 streams everything once and spools the
candidates' resources into a temporary SQLite file; other patients leave only their id and a count of
the gate's resource types behind. Memory therefore does not grow with the size of the export, nor with
the number of patients no trial can admit. A gate that every patient may pass (``Gate.everyone``)
skips pass 1 and spools every patient.

Pass 2 parses every line with orjson (a byte scan that skipped other patients' lines unparsed measured
slower than the parse on real-shaped exports: docs/NOTES.md), drops a non-candidate's line of a type
the criteria read as soon as its patient is known, and spools a candidate's resource. Every line is
therefore checked: a corrupt line is reported (file and line) whoever it belongs to. With several
``readers`` both passes run on pieces of the input in other processes
(:mod:`fhir_adapter.source.parallel_read`) and are merged here in reading order, so the index holds the
same rows, in the same order, with the same problems, whatever the number of readers.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from fhir_adapter.model import InputProblem, PatientRecord
from fhir_adapter.screening import Gate
from fhir_adapter.settings import ReadLimits
from fhir_adapter.source.copies import choose_bodies, medication_conflict
from fhir_adapter.source.grouping import RawRecord, Row, build
from fhir_adapter.source.intake import GateTally, Intake, unlisted
from fhir_adapter.source.parallel_read import Taken, available_cores, gate_pieces, take_pieces
from fhir_adapter.source.pieces import Piece, piece_blocks, plan
from fhir_adapter.source.reader import Item, LineBlock, input_files, read_blocks, read_raw
from fhir_adapter.source.row_chunks import SPOOL_PAGES, pack, unpack

log = logging.getLogger(__name__)

# Counts of the gate's types are flushed to disk in batches, so pass 1 holds no per-patient table.
_FLUSH_EVERY = 50_000
# Candidates' rows stay in memory up to this many bytes, then everything moves to the SQLite file: a small
# run never touches the disk, a large one holds no more than this.
SPOOL_MEMORY_BYTES = 64 * 1024 * 1024
# Once spilled, rows are written a batch of this many bytes at a time, each patient's rows of a batch as one
# chunk (:mod:`.row_chunks`): the larger the batch, the fewer the chunks of a patient.
_BATCH_BYTES = 8 * 1024 * 1024
# Reading on several processes pays from about this much input (starting them costs ~0.1 s) ...
AUTO_PARALLEL_BYTES = 64 * 1024 * 1024
# ... in pieces of this size: enough of them to keep every reader busy, few enough to cost nothing.
PIECE_BYTES = 32 * 1024 * 1024


def line_filter(types: Iterable[str]) -> tuple[bytes, ...]:
    """Byte strings one of which a line must contain to be parsed in pass 1.

    The type name as JSON writes it (``"Condition"``), or an escape that can spell an ASCII letter
    (``\\u0041``-``\\u007a`` all begin ``\\u00``): a line that spells the type or the ``resourceType`` key
    with escapes (``"\\u0043ondition"``) is parsed too, so the shortcut never changes what is screened,
    while the escapes of non-Latin text (``\\u201c``, ``\\u6c2e``: most escapes of real exports) are not
    searched for (a two-byte ``\\u`` also finds at 1.3 GB/s where ``\\u00`` finds at 2 GB/s).
    """
    return (*(f'"{t}"'.encode() for t in sorted(types)), b"\\u00")


class IndexRows:
    """A patient's rows, in reading order, from an index file and from the part files its reader
    processes wrote beside it (each row of a part carries the number of the piece it was read from)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self._parts = [
            sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            for (path,) in db.execute("SELECT path FROM part ORDER BY path")
        ]

    def rows(self, pid: str) -> tuple[Row, ...]:
        query = "SELECT meta, body FROM res WHERE pid = ? ORDER BY rowid"
        here = [row for meta, body in self.db.execute(query, (pid,)) for row in unpack(meta, body)]
        if not self._parts:
            return tuple(here)
        found: list[tuple[int, int, bytes, bytes]] = []
        for part in self._parts:
            found += part.execute("SELECT piece, rowid, meta, body FROM res WHERE pid = ?", (pid,)).fetchall()
        found.sort(key=lambda r: (r[0], r[1]))
        return (*here, *(row for _, _, meta, body in found for row in unpack(meta, body)))

    def close(self) -> None:
        for part in self._parts:
            part.close()


def _input_bytes(paths: Iterable[Path]) -> int:
    total = 0
    for entry in input_files(paths):
        if not isinstance(entry, InputProblem):
            with contextlib.suppress(OSError):  # reported when it is read
                total += entry.stat().st_size
    return total


class PatientIndex:
    """A temporary on-disk index of candidates' resources. Use as a context manager."""

    def __init__(
        self,
        workdir: Path | None = None,
        gate: Gate | None = None,
        types: frozenset[str] | None = None,
        limits: ReadLimits | None = None,
        spool_memory_bytes: int = SPOOL_MEMORY_BYTES,
        readers: int | None = None,
        piece_bytes: int | None = None,
    ) -> None:
        """``types``: the resource types worth keeping (what the trials read); None keeps all.
        ``readers``: processes that read the input (None: every core, for an input large enough to
        gain from it); ``piece_bytes``: how much of a file each reads at a time."""
        self.readers = readers
        self.readers_used = 1
        self.piece_bytes = piece_bytes or PIECE_BYTES
        self._tmp = tempfile.TemporaryDirectory(prefix="fhir-adapter-", dir=workdir)
        self.path = Path(self._tmp.name) / "index.sqlite"
        self.db = sqlite3.connect(self.path)
        self.db.executescript(
            f"""
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; {SPOOL_PAGES}
            CREATE TABLE res (pid TEXT, meta BLOB, body BLOB);
            CREATE TABLE med (key TEXT PRIMARY KEY, body BLOB);
            CREATE TABLE patient (pid TEXT PRIMARY KEY);
            CREATE TABLE candidate (pid TEXT PRIMARY KEY);
            CREATE TABLE counts (pid TEXT, rtype TEXT, n INTEGER, PRIMARY KEY (pid, rtype));
            CREATE TABLE part (path TEXT PRIMARY KEY);
            CREATE TABLE other (pid TEXT PRIMARY KEY);
            """
        )
        self.gate = gate if gate is not None else Gate(everyone=True)
        self.types = types
        self.limits = limits or ReadLimits()
        self.problems: list[InputProblem] = []
        # Medications' conflicting copies, after the reading problems: one process merges them as it
        # reads, several after each piece, and the list must not depend on which.
        self._conflicts: list[InputProblem] = []
        self.resources_read = 0
        # Resources of a type no criterion reads, by type: a misspelled resourceType shows up here.
        self.skipped_types: Counter[str] = Counter()
        self._memory: dict[str, list[Row]] | None = {}  # None once spilled to the SQLite file
        self._memory_bytes = 0
        self._memory_limit = spool_memory_bytes
        self._batch: dict[str, list[Row]] = {}  # each patient's rows since the last flush: one chunk each
        self._batch_bytes = 0
        self._rows: IndexRows | None = None

    def __enter__(self) -> PatientIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rows is not None:
            self._rows.close()
        self.db.close()
        self._tmp.cleanup()

    def build(self, paths: Iterable[Path]) -> None:
        paths = list(paths)
        planned = self._plan(paths)
        if planned is not None:
            self._build_parallel(planned)
        else:
            self._build_here(paths)
        self._flush()
        self.problems += self._conflicts
        self._report_unlisted()
        if self.gate.everyone:
            self.db.execute("INSERT OR IGNORE INTO candidate SELECT pid FROM patient")
            if self._memory is not None:
                self.db.executemany(
                    "INSERT OR IGNORE INTO candidate VALUES (?)", ((p,) for p in self._memory)
                )
            self.db.execute("INSERT OR IGNORE INTO candidate SELECT DISTINCT pid FROM res")
        self.db.execute("CREATE INDEX res_pid ON res (pid)")
        self.db.commit()

    def _plan(self, paths: list[Path]) -> list[Piece | InputProblem] | None:
        """The pieces for ``readers`` processes, or None to read here: one reader, or a small input."""
        readers = self.readers if self.readers is not None else available_cores()
        if readers < 2 or (self.readers is None and _input_bytes(paths) < AUTO_PARALLEL_BYTES):
            return None  # sized first: planning opens every file, in vain for a small input
        planned = plan(paths, self.piece_bytes, self.limits)
        pieces = [p for p in planned if isinstance(p, Piece)]
        if len(pieces) < 2:
            return None
        self.readers_used = min(readers, len(pieces))
        return planned

    def _build_here(self, paths: list[Path]) -> None:
        if not self.gate.everyone:
            self._find_candidates(paths)
        intake = self._drain(
            Intake(self.types, self._candidates(), self._spool), read_blocks(paths, self.limits)
        )
        self._take_tallies(intake.problems, intake.read, intake.skipped)
        self._merge(intake.patients, intake.medications)
        self._note_others(intake.others)

    def _build_parallel(self, planned: list[Piece | InputProblem]) -> None:
        """Both passes over pieces read by ``readers_used`` processes, merged in reading order. Pass 1
        also counts each byte range's lines (with a gate that admits everyone it only counts)."""
        pieces = [p for p in planned if isinstance(p, Piece)]
        wanted = line_filter(self.gate.types) if not self.gate.everyone else ()
        before: list[int] = []  # lines of the same file before each piece
        found: set[str] = set()
        gated = gate_pieces(pieces, self.readers_used, self.gate, wanted, self.limits)
        previous = 0  # lines of the piece before, when it is of the same file
        for piece, one in zip(pieces, gated, strict=True):
            before.append(before[-1] + previous if piece.start > 0 else 0)
            previous = one.lines
            found |= one.found
            self._flush_counts(one.counts)
        self.db.executemany("INSERT OR IGNORE INTO candidate VALUES (?)", ((p,) for p in found))
        candidates = self._candidates()
        if candidates is None:
            # Everyone is a candidate, so the candidate list comes from the rows this process spools.
            taken: Iterator[Taken] = (
                self._take_here(p, n, None) for p, n in zip(pieces, before, strict=True)
            )
        else:
            taken = take_pieces(
                [(p, n, i) for i, (p, n) in enumerate(zip(pieces, before, strict=True))],
                self.readers_used,
                self.types,
                candidates,
                self.limits,
                self.path.parent,
            )
        parts: set[str] = set()
        for entry in planned:
            if isinstance(entry, InputProblem):
                self.problems.append(entry)
                continue
            part = next(taken)
            self._take_tallies(part.problems, part.read, part.skipped)
            self._merge(part.patients, part.medications)
            self._note_others(part.others)
            if part.part:
                parts.add(part.part)
        if parts:
            self._adopt(sorted(parts))

    def _adopt(self, parts: list[str]) -> None:
        """Rows the readers wrote to part files of their own (indexed there): read from there from now on."""
        self.db.executemany("INSERT INTO part VALUES (?)", ((p,) for p in parts))
        if self._memory:
            self._spill()
        self._memory = None

    def _take_here(self, piece: Piece, before: int, candidates: frozenset[str] | None) -> Taken:
        """Pass 2 of one piece in this process: its rows spooled as they are read, not returned."""
        intake = self._drain(
            Intake(self.types, candidates, self._spool, before), piece_blocks(piece, self.limits)
        )
        return Taken.of(intake, "")

    def _drain(self, intake: Intake, items: Iterable[Item | LineBlock | InputProblem]) -> Intake:
        """Pass 2 here: ``items`` through ``intake``, rows spooled as they come, Patients and
        Medications written in batches (the rest is left in ``intake`` for the caller)."""
        for item in items:
            intake.add(item)
            if len(intake.patients) >= 2000 or len(intake.medications) >= 2000:
                self._merge(intake.patients, intake.medications)
            if len(intake.others) >= _FLUSH_EVERY:
                self._note_others(intake.others)
        return intake

    def _take_tallies(self, problems: list[InputProblem], read: int, skipped: Counter[str]) -> None:
        self.problems += problems
        self.resources_read += read
        self.skipped_types.update(skipped)

    def _candidates(self) -> frozenset[str] | None:
        return None if self.gate.everyone else self._candidate_set()

    def _merge(self, patients: list[tuple[str]], medications: list[tuple[str, bytes]]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO patient VALUES (?)", patients)
        for key, body in medications:  # few: a Medication is shared by many patients' orders
            self._medication(key, body)
        patients.clear()
        medications.clear()

    def _note_others(self, others: set[str]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO other VALUES (?)", ((p,) for p in others))
        others.clear()

    def _report_unlisted(self) -> None:
        """Patients with resources but neither a Patient resource nor a candidate's: not listed, since the
        input does not hold them, but counted, so that what was dropped leaves a trace."""
        count = self.db.execute(
            "SELECT COUNT(*) FROM other WHERE pid NOT IN (SELECT pid FROM patient) "
            "AND pid NOT IN (SELECT pid FROM candidate)"
        ).fetchone()[0]
        if count:
            self.problems.append(unlisted(count))

    def _medication(self, key: str, body: bytes) -> None:
        """A Medication's copy, in reading order: kept unless an earlier copy is newer or the same."""
        found = self.db.execute("SELECT body FROM med WHERE key = ?", (key,)).fetchone()
        if found is None:
            self.db.execute("INSERT INTO med VALUES (?, ?)", (key, body))
            return
        choice = choose_bodies(bytes(found[0]), body)
        if choice == "second":
            self.db.execute("UPDATE med SET body = ? WHERE key = ?", (body, key))
        elif choice == "unordered":
            self._conflicts.append(medication_conflict(key))

    def _spool(self, pid: str, row: Row) -> None:
        if self._memory is not None:
            self._memory.setdefault(pid, []).append(row)
            self._memory_bytes += len(row.body) + 100
            if self._memory_bytes > self._memory_limit:
                self._spill()
            return
        self._batch.setdefault(pid, []).append(row)
        self._batch_bytes += len(row.body)
        if self._batch_bytes >= _BATCH_BYTES:
            self._flush()

    def _spill(self) -> None:
        assert self._memory is not None
        memory, self._memory = self._memory, None
        log.info("candidates' resources exceed %d bytes: spooling to disk", self._memory_limit)
        self.db.executemany(
            "INSERT INTO res VALUES (?, ?, ?)", ((pid, *pack(rows)) for pid, rows in memory.items())
        )

    def _flush(self) -> None:
        if self._batch:
            chunks = self._batch.items()
            self.db.executemany("INSERT INTO res VALUES (?, ?, ?)", ((p, *pack(r)) for p, r in chunks))
            self._batch.clear()
            self._batch_bytes = 0

    def _find_candidates(self, paths: list[Path]) -> None:
        """Pass 1: only lines that mention one of the gate's types are parsed at all."""
        tally = GateTally(self.gate)
        for item in read_raw(paths, line_filter=line_filter(self.gate.types), limits=self.limits):
            if isinstance(item, InputProblem):
                continue  # problems are reported by pass 2, which reads every line
            tally.add(item)
            if len(tally.counts) > _FLUSH_EVERY:
                self._flush_counts(tally.counts)
        self._flush_counts(tally.counts)
        self.db.executemany("INSERT OR IGNORE INTO candidate VALUES (?)", ((p,) for p in tally.found))

    def _flush_counts(self, counts: Counter[tuple[str, str]]) -> None:
        self.db.executemany(
            "INSERT INTO counts VALUES (?, ?, ?) ON CONFLICT(pid, rtype) DO UPDATE SET n = n + excluded.n",
            ((pid, rtype, n) for (pid, rtype), n in counts.items()),
        )
        counts.clear()

    def _candidate_set(self) -> frozenset[str]:
        # Candidates are the patients a gate may admit: a few percent of an export, so their ids fit.
        return frozenset(r[0] for r in self.db.execute("SELECT pid FROM candidate"))

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
        if self._rows is None:
            self._rows = IndexRows(self.db)
        return RawRecord(pid, self._rows.rows(pid))

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
