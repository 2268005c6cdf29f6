"""One patient's resources as spooled JSON rows -> the ``PatientRecord`` every engine screens.

A pure function, so the file source, its worker processes and the Spark engine build the same record from
the same rows: Patient apart, the rest grouped by type in input order, one copy of a repeated ``Type/id``
(the same resource in a Bundle and in NDJSON: the newer, else the first; :mod:`.copies`), and the
Medications the medication resources reference looked up by reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

from fhir_adapter.client.urls import is_valid_id
from fhir_adapter.facts.fhirjson import ref_id
from fhir_adapter.model import InputProblem, PatientRecord, Resource
from fhir_adapter.source.copies import choose, unordered

MED_TYPES = ("MedicationRequest", "MedicationStatement", "MedicationAdministration")

MedicationLookup = Callable[[str], bytes | None]
"""``"Medication/x"`` -> that Medication's JSON, or None."""


class Row(NamedTuple):
    """One resource as the source spooled it: its type, its JSON and where it came from. (A tuple, not a
    dataclass: one is made per resource of the export, and a frozen dataclass costs twice as much to make.)"""

    rtype: str
    body: bytes
    file: str
    line: int | None


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A patient's rows, not parsed yet: what the file source hands to the process that screens it."""

    patient_id: str
    rows: tuple[Row, ...]
    counts: dict[str, int] = field(default_factory=dict)  # a stub: no rows, only counts of the gate's types
    # The rows are in the source's index file, not here: the worker process that screens the record reads
    # them itself (``patient_index.IndexRows``), so the main process neither reads nor pickles them.
    in_index: bool = False

    @property
    def is_stub(self) -> bool:
        """A patient no gate admits: nothing to read, here or in the index."""
        return not self.rows and not self.in_index


def record_from_rows(
    patient_id: str, rows: Iterable[Row], medication: MedicationLookup
) -> tuple[PatientRecord, list[InputProblem]]:
    """The patient's record, and the problems of rows that turn out not to be JSON objects."""
    grouped: dict[str, list[Resource]] = {}
    seen: dict[tuple[str, str], int] = {}  # Type/id -> its place in grouped[Type]
    problems: list[InputProblem] = []
    for row in rows:
        try:
            resource = orjson.loads(row.body)
        except orjson.JSONDecodeError:
            problems.append(InputProblem(row.file, "not valid JSON", line=row.line))
            continue
        if not isinstance(resource, dict):
            problems.append(
                InputProblem(row.file, "JSON is not a FHIR resource (not an object)", line=row.line)
            )
            continue
        rid = resource.get("id")
        key = (row.rtype, rid if isinstance(rid, str) else "")
        kept = grouped.setdefault(row.rtype, [])
        at = seen.get(key) if key[1] else None
        if at is None:
            seen[key] = len(kept)
            kept.append(resource)
            continue
        choice = choose(kept[at], resource)
        if choice == "second":
            kept[at] = resource  # in the place of the first: the record's order is the reading order
        elif choice == "unordered":
            ref = f"{row.rtype}/{key[1]}" if is_valid_id(key[1]) else None
            problems.append(InputProblem(row.file, unordered(row.rtype, key[1]), line=row.line, resource=ref))
    patients = grouped.pop("Patient", [])
    record = PatientRecord(
        patient_id=patient_id,
        patient=patients[0] if patients else None,
        resources={k: tuple(v) for k, v in grouped.items()},
        medications=_medications(grouped, medication),
    )
    return record, problems


def build(raw: RawRecord, medication: MedicationLookup) -> tuple[PatientRecord, list[InputProblem]]:
    if raw.in_index:
        raise ValueError("a record whose rows are in the index is built where they are read")
    if not raw.rows:
        return PatientRecord(patient_id=raw.patient_id, patient=None, counts=dict(raw.counts)), []
    return record_from_rows(raw.patient_id, raw.rows, medication)


def medication_keys(grouped: dict[str, list[Resource]]) -> set[str]:
    keys = set()
    for rtype in MED_TYPES:
        for r in grouped.get(rtype, []):
            r5 = r.get("medication")
            ref = ref_id(r.get("medicationReference")) or ref_id(
                r5.get("reference") if isinstance(r5, dict) else None
            )
            if ref and ref.startswith("Medication/"):
                keys.add(ref)
    return keys


def _medications(grouped: dict[str, list[Resource]], lookup: MedicationLookup) -> dict[str, Resource]:
    out = {}
    for key in sorted(medication_keys(grouped)):
        body = lookup(key)
        if body is None:
            continue
        try:
            found = orjson.loads(body)
        except orjson.JSONDecodeError:
            continue
        if isinstance(found, dict):
            out[key] = found
    return out
