"""Issue 8, class 4: server error text is not log text.

A server's OperationOutcome (``diagnostics``, ``details.text``), its status line's reason phrase, even
the issue ``code`` can quote patient data. Logs, the terminal, ``state.sqlite`` and manifests carry the
status, the issue code and severity (when they are FHIR codes), the resource type and id; the free text
goes only to the result file's ``errors[].serverText`` (mode 0600).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from faultserver import FaultServer, Reply, outcome, searchset
from fhirdata import baseline, for_patient

from fhir_adapter.cli import main

from .faultrun import PHI, PHI_TEXT, load_patients, screen


def phi_outcome(code: str = "processing") -> dict[str, object]:
    body = outcome(code, PHI_TEXT)
    body["issue"][0]["details"] = {"text": f"{PHI[0]} {PHI[1]}"}  # type: ignore[index]
    body["issue"].append({"severity": "error", "code": PHI[0], "diagnostics": PHI[2]})  # type: ignore[attr-defined]
    return body


def assert_no_phi(text: str, where: str) -> None:
    for value in PHI:
        assert value not in text, f"{value!r} leaked into {where}"


def script_phi_faults(server: FaultServer) -> None:
    load_patients(server, "p1", "p2", "p3")
    # A fetch refused with PHI in the OperationOutcome and in the reason phrase.
    server.on(
        "GET",
        r"Patient/p1/\$everything",
        Reply(500, json=phi_outcome(), reason=f"Error for {PHI[0]}"),
        repeat=True,
    )
    # A write-back refused with PHI.
    server.on(
        "POST",
        "ResearchSubject",
        lambda request: (
            Reply(422, json=phi_outcome("invalid"))
            if "p2" in json.dumps(request.json()["individual"])
            else None
        ),
        repeat=True,
    )
    # The :text part of the candidate search refused with PHI (a warning, not an error).
    server.on(
        "GET",
        "Condition",
        lambda r: Reply(400, json=phi_outcome()) if "code:text" in r.query else None,
        repeat=True,
    )
    # A search warning (an outcome entry) with PHI.
    resources = for_patient(baseline(), "p3")
    warning = {**phi_outcome("informational"), "id": "w1"}
    page = searchset([*resources, warning])
    page["entry"][-1]["search"] = {"mode": "outcome"}
    server.on("GET", r"Patient/p3/\$everything", Reply(json=page), repeat=True)


def test_screen_keeps_server_text_out_of_logs_and_terminal_and_puts_it_in_the_result_file_only(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_retries: None
) -> None:
    script_phi_faults(server)

    run = screen(capsys, server, tmp_path / "r.json", "--write-back")

    assert run.code == 3
    assert_no_phi(run.err, "stderr (-vv logs and the terminal summary)")
    assert run.result is not None
    errors = {e["resource"]: e for e in run.result["errors"]}
    assert errors["Patient/p1"]["reason"] == (
        "Patient/p1: cannot fetch the record: HTTP 500 on GET Patient/p1/$everything: error/processing, "
        "error/? [after 6 attempts]"
    )
    assert PHI_TEXT in errors["Patient/p1"]["serverText"]
    assert "HTTP 422 on POST ResearchSubject: error/invalid, error/?" in errors["Patient/p2"]["reason"]
    assert PHI_TEXT in errors["Patient/p2"]["serverText"]
    for error in run.result["errors"]:
        assert_no_phi(error["reason"], "an error's reason")
    assert "error/processing" in run.err  # what the operator gets instead: status and codes
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o600


def test_sync_keeps_server_text_out_of_state_manifests_and_output(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_retries: None
) -> None:
    script_phi_faults(server)
    config = tmp_path / "site.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [server]
            url = "{server.base}"
            [study]
            as_of = "2026-06-15"
            [state]
            path = "state/state.sqlite"
            manifests = "runs"
            [report]
            result = "out/latest.json"
            html = "out/latest.html"
            """
        ),
        encoding="utf-8",
    )

    code = main(["sync", "--config", str(config), "-vv"])

    assert code == 3
    captured = capsys.readouterr()
    assert_no_phi(captured.out + captured.err, "the sync run's stdout/stderr")
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "site.toml"]
    assert any(p.name == "state.sqlite" for p in written) and any(p.suffix == ".json" for p in written)
    for path in written:
        assert_no_phi(path.read_bytes().decode("utf-8", "replace"), str(path.relative_to(tmp_path)))
    (manifest,) = (tmp_path / "runs").glob("run-*.json")
    reasons = [e["reason"] for e in json.loads(manifest.read_text())["errors"]]
    assert any("HTTP 500 on GET Patient/p1/$everything: error/processing" in r for r in reasons)


def test_load_prints_status_and_codes_but_not_the_diagnostics(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "p.json"
    data.write_text(json.dumps(for_patient(baseline(), "p1")[0]), encoding="utf-8")
    server.on("POST", "", Reply(400, json=phi_outcome("invalid")), repeat=True)

    code = main(["load", "--server", server.base, str(data), "-vv"])

    assert code == 3
    err = capsys.readouterr().err
    assert_no_phi(err, "load's output")
    assert "HTTP 400 on POST [base]: error/invalid" in err


def test_a_token_endpoints_error_description_is_not_repeated(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .test_faults_origin import _smart_args

    server.on("POST", "token", Reply(400, json={"error": "invalid_client", "error_description": PHI_TEXT}))

    code = main(
        ["screen", "--server", server.base, "--patient", "p1", *_smart_args(tmp_path, server.url("token"))]
    )

    assert code == 4
    err = capsys.readouterr().err
    assert "invalid_client" in err
    assert_no_phi(err, "the token error")
