"""What runs on the Spark executors: plain Python over rows, with the local engine's own functions.

Nothing here imports ``pyspark``: the functions take and yield plain tuples, so they are tested without
Spark and the plan in :mod:`fhir_adapter.spark.job` only wires them together.

Each function mirrors one loop of the local index (:class:`fhir_adapter.source.patient_index.PatientIndex`)
and calls the same functions it calls: the reader (``read_bytes``, ``parse_line``), the routing
(``gate_hits``, ``take``), the record and its evaluation (``workers.evaluate``).
Lines Spark read in blocks get their true line number from the per-block line counts the driver
collected first (``ReadContext.before``), so every problem is made, and worded, exactly as locally.

Positions: every resource and problem carries ``(file position, line or item, entry)``, which sorts like
the local engine's reading order (files in order, lines in order, a Bundle's entries in order).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_adapter.model import InputProblem
from fhir_adapter.output.result_file import Tally
from fhir_adapter.screening import Gate, Screener
from fhir_adapter.settings import ReadLimits
from fhir_adapter.source.copies import choose_bodies
from fhir_adapter.source.grouping import MED_TYPES, RawRecord, Row, medication_keys
from fhir_adapter.source.reader import Item, Line, LineFilter, parse_line, read_bytes
from fhir_adapter.source.routing import gate_hits, take
from fhir_adapter.workers import Evaluated, evaluate

Position = tuple[int, int, int]
Out = tuple[Any, ...]  # (tag, ...): see read_lines
GateCounts = tuple[dict[str, int], bool]  # per patient: resources of the gate's types, any admitted
SMALL = frozenset({"read", "skipped", "seen", "problem"})


@dataclass(frozen=True, slots=True)
class ReadContext:
    """What every executor needs to read: the files (by Spark path and by position) and the rules."""

    by_path: Mapping[str, tuple[int, str, str]]  # Spark's file path -> (position, display, name)
    by_index: Mapping[int, tuple[str, str]]  # position -> (display, name)
    types: frozenset[str] | None  # resource types worth keeping; None keeps all
    gate: Gate
    line_filter: LineFilter = None
    before: Mapping[tuple[str, int], int] | None = None  # (Spark path, block start) -> lines before it
    limits: ReadLimits = field(default_factory=ReadLimits)


# --- pass 1: who can pass a gate, and how many of the gate's types every patient has -----------------


def gate_lines(values: Iterable[Any], ctx: ReadContext) -> Iterator[tuple[str, GateCounts]]:
    """Lines Spark already kept with the local line filter (pass 1 reads nothing else)."""
    acc: dict[str, GateCounts] = {}
    for value in values:
        _gate(Line(bytes(value), "", 0), ctx.gate, acc)
    yield from acc.items()


def gate_whole(files: Iterable[tuple[int, bytes]], ctx: ReadContext) -> Iterator[tuple[str, GateCounts]]:
    acc: dict[str, GateCounts] = {}
    for index, content in files:
        display, name = ctx.by_index[index]
        for item in read_bytes(display, name, bytes(content), ctx.line_filter, ctx.limits, raw=True):
            if not isinstance(item, InputProblem):  # problems are reported by pass 2
                _gate(item, ctx.gate, acc)
    yield from acc.items()


def _gate(item: Item | Line, gate: Gate, acc: dict[str, GateCounts]) -> None:
    for pid, rtype, admitted in gate_hits(item, gate):
        counts, before = acc.get(pid) or ({}, False)
        counts[rtype] = counts.get(rtype, 0) + 1
        acc[pid] = (counts, before or admitted)


def merge_gate(a: GateCounts, b: GateCounts) -> GateCounts:
    counts = dict(a[0])
    for rtype, n in b[0].items():
        counts[rtype] = counts.get(rtype, 0) + n
    return counts, a[1] or b[1]


# --- pass 2: every line; problems, patients, the candidates' resources, Medications -------------------
#
# Tags: ("read", n) resources read; ("skipped", Counter) types no criterion reads; ("seen", position) a
# whole file was read; ("problem", key, InputProblem); ("patient", pid); ("res", pid, key, Row);
# ("medref", "Medication/x", pid); ("med", "Medication/x", key, json); ("others", pids) patients whose
# resources were dropped.


class _Pass2:
    """One partition's pass 2, the loop of ``PatientIndex.build`` over items already read."""

    def __init__(self, ctx: ReadContext, candidates: frozenset[str] | None) -> None:
        self.ctx = ctx
        self.candidates = candidates
        self.read = 0
        self.skipped: Counter[str] = Counter()
        self.others: set[str] = set()  # patients whose resources were dropped (as Intake.others)

    def item(self, item: Item | Line | InputProblem, key: Position) -> Iterator[Out]:
        if isinstance(item, InputProblem):
            yield ("problem", key, item)
            return
        if isinstance(item, Line):
            parsed: Iterable[Item | InputProblem] = parse_line(item)
        else:
            parsed = (item,)
        for entry, one in enumerate(parsed):
            at = (key[0], key[1], entry)
            if isinstance(one, InputProblem):
                yield ("problem", at, one)
                continue
            self.read += 1
            kind, ref, value = take(one, self.ctx.types, self.candidates)
            if isinstance(value, InputProblem):
                yield ("problem", at, value)
            elif isinstance(value, bytes):
                yield ("med", ref, at, value)
            elif kind == "skip":
                if ref:
                    self.skipped[ref] += 1
            else:
                if kind == "patient":
                    yield ("patient", ref)
                if value is not None:
                    yield from self._keep(ref, at, value)
                elif kind == "resource":
                    self.others.add(ref)

    def _keep(self, pid: str, key: Position, row: Row) -> Iterator[Out]:
        yield ("res", pid, key, row)
        if row.rtype in MED_TYPES:
            # The record is built later, elsewhere: which Medications it will look up is read now.
            try:
                resource = orjson.loads(row.body)
            except orjson.JSONDecodeError:
                return  # reported when the record is built
            if isinstance(resource, dict):
                for ref in medication_keys({row.rtype: [resource]}):
                    yield ("medref", ref, pid)

    def totals(self) -> Iterator[Out]:
        yield ("read", self.read)
        if self.skipped:
            yield ("skipped", self.skipped)
        if self.others:
            yield ("others", frozenset(self.others))


