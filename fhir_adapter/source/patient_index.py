"""Group a file export by patient without holding it in memory.

Pass 1 reads only Conditions and finds the candidates (patients with a dermatomyositis diagnosis).
Pass 2 streams everything once and spools the candidates' resources into a temporary SQLite file; other
patients leave only their id behind. Memory therefore does not grow with the size of the export, nor with
the number of patients without DM.
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import orjson

from fhir_adapter.facts.fhirjson import ref_id
from fhir_adapter.model import InputProblem, PatientRecord, Resource
from fhir_adapter.source.reader import Item, read_all

log = logging.getLogger(__name__)

# Resource types the criteria read; anything else is skipped after parsing.
USED_TYPES = frozenset(
    {
        "Patient",
        "Observation",
        "Condition",
        "MedicationRequest",
        "MedicationStatement",
        "MedicationAdministration",
        "AllergyIntolerance",
        "Encounter",
    }
)
_SUBJECT_KEYS = ("subject", "patient")


def patient_of(resource: Resource) -> str | None:
    """Logical id of the patient a resource is about."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) and rid else None
    for key in _SUBJECT_KEYS:
        subject = resource.get(key)
        if isinstance(subject, dict):
            # Fast path for the bulk-export form "Patient/<id>" (most of an export's resources).
            plain = subject.get("reference")
            if isinstance(plain, str) and plain.startswith("Patient/") and plain.count("/") == 1:
                return plain[len("Patient/") :] or None
        ref = ref_id(subject)
        if ref and ref.startswith("Patient/"):
            return ref[len("Patient/") :]
    return None


class PatientIndex:
    """A temporary on-disk index of candidates' resources. Use as a context manager."""

    def __init__(self, workdir: Path | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="fhir-adapter-", dir=workdir)
        self.db = sqlite3.connect(Path(self._tmp.name) / "index.sqlite")
        self.db.executescript(
            """
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
            CREATE TABLE res (pid TEXT, rtype TEXT, body BLOB);
            CREATE TABLE med (key TEXT PRIMARY KEY, body BLOB);
            CREATE TABLE patient (pid TEXT PRIMARY KEY, has_resource INTEGER);
            CREATE TABLE candidate (pid TEXT PRIMARY KEY);
            CREATE TABLE conditions (pid TEXT PRIMARY KEY, n INTEGER);
            """
        )
        self.problems: list[InputProblem] = []
        self.resources_read = 0

    def __enter__(self) -> PatientIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.close()
        self._tmp.cleanup()

    def build(self, paths: Iterable[Path], is_candidate: Callable[[Resource], bool]) -> None:
        paths = list(paths)
        # Pass 1: only lines that mention a Condition are parsed at all.
        cand: set[str] = set()
        counts: dict[str, int] = {}
        for item in read_all(paths, line_filter=b'"Condition"'):
            if isinstance(item, Item) and item.resource.get("resourceType") == "Condition":
                pid = patient_of(item.resource)
                if pid and is_candidate(item.resource):
                    cand.add(pid)
                if pid:
                    counts[pid] = counts.get(pid, 0) + 1
                    if len(counts) > 50_000:
                        self._flush_counts(counts)
        self._flush_counts(counts)
        self.db.executemany("INSERT OR IGNORE INTO candidate VALUES (?)", ((p,) for p in cand))
        del cand
        # Pass 2: everything, once.
        batch: list[tuple[str, str, bytes]] = []
        candidates = self._candidate_set()
        for item in read_all(paths):
            if isinstance(item, InputProblem):
                self.problems.append(item)
                continue
            self.resources_read += 1
            self._take(item, candidates, batch)
            if len(batch) >= 2000:
                self.db.executemany("INSERT INTO res VALUES (?, ?, ?)", batch)
                batch.clear()
        self.db.executemany("INSERT INTO res VALUES (?, ?, ?)", batch)
        self.db.execute("CREATE INDEX res_pid ON res (pid)")
        self.db.commit()

    def _flush_counts(self, counts: dict[str, int]) -> None:
        self.db.executemany(
            "INSERT INTO conditions VALUES (?, ?) ON CONFLICT(pid) DO UPDATE SET n = n + excluded.n",
            counts.items(),
        )
        counts.clear()

    def _candidate_set(self) -> frozenset[str]:
        # Candidates are the DM patients: a few percent of an export, so holding their ids is fine.
        return frozenset(r[0] for r in self.db.execute("SELECT pid FROM candidate"))

    def _take(self, item: Item, candidates: frozenset[str], batch: list[tuple[str, str, bytes]]) -> None:
        resource = item.resource
        rtype = resource["resourceType"]
        if rtype == "Medication":
            rid = resource.get("id")
            if isinstance(rid, str):
                self.db.execute(
                    "INSERT OR REPLACE INTO med VALUES (?, ?)", (f"Medication/{rid}", orjson.dumps(resource))
                )
            return
        if rtype not in USED_TYPES:
            return
        pid = patient_of(resource)
        if pid is None:
            if rtype != "Patient":
                where = f" line {item.line}" if item.line else ""
                self.problems.append(
                    InputProblem(
                        item.file, f"{rtype}/{resource.get('id', '?')} has no patient reference{where}"
                    )
                )
            return
        if rtype == "Patient":
            self.db.execute("INSERT OR REPLACE INTO patient VALUES (?, 1)", (pid,))
        if pid in candidates:
            batch.append((pid, rtype, orjson.dumps(resource)))

    def non_candidates(self) -> Iterator[tuple[str, int]]:
        """(patient id, number of Conditions) of every patient in the input without a DM diagnosis."""
        yield from self.db.execute(
            "SELECT p.pid, COALESCE(c.n, 0) FROM patient p LEFT JOIN conditions c ON c.pid = p.pid "
            "WHERE p.pid NOT IN (SELECT pid FROM candidate) ORDER BY p.pid"
        )

    def candidate_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT pid FROM candidate ORDER BY pid")]

    def record(self, pid: str) -> PatientRecord:
        grouped: dict[str, list[Resource]] = {}
        seen: set[tuple[str, str]] = set()
        for rtype, body in self.db.execute(
            "SELECT rtype, body FROM res WHERE pid = ? ORDER BY rowid", (pid,)
        ):
            resource = orjson.loads(body)
            key = (rtype, str(resource.get("id", "")))
            if key[1] and key in seen:  # the same resource in two files (Bundle + NDJSON): keep the first
                continue
            seen.add(key)
            grouped.setdefault(rtype, []).append(resource)
        patients = grouped.pop("Patient", [])
        meds = self._medications(grouped)
        return PatientRecord(
            patient_id=pid,
            patient=patients[0] if patients else None,
            resources={k: tuple(v) for k, v in grouped.items()},
            medications=meds,
        )

    def _medications(self, grouped: dict[str, list[Resource]]) -> dict[str, Resource]:
        keys = set()
        for rtype in ("MedicationRequest", "MedicationStatement", "MedicationAdministration"):
            for r in grouped.get(rtype, []):
                ref = ref_id(r.get("medicationReference")) or ref_id(
                    (r.get("medication") or {}).get("reference")
                )
                if ref and ref.startswith("Medication/"):
                    keys.add(ref)
        out = {}
        for key in keys:
            row = self.db.execute("SELECT body FROM med WHERE key = ?", (key,)).fetchone()
            if row:
                out[key] = orjson.loads(row[0])
        return out
