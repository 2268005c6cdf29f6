"""``screen --server`` end to end against a mocked server: result file, dry-run lines, summary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

from fhir_adapter.cli import main
from fhir_adapter.source.reader import Item, read_file

BASE = "https://fhir.example.org/r4"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "patients"
Res = dict[str, Any]

CAPABILITY = {
    "resourceType": "CapabilityStatement",
    "fhirVersion": "4.0.1",
    "rest": [{"mode": "server", "resource": [{"type": "Patient", "operation": [{"name": "everything"}]}]}],
}


def example(name: str) -> list[Res]:
    """The resources of an example patient, as a server returns them (with a versionId)."""
    items = [i for i in read_file(EXAMPLES / f"{name}.json") if isinstance(i, Item)]
    return [{**i.resource, "meta": {"versionId": "1"}} for i in items]


def searchset(resources: list[Res]) -> Res:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


@pytest.fixture
def server() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{BASE}/metadata", json=CAPABILITY)
        rsps.get(f"{BASE}/ResearchStudy", json=searchset([]))
        rsps.get(f"{BASE}/Device", json=searchset([]))
        rsps.get(f"{BASE}/ResearchSubject", json=searchset([]))
        yield rsps


def test_dry_run_screens_given_patients_and_writes_nothing(
    server: responses.RequestsMock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Candidate and polymyositis-only patients of examples/patients.md.
    server.get(f"{BASE}/Patient/dm01/$everything", json=searchset(example("dm01")))
    server.get(f"{BASE}/Patient/pm05/$everything", json=searchset(example("pm05")))
    server.get(f"{BASE}/Patient/gone/$everything", status=404, json={"resourceType": "OperationOutcome"})
    # A 404 from $everything is read as "no such patient" only once the Patient read agrees.
    server.get(f"{BASE}/Patient/gone", status=404, json={"resourceType": "OperationOutcome"})
    out = tmp_path / "result.json"

    patients = ["--patient", "dm01", "--patient", "pm05", "--patient", "gone"]
    code = main(["screen", "--server", BASE, "--as-of", "2026-06-15", "--out", str(out), *patients])

    assert code == 3  # the unknown patient
    result = json.loads(out.read_text())
    subjects = {s["patient"]: s for s in result["subjects"]}
    assert subjects["Patient/dm01"]["status"] == "candidate"
    assert subjects["Patient/dm01"]["requests"] == 1
    assert [c["id"] for c in subjects["Patient/pm05"]["criteria"]] == [
        "diagnosis"
    ]  # no DM: listed like files
    assert result["errors"] == [
        {
            "file": f"{BASE}/",
            "reason": "Patient/gone: no such patient on the server",
            "resource": "Patient/gone",
        }
    ]
    err = capsys.readouterr().err
    assert "NCT05495321 Patient/dm01: would create ResearchSubject (candidate)" in err
    # One rule everywhere: a ResearchSubject only for a patient whose gate (the diagnosis) is met.
    assert "NCT05495321 Patient/pm05: no ResearchSubject (not a candidate of the study)" in err
    assert "FHIR R4 server" in err
    assert "Requests per patient ($everything): mean 1.0, max 1" in err
    assert "Write-back NCT05495321 (dry run, nothing written; add --write-back): would create 1," in err
    assert "not a candidate 1" in err
    assert {c.request.method for c in server.calls} == {"GET"}


def test_server_and_paths_together_are_a_usage_error(tmp_path: Path) -> None:
    assert main(["screen", "--server", BASE, str(tmp_path)]) == 2


def test_unsupported_fhir_version_stops_the_run(server: responses.RequestsMock) -> None:
    server.replace(responses.GET, f"{BASE}/metadata", json={**CAPABILITY, "fhirVersion": "3.0.2"})

    assert main(["screen", "--server", BASE, "--patient", "p1"]) == 4