def read_lines(
    rows: Iterable[tuple[Any, str, int]], ctx: ReadContext, candidates: frozenset[str] | None
) -> Iterator[Out]:
    """Rows ``(line bytes, Spark file path, block start)`` of plain NDJSON, in file order per block."""
    assert ctx.before is not None
    run = _Pass2(ctx, candidates)
    limit = ctx.limits.max_line_bytes
    block: tuple[str, int] | None = None
    index, display, lineno = -1, "", 0
    for value, path, start in rows:
        if (path, start) != block:
            block = (path, start)
            index, display, _ = ctx.by_path[path]
            lineno = ctx.before[block]
        lineno += 1
        data = bytes(value)
        if len(data) > limit:  # the local reader reads past such a line in chunks
            problem = InputProblem(display, f"line longer than {limit} bytes: skipped", line=lineno)
            yield ("problem", (index, lineno, 0), problem)
            continue
        if not data.strip():
            continue
        yield from run.item(Line(data, display, lineno), (index, lineno, 0))
    yield from run.totals()


def read_whole(
    files: Iterable[tuple[int, bytes]], ctx: ReadContext, candidates: frozenset[str] | None
) -> Iterator[Out]:
    """Whole files ``(position, content)``, read by the local reader exactly as locally."""
    run = _Pass2(ctx, candidates)
    for index, content in files:
        yield ("seen", index)
        display, name = ctx.by_index[index]
        for n, item in enumerate(read_bytes(display, name, bytes(content), limits=ctx.limits, raw=True)):
            yield from run.item(item, (index, n, 0))
    yield from run.totals()


