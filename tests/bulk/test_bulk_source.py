"""``screen --server URL --bulk`` against a loopback Bulk Data server holding the examples: the same
verdicts as screening the examples as files; the two-pass plan and its fallback; Medications after a
Patient/Group export; the work folder."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bulkfake import FakeBulk, FileSpec, manifest, ndjson

from fhir_adapter.client.http import FhirClient
from fhir_adapter.errors import ServerError
from fhir_adapter.facts.fhirjson import patient_of
from fhir_adapter.screen import run_screen
from fhir_adapter.settings import BulkSettings, OutputSettings, RuleSettings, ScreenSettings, ServerSettings
from fhir_adapter.source.bulk import export_changes
from fhir_adapter.source.reader import Item, read_all

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "patients"
AS_OF = dt.date(2026, 6, 15)
FAST = {"poll_initial_wait": 0.01, "poll_max_wait": 0.01}


def example_files() -> dict[str, bytes]:
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in read_all([EXAMPLES]):
        if isinstance(item, Item):
            by_type[item.resource["resourceType"]].append(item.resource)
    return {rtype: ndjson(resources) for rtype, resources in sorted(by_type.items())}


FILES = example_files()


def only(body: bytes, patients: set[str]) -> bytes:
    """The lines of an NDJSON body about one of ``patients`` (and those about no patient)."""
    keep = []
    for line in body.splitlines():
        pid = patient_of(json.loads(line))
        if pid is None or pid in patients:
            keep.append(line + b"\n")
    return b"".join(keep)


@pytest.fixture
def fake() -> Iterator[FakeBulk]:
    with FakeBulk() as server:
        for rtype, body in FILES.items():
            server.files[rtype] = FileSpec(body)
        server.manifest = manifest(server, [(t, server.file_url(t), None) for t in FILES])
        yield server


def subjects(path: Path) -> dict[str, Any]:
    return {s["patient"]: s for s in json.loads(path.read_text(encoding="utf-8"))["subjects"]}


@pytest.fixture(scope="module")
def by_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("files") / "result.json"
    settings = ScreenSettings(
        rules=RuleSettings(), as_of=AS_OF, paths=(EXAMPLES,), output=OutputSettings(out=out)
    )
    assert run_screen(settings, out=io.StringIO()) == 0
    return subjects(out)


def screen_bulk(fake: FakeBulk, tmp_path: Path, **bulk: Any) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / "result.json"
    summary = io.StringIO()
    settings = ScreenSettings(
        rules=RuleSettings(),
        as_of=AS_OF,
        server=ServerSettings(url=fake.base),
        output=OutputSettings(out=out),
        bulk=BulkSettings(**{**FAST, **bulk}),
    )
    code = run_screen(settings, out=summary)
    return code, subjects(out), summary.getvalue()


def test_a_single_export_gives_the_verdicts_of_the_same_data_as_files(
    fake: FakeBulk, tmp_path: Path, by_files: dict[str, Any]
) -> None:
    code, by_bulk, summary = screen_bulk(fake, tmp_path, two_pass=False)

    assert code == 0
    assert by_bulk == by_files and len(by_bulk) == 28
    kick = fake.kick_offs[0]
    assert kick.method == "GET" and kick.path == "/fhir/$export"
    types = dict(kick.params())["_type"].split(",")
    assert "Observation" in types and "Medication" in types and "Patient" in types
    assert fake.deleted_jobs == ["job1"]
    assert "one export of every type" in summary
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["source"].startswith(
        f"bulk: {fake.base}/ (system-level $export, transactionTime 2026-06-01T10:00:00.123Z"
    )


def test_a_file_whose_lines_are_not_the_manifests_count_is_screened_and_reported(
    fake: FakeBulk, tmp_path: Path, by_files: dict[str, Any]
) -> None:
    lines = FILES["Observation"].count(b"\n")
    fake.manifest = manifest(
        fake, [(t, fake.file_url(t), lines - 1 if t == "Observation" else None) for t in FILES]
    )
    code, by_bulk, _ = screen_bulk(fake, tmp_path, two_pass=False)

    assert code == 3
    assert by_bulk == by_files  # the file's Observations were read: the verdicts of the files
    errors = json.loads((tmp_path / "result.json").read_text())["errors"]
    assert [e["reason"] for e in errors] == [
        f"{lines} line(s) downloaded, the manifest says {lines - 1}: its lines are read as they are"
    ]
    assert fake.deleted_jobs == ["job1"]  # nothing is missing: the job is done


def test_the_two_pass_plan_asks_for_the_gates_conditions_then_the_candidates_data(
    fake: FakeBulk, tmp_path: Path, by_files: dict[str, Any]
) -> None:
    # The loopback server does not filter: its second manifest holds what a server gives for the candidates.
    candidates = sorted(p for p, s in by_files.items() if len(s["criteria"]) > 1)  # passed the gate
    for rtype, body in FILES.items():
        fake.files[f"c-{rtype}"] = FileSpec(only(body, {c.removeprefix("Patient/") for c in candidates}))
    second_manifest = manifest(fake, [(t, fake.file_url(f"c-{t}"), None) for t in FILES])
    fake.manifests = [manifest(fake, [("Condition", fake.file_url("Condition"), None)]), second_manifest]

    code, by_bulk, summary = screen_bulk(fake, tmp_path)

    assert code == 0
    first, second = fake.kick_offs
    assert dict(first.params())["_type"] == "Condition"
    filters = [v for k, v in first.params() if k == "_typeFilter"]
    assert any("Condition?code=" in f and "396230008" in f for f in filters)
    assert any(f.startswith("Condition?code:text=") for f in filters)
    assert second.method == "POST" and second.path == "/fhir/Patient/$export"
    params = json.loads(second.body)["parameter"]
    asked = sorted(p["valueReference"]["reference"] for p in params if p["name"] == "patient")
    assert asked == candidates
    # Patient level cannot carry Medications (HAPI-0512): they are read one by one instead.
    assert "Medication" not in next(p["valueString"] for p in params if p["name"] == "_type").split(",")
    # The candidates get the file verdicts; the patients the gate rejects are not listed (as on a server).
    assert by_bulk == {p: s for p, s in by_files.items() if p in asked}
    assert "first pass: " in summary and "two passes" in summary


def test_a_server_that_refuses_type_filter_gets_one_export_of_every_type(
    fake: FakeBulk, tmp_path: Path, by_files: dict[str, Any]
) -> None:
    fake.kickoff_refusals = [400]

    code, by_bulk, summary = screen_bulk(fake, tmp_path)

    assert code == 0 and by_bulk == by_files
    refused, used = fake.kick_offs
    assert any(k == "_typeFilter" for k, _ in refused.params())
    assert not any(k == "_typeFilter" for k, _ in used.params())
    assert "refused the gate's _typeFilter (HTTP 400)" in summary


def test_a_server_that_refuses_given_patients_gets_one_export_of_every_type(
    fake: FakeBulk, tmp_path: Path, by_files: dict[str, Any]
) -> None:
    fake.kickoff_refusals = [0, 400]  # the first pass runs, the second is refused
    fake.manifests = [manifest(fake, [("Condition", fake.file_url("Condition"), None)])]
    fake.manifest = manifest(fake, [(t, fake.file_url(t), None) for t in FILES])

    code, by_bulk, summary = screen_bulk(fake, tmp_path)

    assert code == 0 and by_bulk == by_files
    assert "refused an export of given patients" in summary


def test_a_group_export_reads_the_medications_its_requests_reference(fake: FakeBulk, tmp_path: Path) -> None:
    request = {
        "resourceType": "MedicationRequest",
        "id": "mr-x",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/dm02"},
        "medicationReference": {"reference": "Medication/m1"},
        "authoredOn": "2026-06-01",
    }
    fake.files["MedicationRequest"] = FileSpec(FILES["MedicationRequest"] + ndjson([request]))

    code, _, summary = screen_bulk(fake, tmp_path, group="g1", two_pass=False)

    assert code == 0
    kick = fake.kick_offs[0]
    assert kick.path == "/fhir/Group/g1/$export"
    assert "Medication" not in dict(kick.params())["_type"].split(",")
    assert [s.path for s in fake.requests_to("/fhir/Medication/")] == ["/fhir/Medication/m1"]
    assert "1 Medication read(s)" in summary


def test_the_work_folder_is_removed_after_a_complete_run(fake: FakeBulk, tmp_path: Path) -> None:
    screen_bulk(fake, tmp_path, two_pass=False)

    assert not (tmp_path / ".fhir-adapter-bulk").exists()


def test_after_a_failed_file_the_downloads_and_the_job_stay_for_the_next_run(
    fake: FakeBulk, tmp_path: Path
) -> None:
    fake.files["Observation"].statuses = [503] * 5

    code, _, _ = screen_bulk(fake, tmp_path, two_pass=False, download_attempts=5)

    assert code == 3
    work = tmp_path / ".fhir-adapter-bulk"
    assert list(work.glob("bulk-job-*.json")) and list(work.glob("files-*/Patient.001.ndjson"))
    doc = json.loads((tmp_path / "result.json").read_text())
    assert any("download failed" in e["reason"] for e in doc["errors"])

    code, _, summary = screen_bulk(fake, tmp_path, two_pass=False)

    assert code == 0 and len(fake.kick_offs) == 1 and "1 resumed" in summary
    assert not work.exists()


def test_a_run_that_stopped_after_the_first_pass_does_not_export_the_gate_again(
    fake: FakeBulk, tmp_path: Path, by_files: dict[str, Any]
) -> None:
    fake.manifests = [manifest(fake, [("Condition", fake.file_url("Condition"), None)]), fake.manifest]
    fake.kickoff_refusals = [0, 500]  # the second pass's kick-off fails (a POST is not resent after a 500)
    with pytest.raises(ServerError):
        screen_bulk(fake, tmp_path)

    code, by_bulk, _ = screen_bulk(fake, tmp_path)

    assert code == 0
    with_filter = [k for k in fake.kick_offs if any(name == "_typeFilter" for name, _ in k.params())]
    assert len(with_filter) == 1
    assert by_bulk == {p: s for p, s in by_files.items() if p in by_bulk} and by_bulk


def test_export_changes_gives_the_sync_files_deletions_patients_and_the_next_since(
    fake: FakeBulk, tmp_path: Path
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": "Observation/gone1"}}],
    }
    fake.files["d"] = FileSpec(ndjson([bundle]))
    fake.files["o"] = FileSpec(
        ndjson([{"resourceType": "Observation", "id": "o2", "subject": {"reference": "Patient/dm02"}}])
    )
    fake.manifest = manifest(
        fake,
        [("Observation", fake.file_url("o"), 1)],
        deleted=[{"type": "Bundle", "url": fake.file_url("d")}],
    )
    since = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)

    with FhirClient(fake.base) as client:
        changes = export_changes(
            client, since, "g1", frozenset({"Observation"}), tmp_path / "state", settings=BulkSettings(**FAST)
        )

    kick = fake.kick_offs[0]
    assert kick.path == "/fhir/Group/g1/$export"
    assert dict(kick.params())["_since"] == "2026-05-01T00:00:00.000Z"
    assert dict(kick.params())["_type"] == "Observation,Patient"
    assert changes.deleted == ("Observation/gone1",)
    assert changes.transaction_time == dt.datetime(2026, 6, 1, 10, 0, 0, 123000, tzinfo=dt.UTC)
    assert changes.patients() == {"dm02"}
    assert changes.complete and changes.folder == tmp_path / "state" / "changes"


def test_a_first_pass_patient_with_an_invalid_id_is_reported_not_sent(tmp_path: Path) -> None:
    from fhir_adapter.config.loader import load_trials
    from fhir_adapter.screening import Screener
    from fhir_adapter.source.bulk_plan import admitted_patients

    gate = Screener(load_trials((), (), None), AS_OF).gate
    dm = {"coding": [{"system": "http://snomed.info/sct", "code": "396230008"}]}
    path = tmp_path / "Condition.001.ndjson"
    path.write_bytes(
        ndjson(
            [
                {
                    "resourceType": "Condition",
                    "id": "c1",
                    "code": dm,
                    "subject": {"reference": "Patient/ok-1"},
                },
                {
                    "resourceType": "Condition",
                    "id": "c2",
                    "code": dm,
                    "subject": {"reference": "Patient/a_b&c"},
                },
                {
                    "resourceType": "Condition",
                    "id": "c3",
                    "code": {"text": "asthma"},
                    "subject": {"reference": "Patient/p3"},
                },
            ]
        )
        + b"[1]\n"
    )

    found, bad = admitted_patients([path], gate)

    assert found == {"ok-1"} and bad == 2
