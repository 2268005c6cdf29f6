"""Synthetic bulk exports shaped like a hospital's, for the benchmarks (never for tests of behaviour).

Every resource is a clone of a real-world-shaped case shipped in the repository: the example patients
(local lab codes, Chinese text, vendor units, dose shapes, entered-in-error results) and the public FHIR
data under tests/data/public (Synthea, carebundle, US Core, HL7 and Inferno examples: vitals panels with
components, encounter diagnoses, coded and contained medications). Clones get fresh ids, dates spread
over two years, values jittered by up to 10 %, and a share of them the shapes that make reading slow:
references as absolute URLs, codings with only a local code and text, non-ASCII written as ``\\u``
escapes. Nothing is shaped to suit the code under test.

Populations (``kind``):
  a  "today's": a quarter of the patients with dermatomyositis, each patient with 40 routine results
  b  "realistic records": every patient with dermatomyositis and 1,000 Observations
  c  "hospital scale": 1 % with dermatomyositis, about 50 resources per patient (use n=100000)

    python benchmarks/populations.py c 100000 /tmp/pop-c      # writes <Type>.<nnn>.ndjson files
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "patients"
PUBLIC = REPO / "tests" / "data" / "public"
AS_OF = dt.date(2026, 6, 15)
LINES_PER_FILE = 200_000
LOCAL = "http://hospital.example.org/fhir/CodeSystem/lis-item"
Res = dict[str, Any]
Kind = Literal["a", "b", "c"]


@dataclass
class Stats:
    patients: int = 0
    dm_patients: int = 0
    resources: int = 0
    bytes: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


def _resources(path: Path) -> Iterator[Res]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ndjson":
        for line in text.splitlines():
            if line.strip():
                yield json.loads(line)
        return
    doc = json.loads(text)
    if doc.get("resourceType") == "Bundle":
        for entry in doc.get("entry", []):
            if isinstance(entry.get("resource"), dict):
                yield entry["resource"]
    else:
        yield doc


@dataclass
class Templates:
    dm_patients: list[list[Res]]  # whole example records with a dermatomyositis diagnosis
    observations: list[Res]
    conditions: list[Res]
    medications: list[Res]  # MedicationRequest / MedicationStatement / MedicationAdministration
    encounters: list[Res]
    allergies: list[Res]


def load_templates() -> Templates:
    dm_patients = []
    for path in sorted(EXAMPLES.glob("*.json")):
        record = list(_resources(path))
        if path.stem.startswith(("dm", "pd")):
            dm_patients.append(record)
    pools: dict[str, list[Res]] = defaultdict(list)
    for path in sorted(PUBLIC.rglob("*.json")) + sorted(PUBLIC.rglob("*.ndjson")):
        if path.name == "DEFECTS.json":
            continue
        for res in _resources(path):
            pools[str(res.get("resourceType"))].append(res)
    for record in dm_patients:  # the examples' shapes join the pools too (local codes, Chinese text)
        for res in record:
            if res["resourceType"] == "Observation":
                pools["Observation"].append(res)
    skip = {"396230008", "238935002", "M33.1", "M33.10"}  # no stray dermatomyositis in the non-DM pools
    conditions = [
        c
        for c in pools["Condition"]
        if not any(cd.get("code") in skip for cd in (c.get("code") or {}).get("coding", []))
    ]
    meds = pools["MedicationRequest"] + pools["MedicationStatement"] + pools["MedicationAdministration"]
    return Templates(
        dm_patients=dm_patients,
        observations=pools["Observation"],
        conditions=conditions,
        medications=meds,
        encounters=pools["Encounter"],
        allergies=pools["AllergyIntolerance"],
    )


class Cloner:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.n = 0

    def subject(self, pid: str) -> Res:
        if self.rng.random() < 0.03:  # some servers export absolute references
            return {"reference": f"https://ehr.example.org/fhir/Patient/{pid}"}
        return {"reference": f"Patient/{pid}"}

    def clone(self, template: Res, pid: str, shift_dates: bool = True) -> Res:
        res = copy.deepcopy(template)
        self.n += 1
        res["id"] = f"{pid}-{self.n:x}"
        res.pop("contained", None) if res.get("resourceType") == "Observation" else None
        res.pop("subject", None)
        res.pop("patient", None)
        res["patient" if res.get("resourceType") == "AllergyIntolerance" else "subject"] = self.subject(pid)
        res.pop("encounter", None)
        res.pop("performer", None)
        res.pop("hasMember", None)
        res.pop("derivedFrom", None)
        res.pop("basedOn", None)
        if "medicationReference" in res:  # the referenced Medication is not cloned: keep a coded drug
            res.pop("medicationReference")
            res["medicationCodeableConcept"] = {"text": "paracetamol 500 MG Oral Tablet"}
        if shift_dates:
            self._dates(res, self.rng.randint(0, 730))
        self._values(res)
        if res.get("resourceType") == "Observation" and self.rng.random() < 0.12:
            self._localise(res)
        return res

    def _dates(self, node: Any, days_before: int) -> None:
        when = (AS_OF - dt.timedelta(days=days_before)).isoformat()
        for key in ("effectiveDateTime", "issued", "onsetDateTime", "recordedDate", "authoredOn"):
            if isinstance(node.get(key), str):
                node[key] = when + node[key][10:] if len(node[key]) > 10 else when
        period = node.get("effectivePeriod") or node.get("period")
        if isinstance(period, dict):
            for k in ("start", "end"):
                if isinstance(period.get(k), str):
                    period[k] = when

    def _values(self, res: Res) -> None:
        for holder in [res, *[c for c in res.get("component", []) if isinstance(c, dict)]]:
            q = holder.get("valueQuantity")
            if (
                isinstance(q, dict)
                and isinstance(q.get("value"), int | float)
                and not isinstance(q["value"], bool)
            ):
                q["value"] = round(q["value"] * self.rng.uniform(0.9, 1.1), 2)

    def _localise(self, res: Res) -> None:
        """A local LIS code first, or text only: how many sites send their labs."""
        code = res.get("code")
        if not isinstance(code, dict):
            return
        text = code.get("text") or next(
            (c.get("display") for c in code.get("coding", []) if isinstance(c, dict) and c.get("display")),
            "检验项目",
        )
        if self.rng.random() < 0.5:
            code["coding"] = [
                {"system": LOINC_LESS, "code": f"L{self.rng.randint(100, 999)}", "display": text}
            ]
        else:
            res["code"] = {"text": text}


LOINC_LESS = LOCAL


def _dm_record(t: Templates, cloner: Cloner, pid: str) -> list[Res]:
    template = cloner.rng.choice(t.dm_patients)
    out = []
    for res in template:
        if res["resourceType"] == "Patient":
            patient = copy.deepcopy(res)
            patient["id"] = pid
            patient.pop("name", None)
            patient.pop("identifier", None)
            out.append(patient)
        else:
            # The work-up keeps its own dates: they are what makes it a realistic, decidable case.
            out.append(cloner.clone(res, pid, shift_dates=False))
    return out


def _patient(cloner: Cloner, pid: str) -> Res:
    rng = cloner.rng
    return {
        "resourceType": "Patient",
        "id": pid,
        "gender": rng.choice(["male", "female"]),
        "birthDate": f"{rng.randint(1930, 2008)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    }


def patient_resources(kind: Kind, i: int, t: Templates, cloner: Cloner) -> tuple[bool, list[Res]]:
    rng = cloner.rng
    pid = f"p{i:07d}"
    dm = {"a": i % 4 == 0, "b": True, "c": i % 100 == 0}[kind]
    out = _dm_record(t, cloner, pid) if dm else [_patient(cloner, pid)]
    if kind == "a":
        if not dm:
            out += [cloner.clone(rng.choice(t.conditions), pid) for _ in range(rng.randint(1, 3))]
        out += [cloner.clone(rng.choice(t.observations), pid) for _ in range(40)]
    elif kind == "b":
        out += [cloner.clone(rng.choice(t.observations), pid) for _ in range(1000)]
    else:
        if not dm:
            out += [cloner.clone(rng.choice(t.conditions), pid) for _ in range(rng.randint(1, 4))]
            out += [cloner.clone(rng.choice(t.encounters), pid) for _ in range(rng.randint(2, 5))]
            out += [cloner.clone(rng.choice(t.medications), pid) for _ in range(rng.randint(1, 4))]
            if rng.random() < 0.3:
                out.append(cloner.clone(rng.choice(t.allergies), pid))
        out += [cloner.clone(rng.choice(t.observations), pid) for _ in range(rng.randint(30, 45))]
    return dm, out


class Writer:
    """One NDJSON file per type and LINES_PER_FILE lines, as Bulk Data servers write them. About one line
    in seven writes non-ASCII as ``\\u`` escapes (json.dumps' default), as some servers do."""

    def __init__(self, folder: Path, rng: random.Random) -> None:
        self.folder = folder
        self.rng = rng
        self.files: dict[str, Any] = {}
        self.lines: dict[str, int] = defaultdict(int)
        self.parts: dict[str, int] = defaultdict(int)

    def write(self, res: Res, stats: Stats) -> None:
        rtype = res["resourceType"]
        if rtype not in self.files or self.lines[rtype] >= LINES_PER_FILE:
            self._open(rtype)
        escaped = self.rng.random() < 0.15
        line = (json.dumps(res, separators=(",", ":")) if escaped else orjson.dumps(res).decode()) + "\n"
        data = line.encode()
        self.files[rtype].write(data)
        self.lines[rtype] += 1
        stats.resources += 1
        stats.bytes += len(data)
        stats.by_type[rtype] = stats.by_type.get(rtype, 0) + 1

    def _open(self, rtype: str) -> None:
        if rtype in self.files:
            self.files[rtype].close()
            self.parts[rtype] += 1
        self.files[rtype] = (self.folder / f"{rtype}.{self.parts[rtype]:03d}.ndjson").open("wb")
        self.lines[rtype] = 0

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()


def write_population(kind: Kind, n: int, folder: Path, seed: int = 7) -> Stats:
    """Write population ``kind`` of ``n`` patients as bulk NDJSON into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    templates = load_templates()
    cloner = Cloner(rng)
    writer = Writer(folder, random.Random(seed + 1))
    stats = Stats()
    try:
        for i in range(n):
            dm, resources = patient_resources(kind, i, templates, cloner)
            stats.patients += 1
            stats.dm_patients += dm
            for res in resources:
                writer.write(res, stats)
    finally:
        writer.close()
    return stats


def main(argv: list[str]) -> int:
    kind, n, folder = argv[0], int(argv[1]), Path(argv[2])
    if kind not in ("a", "b", "c"):
        raise SystemExit("kind is a, b or c")
    stats = write_population(kind, n, folder)  # type: ignore[arg-type]
    print(json.dumps(stats.__dict__))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
