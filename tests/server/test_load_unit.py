"""``fhir-adapter load``: transaction Bundles of PUT, ordering, isolating rejected resources, exit codes."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

from fhir_adapter.cli import main
from fhir_adapter.client.http import FhirClient
from fhir_adapter.load import load_paths

BASE = "https://fhir.example.org/r4"
Res = dict[str, Any]


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


def client() -> FhirClient:
    return FhirClient(BASE, sleep=lambda _: None, rng=random.Random(1))


def write_bundle(path: Path, *resources: Res) -> Path:
    entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources]
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    return path


def patient(pid: str) -> Res:
    return {"resourceType": "Patient", "id": pid}


def obs(oid: str, pid: str, status: str = "final") -> Res:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": {"text": "x"},
        "subject": {"reference": f"urn:uuid:{pid}"},
    }


class FakeServer:
    """Answers transactions: 201 per entry, or 400 for the whole Bundle if it holds a bad status."""

    def __init__(self) -> None:
        self.transactions: list[list[str]] = []

    def __call__(self, request: Any) -> tuple[int, dict[str, str], str]:
        bundle = json.loads(request.body)
        urls = [e["request"]["url"] for e in bundle["entry"]]
        assert all(e["request"]["method"] == "PUT" for e in bundle["entry"])
        self.transactions.append(urls)
        if any(e["resource"].get("status") == "entered-in-error " for e in bundle["entry"]):
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [
                    {
                        "severity": "error",
                        "code": "processing",
                        "diagnostics": "Unknown code 'entered-in-error '",
                    }
                ],
            }
            return 400, {}, json.dumps(outcome)
        reply = {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [{"response": {"status": "201 Created"}} for _ in urls],
        }
        return 200, {}, json.dumps(reply)


def test_resources_are_put_under_their_ids_with_localised_references(
    mocked: responses.RequestsMock, tmp_path: Path
) -> None:
    server = FakeServer()
    mocked.add_callback(responses.POST, f"{BASE}/", callback=server)
    med = {"resourceType": "Medication", "id": "m1", "code": {"text": "prednisone"}}
    write_bundle(tmp_path / "a.json", patient("a"), obs("a-o1", "a"), med)

    report = load_paths(client(), [tmp_path])

    assert report.created == 3 and not report.problems
    # Resources of no patient first (references to them must resolve), then the patient before its data.
    assert server.transactions == [["Medication/m1"], ["Patient/a", "Observation/a-o1"]]
    sent = json.loads(mocked.calls[1].request.body)
    assert sent["entry"][1]["resource"]["subject"] == {"reference": "Patient/a"}


def test_a_rejected_resource_is_isolated_and_the_rest_of_its_chunk_loaded(
    mocked: responses.RequestsMock, tmp_path: Path
) -> None:
    server = FakeServer()
    mocked.add_callback(responses.POST, f"{BASE}/", callback=server)
    write_bundle(tmp_path / "a.json", patient("a"), obs("a-o1", "a"), obs("a-o2", "a", "entered-in-error "))
    write_bundle(tmp_path / "b.json", patient("b"), obs("b-o1", "b"))

    report = load_paths(client(), [tmp_path])

    assert report.created == 4
    assert len(report.problems) == 1
    assert report.problems[0].reason.startswith("Observation/a-o2: HTTP 400")
    # The server's diagnostics may quote the data: the terminal gets the status and issue code only.
    assert "Unknown code" not in report.problems[0].reason
    assert "Unknown code" not in report.render()


def test_resource_without_id_is_reported_not_sent(mocked: responses.RequestsMock, tmp_path: Path) -> None:
    server = FakeServer()
    mocked.add_callback(responses.POST, f"{BASE}/", callback=server)
    (tmp_path / "x.json").write_text(json.dumps({"resourceType": "Patient", "gender": "male"}))
    write_bundle(tmp_path / "y.json", patient("y"))

    report = load_paths(client(), [tmp_path])

    assert report.created == 1
    assert [p.reason for p in report.problems] == ["Patient has no id, so it cannot be PUT; give it one"]


def test_chunks_hold_whole_patients_up_to_the_chunk_size(
    mocked: responses.RequestsMock, tmp_path: Path
) -> None:
    server = FakeServer()
    mocked.add_callback(responses.POST, f"{BASE}/", callback=server)
    for pid in ("a", "b", "c"):
        write_bundle(tmp_path / f"{pid}.json", patient(pid), obs(f"{pid}-o1", pid))

    load_paths(client(), [tmp_path], chunk_size=4)

    assert [len(t) for t in server.transactions] == [4, 2]


def test_load_command_exits_3_when_something_was_not_loaded(
    mocked: responses.RequestsMock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = FakeServer()
    mocked.add_callback(responses.POST, f"{BASE}/", callback=server)
    write_bundle(tmp_path / "a.json", patient("a"), obs("a-o1", "a", "entered-in-error "))

    code = main(["load", "--server", BASE, str(tmp_path)])

    assert code == 3
    assert "Observation/a-o1" in capsys.readouterr().err


def test_load_command_exits_0_when_everything_was_loaded(
    mocked: responses.RequestsMock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mocked.add_callback(responses.POST, f"{BASE}/", callback=FakeServer())
    write_bundle(tmp_path / "a.json", patient("a"))

    assert main(["load", "--server", BASE, str(tmp_path)]) == 0
    assert "Loaded 1 of 1 resource(s)" in capsys.readouterr().err


def test_load_command_without_server_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["load", str(tmp_path)]) == 2
