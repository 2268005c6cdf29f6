"""What the two passes of the file index make of the items the reader yields, wherever they run.

:class:`GateTally` is pass 1 (who can pass a gate, and how many of the gate's types each patient has);
:class:`Intake` is pass 2 (problems, Patients, Medications, the candidates' rows, tallies). The index
runs them over the whole input in one process, or over pieces of it in several
(:mod:`fhir_adapter.source.parallel_read`) and merges the tallies in reading order: the same code either
way, so the result cannot depend on how many processes read.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable

from fhir_adapter.model import InputProblem
from fhir_adapter.screening import Gate
from fhir_adapter.source.grouping import Row
from fhir_adapter.source.reader import Item, Line, LineBlock, parse_line
from fhir_adapter.source.routing import gate_hits, take
from fhir_adapter.source.scan import scan


class GateTally:
    """Pass 1 over items: the patients a gate admits, and counts of the gate's types per patient."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.found: set[str] = set()
        self.counts: Counter[tuple[str, str]] = Counter()

    def add(self, item: Item | Line) -> None:
        for pid, rtype, admitted in gate_hits(item, self.gate):
            self.counts[(pid, rtype)] += 1
            if admitted:
                self.found.add(pid)


class Intake:
    """Pass 2 over items. ``keep(pid, row)`` receives each row of a ``candidates`` patient (None: of
    every patient), in reading order; the rest accumulates here until the caller takes it."""

    def __init__(
        self,
        types: frozenset[str] | None,
        candidates: frozenset[str] | None,
        keep: Callable[[str, Row], None],
        line_offset: int = 0,
    ) -> None:
        """``line_offset``: lines before the piece being read (its own lines are numbered from 1)."""
        self.types = types
        self.candidates = candidates
        self.keep = keep
        self.line_offset = line_offset
        self.problems: list[InputProblem] = []
        self.read = 0
        # Resources of a type no criterion reads, by type: a misspelled resourceType shows up here.
        self.skipped: Counter[str] = Counter()
        self.patients: list[tuple[str]] = []
        self.medications: list[tuple[str, bytes]] = []  # in reading order: the last copy wins

    def add(self, item: Item | LineBlock | InputProblem) -> None:
        if isinstance(item, InputProblem):
            self.problems.append(self._renumbered(item))
        elif isinstance(item, LineBlock):
            self._lines(item)
        else:
            self._parsed((item,))

    def _renumbered(self, problem: InputProblem) -> InputProblem:
        if not self.line_offset or problem.line is None:
            return problem
        return dataclasses.replace(problem, line=problem.line + self.line_offset)

    def _lines(self, block: LineBlock) -> None:
        """Each line's patient read by the byte scan; the line parsed only when the scan declines. The
        loop runs once per line of the export: it is kept lean."""
        types, candidates, skipped, keep, read = self.types, self.candidates, self.skipped, self.keep, 0
        for lineno, data in enumerate(block.lines, block.first + self.line_offset):
            hit = scan(data)
            if hit is not None and hit.patient is not None:
                read += 1
                if types is not None and hit.resource_type not in types:
                    skipped[hit.resource_type] += 1
                elif candidates is None or hit.patient in candidates:
                    keep(hit.patient, Row(hit.resource_type, data, block.file, lineno))
            elif data.strip():
                self._parsed(parse_line(Line(data, block.file, lineno)))
        self.read += read

    def _parsed(self, items: Iterable[Item | InputProblem]) -> None:
        for one in items:
            if isinstance(one, InputProblem):
                self.problems.append(one)
                continue
            self.read += 1
            kind, key, value = take(one, self.types, self.candidates)
            if isinstance(value, InputProblem):
                self.problems.append(value)
            elif isinstance(value, bytes):
                self.medications.append((key, value))
            elif kind == "skip":
                if key:  # "": a Medication without an id
                    self.skipped[key] += 1
            else:
                if kind == "patient":
                    self.patients.append((key,))
                if value is not None:
                    self.keep(key, value)
