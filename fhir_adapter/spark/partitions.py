"""What runs on the Spark executors: plain Python over rows, with the local engine's own functions.

Nothing here imports ``pyspark``: the functions take and yield plain tuples, so they are tested without
Spark and the plan in :mod:`fhir_adapter.spark.job` only wires them together.

Positions: every resource and problem carries ``(file position, block start, row, entry)``, which sorts
like the local engine's reading order (files in order, lines in order, a Bundle's entries in order).
Lines read by Spark in blocks know only their row within the block; the driver turns that into the
line number once every block's line count is known (:func:`line_numbers`).
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from fhir_adapter.facts.fhirjson import patient_of
from fhir_adapter.model import InputProblem, Resource
from fhir_adapter.output.result_file import Tally
from fhir_adapter.pipeline import _internal as internal_problem
from fhir_adapter.screening import Gate, Screener
from fhir_adapter.source.assemble import (
    MEDICATION_TYPES,
    assemble_record,
    medication_refs,
    missing_patient_problem,
    orphan_problem,
    route,
    stub_record,
)
from fhir_adapter.source.reader import Item, LineFilter, read_line, read_stream

log = logging.getLogger(__name__)

Position = tuple[int, int, int, int]
Out = tuple[Any, ...]  # (tag, ...): see read_lines
GateCounts = tuple[dict[str, int], bool]  # per patient: resources of the gate's types, any admitted


@dataclass(frozen=True, slots=True)
class ReadContext:
    """What every executor needs to read: the files (by Spark path and by position) and the rules."""

    by_path: Mapping[str, tuple[int, str, str]]  # Spark's file path -> (position, display, name)
    by_index: Mapping[int, tuple[str, str]]  # position -> (display, name)
    types: frozenset[str] | None  # resource types worth keeping; None keeps all
    gate: Gate
    line_filter: LineFilter = None


# --- pass 1: who can pass a gate, and how many of the gate's types every patient has -----------------


def gate_lines(values: Iterable[Any], ctx: ReadContext) -> Iterator[tuple[str, GateCounts]]:
    """Lines Spark already kept with the local line filter (pass 1 reads nothing else)."""
    acc: dict[str, GateCounts] = {}
    for value in values:
        for item in read_line("", bytes(value), 0):
            if isinstance(item, Item):
                _gate_item(item.resource, ctx.gate, acc)
    yield from acc.items()


def gate_whole(files: Iterable[tuple[int, bytes]], ctx: ReadContext) -> Iterator[tuple[str, GateCounts]]:
    acc: dict[str, GateCounts] = {}
    for index, content in files:
        display, name = ctx.by_index[index]
        for item in read_stream(display, name, _buffer(content), ctx.line_filter):
            if isinstance(item, Item):
                _gate_item(item.resource, ctx.gate, acc)
    yield from acc.items()


def _gate_item(resource: Resource, gate: Gate, acc: dict[str, GateCounts]) -> None:
    rtype = resource.get("resourceType")
    if rtype not in gate.types:
        return  # problems are reported by pass 2, which reads every line
    pid = patient_of(resource)
    if pid is None:
        return
    counts, admitted = acc.get(pid) or ({}, False)
    counts[rtype] = counts.get(rtype, 0) + 1
    acc[pid] = (counts, admitted or gate.admits(resource))


def merge_gate(a: GateCounts, b: GateCounts) -> GateCounts:
    counts = dict(a[0])
    for rtype, n in b[0].items():
        counts[rtype] = counts.get(rtype, 0) + n
    return counts, a[1] or b[1]


# --- pass 2: every line; problems, patients, the candidates' resources, Medications -------------------
#
# Tags: ("read", n) resources read; ("lines", position, block start, n) lines of one block;
# ("seen", position) a whole file was read; ("problem", key, InputProblem, line unknown);
# ("orphan", key, display, stub) a kept resource without a patient, line unknown;
# ("patient", pid); ("res", pid, key, body); ("medref", "Medication/x", pid); ("med", "Medication/x", key,
# body). A line-unknown problem's key is (position, block start, row in block, entry).


def read_lines(
    rows: Iterable[tuple[Any, str, int]], ctx: ReadContext, candidates: frozenset[str] | None
) -> Iterator[Out]:
    """Rows ``(line bytes, Spark file path, block start)`` of plain NDJSON, in file order per block."""
    block: tuple[str, int] | None = None
    index, display, row, read = -1, "", 0, 0
    for value, path, start in rows:
        if (path, start) != block:
            if block is not None:
                yield ("lines", index, block[1], row)
            block, row = (path, start), 0
            index, display, _ = ctx.by_path[path]
        row += 1
        for entry, item in enumerate(read_line(display, bytes(value), 0)):
            key = (index, start, row, entry)
            if isinstance(item, InputProblem):
                yield ("problem", key, item, True)
                continue
            read += 1
            yield from _take(item, key, ctx, candidates, line_known=False)
    if block is not None:
        yield ("lines", index, block[1], row)
    yield ("read", read)


def read_whole(
    files: Iterable[tuple[int, bytes]], ctx: ReadContext, candidates: frozenset[str] | None
) -> Iterator[Out]:
    """Whole files ``(position, content)``, read by the local reader exactly as locally."""
    read = 0
    for index, content in files:
        yield ("seen", index)
        display, name = ctx.by_index[index]
        for n, item in enumerate(read_stream(display, name, _buffer(content))):
            key = (index, 0, n, 0)
            if isinstance(item, InputProblem):
                yield ("problem", key, item, False)
                continue
            read += 1
            yield from _take(item, key, ctx, candidates, line_known=True)
    yield ("read", read)


def _take(
    item: Item, key: Position, ctx: ReadContext, candidates: frozenset[str] | None, *, line_known: bool
) -> Iterator[Out]:
    resource = item.resource
    kind, ref = route(resource, ctx.types)
    if kind == "medication":
        yield ("med", ref, key, orjson.dumps(resource))
    elif kind == "orphan":
        if line_known:
            yield ("problem", key, orphan_problem(item.file, resource, item.line), False)
        else:
            stub = {k: resource[k] for k in ("resourceType", "id") if k in resource}
            yield ("orphan", key, item.file, stub)
    elif kind != "skip":
        if kind == "patient":
            yield ("patient", ref)
        if candidates is None or ref in candidates:
            yield ("res", ref, key, orjson.dumps(resource))
            if resource.get("resourceType") in MEDICATION_TYPES:
                for med in medication_refs(resource):
                    yield ("medref", med, ref)


def _buffer(content: bytes | bytearray) -> io.BufferedReader:
    return io.BufferedReader(io.BytesIO(bytes(content)))


def later(a: tuple[Position, bytes], b: tuple[Position, bytes]) -> tuple[Position, bytes]:
    """Of two copies of one Medication, the one read last wins (as locally)."""
    return a if a[0] > b[0] else b


# --- on the driver: line numbers of the problems of lines read in blocks -----------------------------


def line_numbers(blocks: Iterable[tuple[int, int, int]]) -> dict[tuple[int, int], int]:
    """(position, block start) -> lines before the block, from every block's (position, start, lines)."""
    per_file: dict[int, list[tuple[int, int]]] = {}
    for index, start, n in blocks:
        per_file.setdefault(index, []).append((start, n))
    before: dict[tuple[int, int], int] = {}
    for index, found in per_file.items():
        total = 0
        for start, n in sorted(found):
            before[(index, start)] = total
            total += n
    return before


