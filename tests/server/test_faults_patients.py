"""Issue 8, class 2: one patient's failure is that patient's.

A transport failure after retries, a timeout, 401/403/404, a paging loop or a malformed Bundle on one
patient is recorded under ``errors`` for that patient; the others are screened, the result file is
written, exit 3. Exit 4 only for systemic failure (unreachable at the start, authentication failing
after a token refresh, K patients in a row). No server answer produces exit 70.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from faultserver import FaultServer, Reply, Reset, Silence, outcome, searchset
from fhirdata import baseline, for_patient

from fhir_adapter.cli import main

from .faultrun import PATIENTS, load_patients, screen

EVERYTHING = r"Patient/p3/\$everything"


def _bundle(**fields: Any) -> Reply:
    return Reply(json={"resourceType": "Bundle", "type": "searchset", **fields})


FAULTS: dict[str, Any] = {
    "reset": Reset(),
    "silence": Silence(),
    "401": Reply(401, json=outcome("login")),
    "403": Reply(403, json=outcome("forbidden")),
    "500": Reply(500, json=outcome("exception")),
    "not-json": Reply(200, body=b"<html>maintenance</html>"),
    "json-array": Reply(200, body=b"[1, 2, 3]"),
    "not-a-bundle": Reply(200, json={"resourceType": "Patient", "id": "p3"}),
    "link-5": _bundle(link=5, entry=[]),
    "entry-5": _bundle(entry=5),
    "entries-not-objects": _bundle(entry=[1, "x", None]),
    "resource-not-object": _bundle(entry=[{"resource": 5}]),
    "next-url-not-string": _bundle(entry=[], link=[{"relation": "next", "url": 5}]),
    "deeply-nested": Reply(
        200, body=b'{"resourceType": "Bundle", "entry": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
    ),
    "invalid-utf8": Reply(200, body=b'{"resourceType": "Bundle", "entry": [], "x": "\xff\xfe"}'),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_one_patients_fault_is_that_patients_error_and_the_others_are_screened(
    fault: str,
    server: FaultServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    bearer: list[str],
    fast_retries: None,
) -> None:
    load_patients(server)
    server.on("GET", EVERYTHING, FAULTS[fault], repeat=True)

    run = screen(capsys, server, tmp_path / "r.json", *bearer, "--timeout", "1")

    assert run.code == 3, run.err[-2000:]
    assert run.screened() == ["Patient/p1", "Patient/p2", "Patient/p4", "Patient/p5"]
    (error,) = run.errors_for("Patient/p3")
    assert error["reason"].startswith("Patient/p3: cannot fetch the record")
    assert "internal error" not in error["reason"]
    assert run.seconds < 60


def test_a_paging_loop_is_that_patients_error(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server)
    resources = for_patient(baseline(), "p3")
    server.on("GET", EVERYTHING, Reply(json=searchset(resources[:2], f"{server.base}/p3-page?n=2")))
    server.on(
        "GET", "p3-page", Reply(json=searchset(resources[2:], f"{server.base}/p3-page?n=2")), repeat=True
    )

    run = screen(capsys, server, tmp_path / "r.json")

    assert run.code == 3
    assert "paging loop" in run.errors_for("Patient/p3")[0]["reason"]
    assert len(server.requests_to("GET", "p3-page")) == 1
    assert len(run.screened()) == 4


def test_a_missing_patient_is_that_patients_error(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1", "p2")

    run = screen(
        capsys, server, tmp_path / "r.json", "--patient", "p1", "--patient", "gone", "--patient", "p2"
    )

    assert run.code == 3
    assert run.errors_for("Patient/gone")[0]["reason"] == "Patient/gone: no such patient on the server"
    assert run.screened() == ["Patient/p1", "Patient/p2"]


def test_resources_of_a_record_the_adapter_cannot_use_are_reported_as_a_file_would_report_them(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server)
    resources = for_patient(baseline(), "p3")
    odd = [
        {
            "resourceType": "Observation",
            "id": "x1",
            "status": "final",
            "subject": [{"reference": "Patient/p3"}],
        },
        {"id": "x2"},
        {"resourceType": 5, "id": "x3"},
        {"resourceType": "Observation", "id": "Zhang Weiling", "status": "final"},
        {"resourceType": "Practitioner", "id": "dr"},  # not a type the criteria read: no problem
    ]
    server.on("GET", EVERYTHING, Reply(json=searchset([*resources, *odd])), repeat=True)

    run = screen(capsys, server, tmp_path / "r.json")

    assert run.code == 3
    assert run.screened() == [f"Patient/p{n}" for n in range(1, 6)]  # p3 too, without them
    assert [e["reason"] for e in run.errors_for("Patient/p3")] == [
        "Patient/p3: Observation/x1 has no patient reference: skipped",
        "Patient/p3: a resource of the answer has no resourceType or id: skipped",
        "Patient/p3: a resource of the answer has no resourceType or id: skipped",
        "Patient/p3: Observation with an id that is not a FHIR id has no patient reference: skipped",
    ]
    assert "Zhang" not in run.err


def test_a_candidate_id_that_is_not_a_fhir_id_is_reported_without_repeating_it(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1")
    bad = [r for r in for_patient(baseline(), "p2") if r["resourceType"] == "Condition"]
    for n, name in enumerate(["Zhang Weiling MRN-8841", "evil\r\nX-Forged: 1", "a" * 5000]):
        server.store.put({**bad[0], "id": f"bad{n}", "subject": {"reference": f"Patient/{name}"}})

    run = screen(capsys, server, tmp_path / "r.json")

    assert run.code == 3
    assert run.screened() == ["Patient/p1"]
    reasons = [e["reason"] for e in (run.result or {})["errors"]]
    assert (
        reasons == ["a patient reference from the server is not a valid FHIR id (not shown): not fetched"] * 3
    )
    for shown in (run.err, json.dumps(run.result)):
        assert "Zhang" not in shown and "X-Forged" not in shown and "a" * 100 not in shown


def test_an_unreachable_server_at_the_start_stops_the_run_with_exit_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_retries: None
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "r.json"

    code = main(["screen", "--server", f"http://127.0.0.1:{port}/fhir", "--out", str(out)])

    assert code == 4
    assert not out.exists()
    assert "ConnectionError" in capsys.readouterr().err


@pytest.mark.parametrize("concurrency", [1, 4])
def test_authentication_failing_after_a_token_refresh_stops_the_run_with_exit_4(
    concurrency: int, server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .test_faults_origin import _smart_args

    load_patients(server)
    server.on(
        "POST",
        "token",
        Reply(json={"access_token": "t", "token_type": "bearer", "expires_in": 300}),
        repeat=True,
    )
    server.on("GET", r"Patient/p\d/\$everything", Reply(401, json=outcome("login")), repeat=True)

    args = ("--concurrency", str(concurrency), *_smart_args(tmp_path, server.url("token")))
    run = screen(capsys, server, tmp_path / "r.json", *args)

    assert run.code == 4
    assert run.result is None  # no partial result where a scheduled job would read it
    if concurrency == 1:
        # The first patient got the 401, a fresh token, a second 401: the run stopped there.
        assert len(server.requests_to("GET", r"Patient/p\d/\$everything")) == 2
        assert len(server.requests_to("POST", "token")) == 2


def test_403_on_every_patient_with_renewable_auth_is_per_patient_not_an_auth_failure(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server)
    server.on("GET", EVERYTHING, Reply(403, json=outcome("forbidden")), repeat=True)

    run = screen(capsys, server, tmp_path / "r.json")

    assert run.code == 3
    assert "HTTP 403" in run.errors_for("Patient/p3")[0]["reason"]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_k_patients_failing_in_a_row_stop_the_run_with_exit_4(
    concurrency: int,
    server: FaultServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fast_retries: None,
) -> None:
    load_patients(server)
    server.on("GET", r"Patient/p\d/\$everything", Reset(), repeat=True)

    args = ("--max-consecutive-failures", "3", "--concurrency", str(concurrency))
    run = screen(capsys, server, tmp_path / "r.json", *args)

    assert run.code == 4
    assert "3 patients in a row" in run.err
    if concurrency == 1:  # a pool has a few more fetches in flight when the third one fails
        fetched = {r.path for r in server.requests_to("GET", r"Patient/p\d/\$everything")}
        assert fetched == {f"Patient/{p}/$everything" for p in PATIENTS[:3]}


def test_failures_that_are_not_in_a_row_do_not_stop_the_run(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_retries: None
) -> None:
    load_patients(server)
    server.on("GET", r"Patient/p[135]/\$everything", Reset(), repeat=True)

    run = screen(capsys, server, tmp_path / "r.json", "--max-consecutive-failures", "2")

    assert run.code == 3
    assert run.screened() == ["Patient/p2", "Patient/p4"]


GARBAGE = [
    b"",
    b"null",
    b"[]",
    b'"text"',
    b"{}",
    b'{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Condition", "code": 5, "subject": 7}}]}',
    b'{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient"}}]}',
    b'{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": 5, "id": ["x"]}}]}',
    b'{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Observation", "id": "o", "subject": {"reference": "Patient/p1"}, "code": {"coding": 5}, "valueQuantity": {"value": "NaN"}, "effectiveDateTime": 7}}]}',
    b'{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "MedicationRequest", "id": "m", "subject": {"reference": "Patient/p1"}, "medicationReference": {"reference": 5}, "dosageInstruction": "x"}}]}',
    b'{"resourceType": "Bundle", "total": "many", "link": [{"relation": "next"}], "meta": 5}',
    b'{"resourceType": "OperationOutcome", "issue": 5}',
    b"1e999999",
    b'{"resourceType": "Bundle", "link": 5}',
    b'{"resourceType": "Bundle", "entry": 5}',
    b'{"resourceType": "Bundle", "link": [{"relation": "next", "url": {"x": 1}}]}',
]


# Every body where a record or a subject is parsed; a few where the run is being set up.
GARBAGE_CASES = [
    *((where, i) for where in ("everything", "researchsubject") for i in range(len(GARBAGE))),
    *((where, i) for where in ("metadata", "candidates") for i in (0, 3, 5, 10, 12, 13, 14, 15)),
]


@pytest.mark.parametrize(("where", "index"), GARBAGE_CASES)
def test_no_server_answer_produces_exit_70(
    where: str, index: int, server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = GARBAGE[index]
    load_patients(server, "p1", "p2")
    path = {
        "metadata": "metadata",
        "candidates": "Condition",
        "everything": r"Patient/p1/\$everything",
        "researchsubject": "ResearchSubject",
    }[where]
    server.on("GET", path, Reply(200, body=body), repeat=True)

    run = screen(capsys, server, tmp_path / "r.json", "--write-back", verbose=False)

    assert run.code in (0, 3, 4), run.err[-3000:]
    assert "internal error" not in run.err