def kept_copy(copies: Iterable[tuple[Position, bytes]]) -> tuple[Position, bytes, tuple[Position, ...]]:
    """Of the copies of one Medication, the one the local index keeps: taken in reading order, a later
    copy replaces the kept one only when it is newer (:mod:`fhir_adapter.source.copies`); and where a
    later copy differs with nothing to order them, its position, as the local index reports it."""
    ordered = sorted(copies, key=lambda c: c[0])
    kept = ordered[0]
    conflicts: list[Position] = []
    for copy in ordered[1:]:
        choice = choose_bodies(kept[1], copy[1])
        if choice == "second":
            kept = copy
        elif choice == "unordered":
            conflicts.append(copy[0])
    return kept[0], kept[1], tuple(conflicts)


def line_counts(blocks: Iterable[tuple[str, int, int]]) -> dict[tuple[str, int], int]:
    """(Spark path, block start) -> lines before the block, from every block's (path, start, lines)."""
    per_file: dict[str, list[tuple[int, int]]] = {}
    for path, start, n in blocks:
        per_file.setdefault(path, []).append((start, n))
    before: dict[tuple[str, int], int] = {}
    for path, found in per_file.items():
        total = 0
        for start, n in sorted(found):
            before[(path, start)] = total
            total += n
    return before


def small_outputs(
    small: Iterable[Out],
) -> tuple[list[tuple[Position, InputProblem]], int, Counter[str], set[int]]:
    """Pass 2's problems keyed by reading order, resources read, skipped types, whole files read."""
    problems: list[tuple[Position, InputProblem]] = []
    read, skipped, seen = 0, Counter[str](), set()
    for out in small:
        if out[0] == "read":
            read += out[1]
        elif out[0] == "skipped":
            skipped.update(out[1])
        elif out[0] == "seen":
            seen.add(out[1])
        else:
            problems.append((out[1], out[2]))
    return problems, read, skipped, seen


# --- evaluation: the local engine's record assembly and screening ------------------------------------

Screened = tuple[tuple[bytes, ...] | None, tuple[InputProblem, ...]]


def evaluate_candidate(
    pid: str,
    rows: Iterable[tuple[Position, Row]],
    medications: Iterable[tuple[str, bytes]],
    screener: Screener,
) -> Screened:
    """One candidate: its rows in reading order, the Medications they reference, every trial."""
    ordered = tuple(row for _, row in sorted(rows, key=lambda r: r[0]))
    meds = dict(medications)
    problems: list[InputProblem] = []
    if not any(row.rtype == "Patient" for row in ordered):
        problems.append(InputProblem("(input)", f"Patient/{pid} is referenced but not in the input"))
    return _screened(evaluate(RawRecord(pid, ordered), screener, meds.get), problems)


def evaluate_stub(pid: str, counts: Mapping[str, int] | None, screener: Screener) -> Screened:
    """A patient no gate can admit: listed with the gate criterion, from the counts pass 1 made (as
    ``PatientIndex.stub``: every gate type counted, 0 when the patient has none)."""
    full = dict(counts or {})
    for rtype in screener.gate.types:
        full.setdefault(rtype, 0)
    return _screened(evaluate(RawRecord(pid, (), full), screener, lambda _: None), [])


def _screened(done: Evaluated, problems: list[InputProblem]) -> Screened:
    problems.extend(done.problems)
    if done.results is None:
        assert done.failure is not None
        return None, (*problems, done.failure)
    return tuple(orjson.dumps(r.to_json()) for r in done.results), tuple(problems)


def tally(rows: Iterable[tuple[str, Screened]], trials: int) -> Iterator[list[Tally]]:
    """One partition's counts per trial (in patient order: criteria keep the local first-seen order)."""
    tallies = [Tally() for _ in range(trials)]
    for _, (subjects, _) in rows:
        for t, body in zip(tallies, subjects or (), strict=False):
            t.add(orjson.loads(body))
    yield tallies


def merge_tallies(parts: Sequence[list[Tally]], trials: int) -> list[Tally]:
    merged = [Tally() for _ in range(trials)]
    for part in parts:
        for into, t in zip(merged, part, strict=True):
            into.patients += t.patients
            into.statuses.update(t.statuses)
            for cid, counts in t.criteria.items():
                into.criteria.setdefault(cid, Counter()).update(counts)
    return merged
