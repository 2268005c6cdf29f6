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

import orjson

from fhir_adapter.facts.fhirjson import patient_of
from fhir_adapter.model import InputProblem
from fhir_adapter.screening import Gate
from fhir_adapter.source.grouping import Row
from fhir_adapter.source.reader import Item, Line, LineBlock, resources_of
from fhir_adapter.source.routing import gate_hits, take


def unlisted(count: int) -> InputProblem:
    """The trace of patients whose resources the input holds but not their Patient, and whom no gate
    admits: not listed (the input does not hold them), but counted, whichever engine read the input."""
    return InputProblem(
        "(input)",
        f"{count} patient(s) have resources but no Patient resource in the input and nothing a trial's "
        "gate admits: not listed or screened",
    )


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
        self.medications: list[tuple[str, bytes]] = []  # in reading order (copies: source.copies)
        # Patients whose resources were dropped (not candidates): the index finds those of them the
        # input has no Patient for, who would otherwise vanish without a trace.
        self.others: set[str] = set()
        # Types whose resources pass 2 keeps or drops by their patient alone (take() sees the others).
        self._plain = (types or frozenset()) - {"Patient", "Medication", "Bundle"}

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
        """Every line parsed with orjson and routed by its parsed patient. (A byte scan for the patient
        reference, to skip other patients' lines unparsed, measured slower than orjson's parse at every
        line length of the benchmark exports: docs/NOTES.md.) The loop runs once per line of the
        export: it is kept lean."""
        name, route, loads = block.file, self._route, orjson.loads
        candidates, plain, keep, others = self.candidates, self._plain, self.keep, self.others
        for lineno, data in enumerate(block.lines, block.first + self.line_offset):
            try:
                doc = loads(data)
            except orjson.JSONDecodeError:
                if data.strip():
                    self.problems.append(InputProblem(name, "not valid JSON", line=lineno))
                continue
            if type(doc) is not dict:
                self._parsed(resources_of(name, doc, lineno))
                continue
            rtype = doc.get("resourceType")
            if type(rtype) is str and rtype in plain:
                # Most lines: a type a criterion reads, with a patient. Dropped (no gate admits the
                # patient) or kept here, as take() would conclude, without its checks: it cannot fail
                # them. The line itself is the row's body (orjson.dumps would allocate several times its
                # size).
                pid = patient_of(doc)
                if pid is not None:
                    self.read += 1
                    if candidates is None or pid in candidates:
                        keep(pid, Row(rtype, data, name, lineno))
                    else:
                        others.add(pid)
                    continue
            if isinstance(rtype, str) and rtype and rtype != "Bundle":
                route(Item(doc, name, lineno), data)
            else:  # a Bundle, or no resourceType: the reader's own unpacking and wording
                self._parsed(resources_of(name, doc, lineno))

    def _parsed(self, items: Iterable[Item | InputProblem]) -> None:
        for one in items:
            if isinstance(one, InputProblem):
                self.problems.append(one)
            else:
                self._route(one)

    def _route(self, one: Item, body: bytes | None = None) -> None:
        self.read += 1
        kind, key, value = take(one, self.types, self.candidates, body)
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
            elif kind == "resource":
                self.others.add(key)
