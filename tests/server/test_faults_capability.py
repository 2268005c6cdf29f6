"""Issue 8, class 6: a capability that lies falls back.

``$everything`` advertised in the CapabilityStatement but answered 404/405/501 (or 400) switches the run
to typed searches once, logged, instead of reporting every patient missing. A 404 for a patient the
server really does not have, on a server whose ``$everything`` works, does not switch anything: one
typed read of the Patient tells the two apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faultserver import FaultServer, Reply, outcome

from .faultrun import PATIENTS, load_patients, screen

EVERYTHING = r"Patient/p\d/\$everything"


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("status", [404, 405, 501, 400])
def test_everything_advertised_but_not_answered_switches_to_typed_searches_once(
    status: int, concurrency: int, server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server)
    server.on("GET", EVERYTHING, Reply(status, json=outcome("not-supported")), repeat=True)
    expected = tmp_path / "expected.json"
    typed = FaultServer(everything=False)
    with typed:
        load_patients(typed)
        baseline_run = screen(capsys, typed, expected)

    run = screen(capsys, server, tmp_path / "r.json", "--concurrency", str(concurrency))

    assert run.code == 0, run.err[-2000:]
    # The first patient finds out, then typed searches; with a pool, the fetches already in flight
    # (at most one per thread) may find out too, and the switch is still made and said once.
    tried = len(server.requests_to("GET", EVERYTHING))
    assert tried == 1 if concurrency == 1 else 1 <= tried <= concurrency
    assert run.screened() == [f"Patient/{p}" for p in PATIENTS]
    assert (
        run.err.count("switched to typed searches for the rest of the run") == 2
    )  # the log line, the summary
    assert "Requests per patient (typed searches)" in run.err
    # The same verdicts as a server that never offered $everything.
    assert _verdicts(run.result) == _verdicts(baseline_run.result)


def test_a_missing_patient_on_a_working_everything_server_does_not_switch_strategy(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1", "p3")

    run = screen(capsys, server, tmp_path / "r.json", "--patient", "p1", "--patient", "p2", "--patient", "p3")

    assert run.code == 3
    assert run.errors_for("Patient/p2")[0]["reason"] == "Patient/p2: no such patient on the server"
    assert len(server.requests_to("GET", EVERYTHING)) == 3  # p3 still by $everything
    assert [r.path for r in server.requests_to("GET", r"Patient/p\d")] == ["Patient/p2"]  # the one probe
    assert "switched" not in run.err
    assert "Requests per patient ($everything)" in run.err


def _verdicts(result: dict[str, object] | None) -> str:
    assert result is not None
    subjects = result["subjects"]
    assert isinstance(subjects, list)
    return json.dumps(
        [(s["patient"], s["status"], [(c["id"], c["verdict"]) for c in s["criteria"]]) for s in subjects]
    )
