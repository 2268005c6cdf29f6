"""The worklist: candidates and potential candidates, fewest unknowns first, with what to look up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhir_adapter.report._data import (
    Result,
    by_id,
    components,
    criteria,
    criterion_order,
    patient,
    status,
    subjects,
    suggestions,
    text,
    verdict,
)

WORKLIST_STATUSES = ("candidate", "potential-candidate")
NO_REASON = "(no reason given)"


@dataclass(frozen=True, slots=True)
class ToResolve:
    """One unknown to resolve: ``criterion`` is "glucocorticoid-dose" or "active-disease/csm-haq"."""

    criterion: str
    reason: str

    def __str__(self) -> str:
        return f"{self.criterion}: {self.reason}"


@dataclass(frozen=True, slots=True)
class FromNote:
    """A value a note holds that the record does not: ``criterion`` as in :class:`ToResolve`."""

    criterion: str
    date: str
    match: str
    reference: str

    @property
    def advice(self) -> str:
        return f"note of {self.date} says {self.match}: confirm and record"

    def __str__(self) -> str:
        return f"{self.criterion}: {self.advice} ({self.reference})"


@dataclass(frozen=True, slots=True)
class WorklistEntry:
    patient: str
    status: str
    unknown_count: int  # top-level criteria with verdict unknown (what the status reads)
    verdicts: dict[str, str]  # criterion id -> verdict ("" when the subject lacks it)
    to_resolve: tuple[ToResolve, ...]
    recheck_on: str
    from_notes: tuple[FromNote, ...] = ()


def _to_resolve(criterion: Any) -> list[ToResolve]:
    cid = text(criterion.get("id"))
    unknown_parts = [c for c in components(criterion) if verdict(c) == "unknown"]
    if unknown_parts:
        # The components say concretely which measurement is missing; the parent only sums them up.
        return [
            ToResolve(f"{cid}/{text(c.get('id'))}", text(c.get("reason")) or NO_REASON) for c in unknown_parts
        ]
    return [ToResolve(cid, text(criterion.get("reason")) or NO_REASON)]


def _from_notes(criterion: Any) -> list[FromNote]:
    cid = text(criterion.get("id"))
    found = [(cid, s) for s in suggestions(criterion)]
    found += [(f"{cid}/{text(c.get('id'))}", s) for c in components(criterion) for s in suggestions(c)]
    return [
        FromNote(path, text(s.get("date")), text(s.get("match")), text(s.get("reference")))
        for path, s in found
    ]


def worklist(result: Result, order: Sequence[str] | None = None) -> list[WorklistEntry]:
    """Candidates and potential candidates, sorted by (unknown count, patient reference)."""
    ids = [spec.id for spec in criterion_order(result, order)]
    rank = {cid: n for n, cid in enumerate(ids)}
    entries: list[WorklistEntry] = []
    for s in subjects(result):
        if status(s) not in WORKLIST_STATUSES:
            continue
        table = by_id(s)
        unknown = sorted(
            (c for c in criteria(s) if verdict(c) == "unknown"),
            key=lambda c: rank.get(text(c.get("id")), len(rank)),
        )
        entries.append(
            WorklistEntry(
                patient=patient(s),
                status=status(s),
                unknown_count=len(unknown),
                verdicts={cid: verdict(table[cid]) if cid in table else "" for cid in ids},
                to_resolve=tuple(item for c in unknown for item in _to_resolve(c)),
                recheck_on=text(s.get("recheckOn")),
                from_notes=tuple(
                    item
                    for c in sorted(criteria(s), key=lambda c: rank.get(text(c.get("id")), len(rank)))
                    for item in _from_notes(c)
                ),
            )
        )
    entries.sort(key=lambda e: (e.unknown_count, e.patient))
    return entries


def csv_columns(result: Result, order: Sequence[str] | None = None) -> list[str]:
    return [
        "patient",
        "status",
        "unknown_count",
        *(s.id for s in criterion_order(result, order)),
        "to_resolve",
        "from_notes",
    ]


def worklist_rows(result: Result, order: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The worklist as flat rows, keyed by :func:`csv_columns` (``to_resolve`` and ``from_notes`` joined
    with "; ")."""
    rows: list[dict[str, Any]] = []
    for e in worklist(result, order):
        row: dict[str, Any] = {"patient": e.patient, "status": e.status, "unknown_count": e.unknown_count}
        row.update(e.verdicts)
        row["to_resolve"] = "; ".join(str(item) for item in e.to_resolve)
        row["from_notes"] = "; ".join(str(item) for item in e.from_notes)
        rows.append(row)
    return rows