def resolve_problems(small: Iterable[Out]) -> tuple[list[tuple[Position, InputProblem]], int, set[int]]:
    """Pass 2's problems with their line numbers, keyed by reading order; resources read; the block
    counts' files and the whole files that were read (positions)."""
    blocks, problems, seen, read = [], [], set(), 0
    for out in small:
        tag = out[0]
        if tag == "lines":
            blocks.append((out[1], out[2], out[3]))
            seen.add(out[1])
        elif tag == "read":
            read += out[1]
        elif tag == "seen":
            seen.add(out[1])
        else:
            problems.append(out)
    before = line_numbers(blocks)
    resolved: list[tuple[Position, InputProblem]] = []
    for out in problems:
        tag, key = out[0], out[1]
        if tag == "problem" and not out[3]:
            resolved.append((key, out[2]))
            continue
        line = before.get((key[0], key[1]), 0) + key[2]
        at = (key[0], 0, line, key[3])
        if tag == "orphan":
            resolved.append((at, orphan_problem(out[2], out[3], line)))
        else:
            resolved.append((at, replace(out[2], line=line)))
    return resolved, read, seen


# --- evaluation: the local engine's record assembly and Screener.screen ------------------------------

Evaluated = tuple[tuple[bytes, ...] | None, tuple[InputProblem, ...]]


def evaluate_candidate(
    pid: str,
    rows: Iterable[tuple[Position, bytes]],
    medications: Iterable[tuple[str, bytes]],
    screener: Screener,
) -> Evaluated:
    """One candidate: its resources in reading order, the Medications they reference, every trial."""
    resources = [orjson.loads(body) for _, body in sorted(rows, key=lambda r: r[0])]
    meds = {key: orjson.loads(body) for key, body in medications}
    problems: list[InputProblem] = []
    if not any(r.get("resourceType") == "Patient" for r in resources):
        problems.append(missing_patient_problem(pid))
    record = assemble_record(pid, resources, meds.get)
    return _screen(pid, record, screener, problems)


def evaluate_stub(pid: str, counts: Mapping[str, int] | None, screener: Screener) -> Evaluated:
    """A patient no gate can admit: listed with the gate criterion, from the counts pass 1 made."""
    return _screen(pid, stub_record(pid, counts or {}, screener.gate.types), screener, [])


def _screen(pid: str, record: Any, screener: Screener, problems: list[InputProblem]) -> Evaluated:
    try:
        results = screener.screen(record)
    except Exception as exc:  # a bug in one evaluation must not sink the run (as in the pipeline)
        problems.append(internal_problem(f"Patient/{pid}", "screening", exc))
        return None, tuple(problems)
    return tuple(orjson.dumps(r.to_json()) for r in results), tuple(problems)


def tally(rows: Iterable[tuple[str, Evaluated]], trials: int) -> Iterator[list[Tally]]:
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
