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
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from fhir_adapter.facts.fhirjson import patient_of, ref_id
from fhir_adapter.model import InputProblem, PatientRecord, Resource
from fhir_adapter.screening import Gate
from fhir_adapter.settings import ReadLimits
from fhir_adapter.source.reader import Item, Line, parse_line, read_raw
from fhir_adapter.source.scan import scan

log = logging.getLogger(__name__)

_MED_TYPES = ("MedicationRequest", "MedicationStatement", "MedicationAdministration")
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")
# Counts of the gate's types are flushed to disk in batches, so pass 1 holds no per-patient table.
_FLUSH_EVERY = 50_000


def line_filter(types: Iterable[str]) -> tuple[bytes, ...]:
    """Byte strings one of which a line must contain to be parsed in pass 1.

    The type name as JSON writes it (``"Condition"``), or any ``\\u`` escape: a line that spells the type
    with escapes (``"\\u0043ondition"``) is parsed too, so the shortcut never changes what is screened.
    """
    return (*(f'"{t}"'.encode() for t in sorted(types)), b"\\u")


class PatientIndex:
    """A temporary on-disk index of candidates' resources. Use as a context manager."""

    def __init__(
        self,
        workdir: Path | None = None,
        gate: Gate | None = None,
        types: frozenset[str] | None = None,
        limits: ReadLimits | None = None,
    ) -> None:
        """``types``: the resource types worth keeping (what the trials read); None keeps all."""
        self._tmp = tempfile.TemporaryDirectory(prefix="fhir-adapter-", dir=workdir)
        self.db = sqlite3.connect(Path(self._tmp.name) / "index.sqlite")
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

    def __enter__(self) -> PatientIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.close()
        self._tmp.cleanup()

    def build(self, paths: Iterable[Path]) -> None:
        paths = list(paths)
        if not self.gate.everyone:
            self._find_candidates(paths)
        batch: list[tuple[str, str, bytes, str, int | None]] = []
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
                        batch.append((hit.patient, hit.resource_type, item.data, item.file, item.line))
                    continue
                parsed: Iterable[Item | InputProblem] = parse_line(item)
            else:
                parsed = (item,)
            for one in parsed:
                if isinstance(one, InputProblem):
                    self.problems.append(one)
                else:
                    self.resources_read += 1
                    self._take(one, candidates, batch, patients)
            if len(batch) >= 2000:
                self.db.executemany("INSERT INTO res VALUES (?, ?, ?, ?, ?)", batch)
                batch.clear()
            if len(patients) >= 2000:
                self.db.executemany("INSERT OR IGNORE INTO patient VALUES (?)", patients)
                patients.clear()
        self.db.executemany("INSERT INTO res VALUES (?, ?, ?, ?, ?)", batch)
        self.db.executemany("INSERT OR IGNORE INTO patient VALUES (?)", patients)
        if candidates is None:
            self.db.execute("INSERT OR IGNORE INTO candidate SELECT pid FROM patient")
            self.db.execute("INSERT OR IGNORE INTO candidate SELECT DISTINCT pid FROM res")
        self.db.execute("CREATE INDEX res_pid ON res (pid)")
        self.db.commit()

    def _find_candidates(self, paths: list[Path]) -> None:
        """Pass 1: only lines that mention one of the gate's types are parsed at all."""
        types = self.gate.types
        found: set[str] = set()
        counts: Counter[tuple[str, str]] = Counter()
        for item in read_raw(paths, line_filter=line_filter(types), limits=self.limits):
            if isinstance(item, InputProblem):
                continue  # problems are reported by pass 2, which reads every line
            if isinstance(item, Line):
                hit = scan(item.data)
                if hit is not None and hit.resource_type not in types:
                    continue  # the type's name only appears in a reference or a text
                resources = [r.resource for r in parse_line(item) if isinstance(r, Item)]
            else:
                resources = [item.resource]
            for resource in resources:
                if resource.get("resourceType") not in types:
                    continue
                pid = patient_of(resource)
                if pid is None:
                    continue
                counts[(pid, resource["resourceType"])] += 1
                if self.gate.admits(resource):
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

    def _take(
        self,
        item: Item,
        candidates: frozenset[str] | None,
        batch: list[tuple[str, str, bytes, str, int | None]],
        patients: list[tuple[str]],
    ) -> None:
        resource = item.resource
        rtype = resource["resourceType"]
        where = f" line {item.line}" if item.line else ""
        if not _TYPE_NAME.fullmatch(rtype):
            self.problems.append(
                InputProblem(item.file, f"resourceType {rtype[:40]!r} is not a FHIR resource type", line=item.line)
            )
            return
        if rtype == "Medication":
            rid = resource.get("id")
            if isinstance(rid, str):
                self.db.execute(
                    "INSERT OR REPLACE INTO med VALUES (?, ?)", (f"Medication/{rid}", orjson.dumps(resource))
                )
            return
        if self.types is not None and rtype not in self.types and rtype != "Patient":
            self.skipped_types[rtype] += 1
            return
        pid = patient_of(resource)
        if pid is None:
            what = "has no valid id" if rtype == "Patient" else "has no patient reference"
            self.problems.append(
                InputProblem(item.file, f"{rtype}/{_shown_id(resource)} {what}{where}", line=item.line)
            )
            return
        if rtype == "Patient":
            patients.append((pid,))
        if candidates is None or pid in candidates:
            batch.append((pid, rtype, orjson.dumps(resource), item.file, item.line))

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

    def has_patient(self, pid: str) -> bool:
        return self.db.execute("SELECT 1 FROM patient WHERE pid = ?", (pid,)).fetchone() is not None

    def stub(self, pid: str) -> PatientRecord:
        """A patient no gate can admit: no resources, only how many of the gate's types it has."""
        counts = dict(self.db.execute("SELECT rtype, n FROM counts WHERE pid = ?", (pid,)).fetchall())
        for rtype in self.gate.types:
            counts.setdefault(rtype, 0)
        return PatientRecord(patient_id=pid, patient=None, counts=counts)

    def record(self, pid: str) -> tuple[PatientRecord, list[InputProblem]]:
        """The patient's record, and the problems of its lines (spooled unparsed, parsed only now)."""
        grouped: dict[str, list[Resource]] = {}
        seen: set[tuple[str, str]] = set()
        problems: list[InputProblem] = []
        for rtype, body, file, line in self.db.execute(
            "SELECT rtype, body, file, line FROM res WHERE pid = ? ORDER BY rowid", (pid,)
        ):
            try:
                resource = orjson.loads(body)
            except orjson.JSONDecodeError:
                problems.append(InputProblem(file, "not valid JSON", line=line))
                continue
            if not isinstance(resource, dict):
                problems.append(InputProblem(file, "JSON is not a FHIR resource (not an object)", line=line))
                continue
            key = (rtype, str(resource.get("id", "")))
            if key[1] and key in seen:  # the same resource in two files (Bundle + NDJSON): keep the first
                continue
            seen.add(key)
            grouped.setdefault(rtype, []).append(resource)
        patients = grouped.pop("Patient", [])
        meds = self._medications(grouped)
        record = PatientRecord(
            patient_id=pid,
            patient=patients[0] if patients else None,
            resources={k: tuple(v) for k, v in grouped.items()},
            medications=meds,
        )
        return record, problems

    def _medications(self, grouped: dict[str, list[Resource]]) -> dict[str, Resource]:
        keys = set()
        for rtype in _MED_TYPES:
            for r in grouped.get(rtype, []):
                r5 = r.get("medication")
                ref = ref_id(r.get("medicationReference")) or ref_id(
                    r5.get("reference") if isinstance(r5, dict) else None
                )
                if ref and ref.startswith("Medication/"):
                    keys.add(ref)
        out = {}
        for key in keys:
            row = self.db.execute("SELECT body FROM med WHERE key = ?", (key,)).fetchone()
            if row:
                out[key] = orjson.loads(row[0])
        return out


def _shown_id(resource: Resource) -> str:
    rid = resource.get("id")
    return rid[:64] if isinstance(rid, str) and rid else "?"
