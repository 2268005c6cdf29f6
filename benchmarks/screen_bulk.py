"""Benchmark: screen a synthetic bulk export, compare with merely parsing it, and measure peak memory.

    python benchmarks/screen_bulk.py                 # 2,000 and 8,000 patients
    python benchmarks/screen_bulk.py --sizes 500     # quick check

Each patient has 40 routine results the criteria ignore (glucose, sodium, ...); one in four has a
dermatomyositis diagnosis and a realistic work-up. Every measurement runs in a fresh child process, so the
peak RSS (getrusage ru_maxrss) belongs to that run alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AS_OF = dt.date(2026, 6, 15)
ROUTINE = [
    ("2345-7", "mg/dL"),
    ("2951-2", "mmol/L"),
    ("2823-3", "mmol/L"),
    ("2075-0", "mmol/L"),
    ("6690-2", "10*3/uL"),
]


def _obs(oid: str, pid: str, code: str, value: float, unit: str, days: int) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "meta": {"versionId": "1", "lastUpdated": "2026-06-01T10:00:00Z"},
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}], "text": code},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": (AS_OF - dt.timedelta(days=days)).isoformat() + "T08:00:00+08:00",
        "issued": (AS_OF - dt.timedelta(days=days)).isoformat() + "T12:00:00+08:00",
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
        "referenceRange": [{"low": {"value": 1, "unit": unit}, "high": {"value": 100, "unit": unit}}],
    }


def generate(n: int, folder: Path, seed: int = 7) -> int:
    rng = random.Random(seed)
    files = {
        t: (folder / f"{t}.ndjson").open("w")
        for t in ("Patient", "Condition", "Observation", "MedicationRequest")
    }
    size = 0
    for i in range(n):
        pid = f"p{i:06d}"
        rows = [
            (
                "Patient",
                {
                    "resourceType": "Patient",
                    "id": pid,
                    "gender": rng.choice(["male", "female"]),
                    "birthDate": f"{rng.randint(1950, 2005)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                },
            )
        ]
        dm = i % 4 == 0
        code = ("http://snomed.info/sct", "396230008") if dm else ("http://snomed.info/sct", "44054006")
        rows.append(
            (
                "Condition",
                {
                    "resourceType": "Condition",
                    "id": f"{pid}-c1",
                    "subject": {"reference": f"Patient/{pid}"},
                    "clinicalStatus": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                "code": "active",
                            }
                        ]
                    },
                    "code": {"coding": [{"system": code[0], "code": code[1]}]},
                },
            )
        )
        for j in range(40):
            loinc, unit = ROUTINE[j % len(ROUTINE)]
            rows.append(
                (
                    "Observation",
                    _obs(f"{pid}-r{j}", pid, loinc, round(rng.uniform(2, 150), 1), unit, rng.randint(1, 400)),
                )
            )
        if dm:
            for k, (loinc, unit, v) in enumerate(
                [
                    ("2157-6", "U/L", 600),
                    ("718-7", "g/L", 120),
                    ("777-3", "10*9/L", 200),
                    ("14682-9", "umol/L", 70),
                    ("29463-7", "kg", 60),
                ]
            ):
                rows.append(("Observation", _obs(f"{pid}-d{k}", pid, loinc, v, unit, 10)))
            rows.append(
                (
                    "MedicationRequest",
                    {
                        "resourceType": "MedicationRequest",
                        "id": f"{pid}-m1",
                        "status": "active",
                        "intent": "order",
                        "subject": {"reference": f"Patient/{pid}"},
                        "authoredOn": "2026-01-01",
                        "medicationCodeableConcept": {
                            "coding": [
                                {
                                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                    "code": "312617",
                                    "display": "predniSONE 20 MG Oral Tablet",
                                }
                            ]
                        },
                        "dosageInstruction": [
                            {
                                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                                "doseAndRate": [{"doseQuantity": {"value": 1}}],
                            }
                        ],
                    },
                )
            )
        for rtype, body in rows:
            line = json.dumps(body) + "\n"
            size += len(line)
            files[rtype].write(line)
    for fh in files.values():
        fh.close()
    return size


def child_parse(folder: Path) -> None:
    start = time.perf_counter()
    count = 0
    for path in sorted(folder.glob("*.ndjson")):
        with path.open("rb") as fh:
            for line in fh:
                json.loads(line)
                count += 1
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - start,
                "resources": count,
                "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        )
    )


def child_screen(folder: Path) -> None:
    from fhir_adapter.config.loader import load_mappings
    from fhir_adapter.output.result_file import ResultWriter
    from fhir_adapter.pipeline import screen_files

    mappings = load_mappings()
    with tempfile.TemporaryDirectory() as tmp:
        writer = ResultWriter(Path(tmp) / "result.json", mappings.trial.study, AS_OF, mappings.fingerprint)
        start = time.perf_counter()
        problems = screen_files([folder], mappings, AS_OF, writer)
        writer.close(problems)
        seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "patients": writer.tally.patients,
                "errors": len(problems),
                "statuses": dict(writer.tally.statuses),
                "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        )
    )


def run_child(mode: str, folder: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, f"--child-{mode}", str(folder)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--repeat", type=int, default=3, help="best of N timings (default 3)")
    parser.add_argument("--child-parse", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-screen", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_parse:
        child_parse(args.child_parse)
        return 0
    if args.child_screen:
        child_screen(args.child_screen)
        return 0
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            size = generate(n, folder)
            parse = min((run_child("parse", folder) for _ in range(args.repeat)), key=lambda r: r["seconds"])
            screens = [run_child("screen", folder) for _ in range(args.repeat)]
            screen = min(screens, key=lambda r: r["seconds"])
            rss = max(int(r["rss_kb"]) for r in screens)  # type: ignore[call-overload]
            rows.append((n, size, parse, screen, rss))
    print(
        f"{'patients':>8} {'MB':>6} {'resources':>9} {'parse s':>8} {'screen s':>8} {'patients/s':>10} "
        f"{'x parse':>7} {'peak RSS MB':>11}"
    )
    for n, size, parse, screen, rss in rows:
        ps, ss = float(parse["seconds"]), float(screen["seconds"])  # type: ignore[arg-type]
        print(
            f"{n:>8} {size / 1e6:>6.1f} {parse['resources']:>9} {ps:>8.2f} {ss:>8.2f} {n / ss:>10.0f} "
            f"{ss / ps:>7.2f} {rss / 1024:>11.1f}"
        )
    if len(rows) >= 2:
        print(f"peak RSS {rows[-1][0]} / {rows[0][0]} patients: {rows[-1][4] / rows[0][4]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
