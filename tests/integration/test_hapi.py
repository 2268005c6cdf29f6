"""Against a real HAPI FHIR sandbox: seed, screen, write back, re-run, concurrency, staff decisions, R5.

Needs ``FHIR_SANDBOX_URL`` (``sandbox/hapi/sandbox.sh start`` prints it); skipped without it unless
``FHIR_REQUIRE_SANDBOX=1``. The R5 test uses ``FHIR_SANDBOX_R5_URL`` when set, else starts a second
HAPI from the sandbox jar on a free port (``--fhir-version R5``) and stops it afterwards.

The tests tolerate a server that already holds data (a re-run against the same sandbox): patients they
need fresh get ids unique to the run, and counts are taken before/after rather than assumed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fhir_adapter.cli import build_parser, main, screen_settings
from fhir_adapter.client.http import FhirClient
from fhir_adapter.screen import run_screen
from fhir_adapter.writeback.subjects import STATE_SYSTEM, SUBJECT_ID_SYSTEM, TAG_CODE, TAG_SYSTEM

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "patients"
JAR = REPO / "sandbox" / "hapi" / "target" / "hapi-sandbox.jar"
AS_OF = "2026-06-15"
STUDY = "NCT05495321"
Res = dict[str, Any]
Verdicts = dict[str, tuple[str, tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...]]]


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(sandbox_url: str) -> str:
    code, err = cli("load", "--server", sandbox_url, str(EXAMPLES))
    # HAPI refuses a few deliberately messy example values (e.g. a status with trailing blanks);
    # those come back as problems (exit 3), the rest is loaded. The verdict comparison below shows
    # whether anything that mattered was lost.
    assert code in (0, 3), err
    with client(sandbox_url) as fhir:
        for path in sorted(EXAMPLES.glob("*.json")):
            assert fhir.read("Patient", path.stem) is not None, f"Patient/{path.stem} was not loaded: {err}"
    return sandbox_url


@pytest.fixture(scope="module")
def file_verdicts(tmp_path_factory: pytest.TempPathFactory) -> Verdicts:
    out = tmp_path_factory.mktemp("files") / "result.json"
    code, err = cli("screen", str(EXAMPLES), "--as-of", AS_OF, "--out", str(out))
    assert code == 0, err
    return verdicts(out)


@pytest.fixture(scope="module")
def written(seeded: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("first-write") / "result.json"
    code, err = cli("screen", "--server", seeded, "--as-of", AS_OF, "--out", str(out), "--write-back")
    assert code == 0, err
    return seeded


@pytest.fixture(scope="module")
def r5_url(tmp_path_factory: pytest.TempPathFactory, fhir_answers: Callable[[str], bool]) -> Iterator[str]:
    given = os.environ.get("FHIR_SANDBOX_R5_URL")
    if given:
        if not fhir_answers(given):
            pytest.fail(f"FHIR_SANDBOX_R5_URL={given} does not answer GET metadata")
        yield given.rstrip("/")
        return
    if not os.environ.get("FHIR_SANDBOX_URL"):
        pytest.skip("FHIR_SANDBOX_URL is not set: no sandbox run, so no R5 instance either")
    java = shutil.which("java")
    if java is None or not JAR.is_file():
        pytest.skip(f"no R5 sandbox: set FHIR_SANDBOX_R5_URL, or build {JAR.relative_to(REPO)} (needs java)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/fhir"
    log = (tmp_path_factory.mktemp("hapi-r5") / "hapi.log").open("wb")
    command = [java, "-Xmx1g", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-jar", str(JAR)]
    server = subprocess.Popen(
        [*command, f"--server.port={port}", "--fhir-version=R5"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + float(os.environ.get("HAPI_START_TIMEOUT", "240"))
        while not fhir_answers(url):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the R5 sandbox on port {port} did not start (log: {log.name})")
            time.sleep(2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


# -- helpers -----------------------------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str]:
    """Run ``fhir-adapter`` in this process; returns the exit code and what it wrote to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, err.getvalue()


def client(url: str) -> FhirClient:
    return FhirClient(url, max_retries=2)


def verdicts(result: Path) -> Verdicts:
    """Status plus every criterion's and component's verdict, per patient."""
    out: Verdicts = {}
    for subject in json.loads(result.read_text(encoding="utf-8"))["subjects"]:
        criteria = tuple(
            (c["id"], c["verdict"], tuple((k["id"], k["verdict"]) for k in c.get("components", [])))
            for c in subject["criteria"]
        )
        out[subject["patient"]] = (subject["status"], criteria)
    return out


def dm_patients(by_file: Verdicts) -> set[str]:
    """Patients the file screen found a DM diagnosis for (the others are listed with ``diagnosis`` only)."""
    return {p for p, (_, criteria) in by_file.items() if len(criteria) > 1}


def history_total(url: str) -> int:
    """Number of resource versions on the server (every create and update adds one)."""
    bundle = requests.get(f"{url}/_history", params={"_summary": "count"}, timeout=30).json()
    return int(bundle["total"])


def subjects_of(url: str, patient_id: str) -> list[Res]:
    with client(url) as fhir:
        token = f"{SUBJECT_ID_SYSTEM}|{STUDY}:{patient_id}"
        return [
            r
            for r in fhir.search("ResearchSubject", {"identifier": token})
            if r["resourceType"] == "ResearchSubject"
        ]


def provenances_of(url: str, subject_id: str) -> list[Res]:
    with client(url) as fhir:
        return list(fhir.search("Provenance", {"target": f"ResearchSubject/{subject_id}"}))


def the_subject(url: str, patient_id: str) -> Res:
    found = subjects_of(url, patient_id)
    assert len(found) == 1, f"{len(found)} ResearchSubjects for Patient/{patient_id}"
    return found[0]


def staff_put(url: str, resource: Res) -> str:
    """PUT as a coordinator's tool would: no adapter meta. Returns the new versionId."""
    body = {k: v for k, v in resource.items() if k != "meta"}
    response = requests.put(
        f"{url}/ResearchSubject/{resource['id']}",
        json=body,
        headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["meta"]["versionId"])


def write_back_counts(err: str) -> dict[str, int]:
    """The counts of the summary's ``Write-back NCT...: created 3, updated 0, ...`` line."""
    line = next(line for line in err.splitlines() if line.startswith(f"Write-back {STUDY}:"))
    return {
        name: int(n)
        for name, n in re.findall(r"(created|updated|unchanged|staff-managed|failed) (\d+)", line)
    }


def copy_examples(target: Path, prefix: str, keep: frozenset[str] | None = None) -> list[str]:
    """Copies of the example patients under new ids (``<prefix>-dm01``...); returns the patient ids."""
    target.mkdir(parents=True, exist_ok=True)
    ids = []
    for path in sorted(EXAMPLES.glob("dm*.json")):
        bundle = json.loads(
            re.sub(rf"\b{path.stem}", f"{prefix}-{path.stem}", path.read_text(encoding="utf-8"))
        )
        if keep is not None:
            bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] in keep]
        (target / path.name).write_text(json.dumps(bundle), encoding="utf-8")
        ids.append(f"{prefix}-{path.stem}")
    return ids


# -- R4 ----------------------------------------------------------------------------------------------


def test_server_screen_verdicts_equal_the_file_screen(
    seeded: str, file_verdicts: Verdicts, tmp_path: Path
) -> None:
    out = tmp_path / "server.json"
    code, err = cli("screen", "--server", seeded, "--as-of", AS_OF, "--out", str(out))
    assert code == 0, err

    by_server = verdicts(out)
    expected = dm_patients(file_verdicts)
    assert expected, "the examples hold DM patients"
    assert expected <= by_server.keys()
    assert {p: by_server[p] for p in expected} == {p: file_verdicts[p] for p in expected}
    # Non-DM example patients are not candidates on the server.
    assert not (file_verdicts.keys() - expected) & by_server.keys()
    requests_per_patient = [s["requests"] for s in json.loads(out.read_text())["subjects"]]
    assert max(requests_per_patient) == 1  # HAPI offers $everything: one request per patient
    assert "FHIR R4 server" in err and "Requests per patient ($everything): mean 1.0, max 1" in err


def test_typed_search_fallback_gives_the_same_verdicts(
    seeded: str, file_verdicts: Verdicts, tmp_path: Path
) -> None:
    out = tmp_path / "typed.json"
    expected = sorted(dm_patients(file_verdicts))
    argv = ["screen", "--server", seeded, "--as-of", AS_OF, "--out", str(out)]
    for patient in expected:
        argv += ["--patient", patient.removeprefix("Patient/")]
    settings = screen_settings(build_parser().parse_args(argv))

    code = run_screen(settings, out=io.StringIO(), strategy="typed")

    assert code == 0
    by_server = verdicts(out)
    assert by_server == {p: file_verdicts[p] for p in expected}
    # Patient read + one search per resource type the criteria read (no paging at this size).
    assert {s["requests"] for s in json.loads(out.read_text())["subjects"]} == {8}


def test_write_back_records_one_subject_per_candidate_with_its_provenance(
    written: str, file_verdicts: Verdicts
) -> None:
    for patient in sorted(dm_patients(file_verdicts)):
        pid = patient.removeprefix("Patient/")
        subject = the_subject(written, pid)
        if subject["status"] not in ("candidate", "potential-candidate", "ineligible"):
            continue  # the staff test may have run first and taken this one over
        assert subject["individual"] == {"reference": patient}
        assert {"system": TAG_SYSTEM, "code": TAG_CODE} in subject["meta"]["tag"]
        provenances = provenances_of(written, subject["id"])
        assert provenances, f"no Provenance for ResearchSubject/{subject['id']}"
        provenance = provenances[0]
        assert provenance["agent"][0]["who"]["reference"].startswith("Device/")
        assert {e["what"]["reference"].split("/_history/")[0] for e in provenance["entity"]} >= {patient}
    statuses = {
        p: the_subject(written, p.removeprefix("Patient/"))["status"] for p in dm_patients(file_verdicts)
    }
    agree = [p for p, s in statuses.items() if s == file_verdicts[p][0]]
    assert len(agree) >= len(statuses) - 2  # all but the ones the staff test may have changed


def test_second_run_creates_no_new_resource_versions(written: str, tmp_path: Path) -> None:
    before = history_total(written)

    code, err = cli(
        "screen", "--server", written, "--as-of", AS_OF, "--out", str(tmp_path / "r.json"), "--write-back"
    )

    assert code == 0, err
    assert history_total(written) == before
    counts = write_back_counts(err)
    assert counts["created"] == 0 and counts["updated"] == 0 and counts["failed"] == 0
    assert counts["unchanged"] > 0


def test_subject_staff_set_on_study_is_not_touched(written: str, tmp_path: Path) -> None:
    on_study = {**the_subject(written, "dm02"), "status": "on-study"}
    on_study_version = staff_put(written, on_study)
    # A coordinator's "ineligible" is a state the adapter also sets, but their version, not ours.
    by_hand = {**the_subject(written, "dm01"), "status": "ineligible"}
    by_hand_version = staff_put(written, by_hand)
    before = history_total(written)

    code, err = cli(
        "screen", "--server", written, "--as-of", AS_OF, "--out", str(tmp_path / "r.json"), "--write-back"
    )

    assert code == 0, err
    assert history_total(written) == before
    dm02 = the_subject(written, "dm02")
    assert (dm02["status"], dm02["meta"]["versionId"]) == ("on-study", on_study_version)
    dm01 = the_subject(written, "dm01")
    assert (dm01["status"], dm01["meta"]["versionId"]) == ("ineligible", by_hand_version)
    assert write_back_counts(err)["staff-managed"] >= 2


def test_two_concurrent_runs_leave_exactly_one_subject_per_patient(written: str, tmp_path: Path) -> None:
    prefix = f"c{uuid.uuid4().hex[:8]}"
    ids = copy_examples(tmp_path / "copies", prefix)
    code, err = cli("load", "--server", written, str(tmp_path / "copies"))
    assert code in (0, 3), err
    argv = [
        sys.executable,
        "-m",
        "fhir_adapter",
        "screen",
        "--server",
        written,
        "--as-of",
        AS_OF,
        "--write-back",
    ]
    for pid in ids:
        argv += ["--patient", pid]

    runs = [
        subprocess.Popen([*argv, "--out", str(tmp_path / f"run{n}.json")], stderr=subprocess.PIPE, text=True)
        for n in range(2)
    ]
    results = [(run.wait(timeout=300), run.stderr.read() if run.stderr else "") for run in runs]

    for code, err in results:
        assert code == 0, err
    created = sum(write_back_counts(err)["created"] for _, err in results)
    assert created == len(ids)
    for pid in ids:
        subject = the_subject(written, pid)
        assert subject["meta"]["versionId"] == "1"
        assert len(provenances_of(written, subject["id"])) == 1


# -- R5 ----------------------------------------------------------------------------------------------


def test_r5_server_gets_r5_subjects_and_the_same_verdicts_as_files(r5_url: str, tmp_path: Path) -> None:
    # Patient, Condition and Observation read the same in R4 and R5; the other example resources
    # (MedicationRequest, Encounter...) changed shape in R5 and are left out of this variant.
    prefix = f"r{uuid.uuid4().hex[:8]}"
    data = tmp_path / "r5"
    ids = copy_examples(data, prefix, keep=frozenset({"Patient", "Condition", "Observation"}))
    code, err = cli("load", "--server", r5_url, str(data))
    assert code in (0, 3), err
    files_out, server_out = tmp_path / "files.json", tmp_path / "server.json"
    assert cli("screen", str(data), "--as-of", AS_OF, "--out", str(files_out))[0] == 0
    patients = [a for pid in ids for a in ("--patient", pid)]

    code, err = cli(
        "screen", "--server", r5_url, "--as-of", AS_OF, "--out", str(server_out), "--write-back", *patients
    )

    assert code == 0, err
    by_file, by_server = verdicts(files_out), verdicts(server_out)
    assert by_server == by_file
    for patient, (status, _) in by_file.items():
        subject = the_subject(r5_url, patient.removeprefix("Patient/"))
        assert subject["status"] == "active"
        assert subject["subject"] == {"reference": patient}
        assert subject["progress"][0]["subjectState"]["coding"] == [{"system": STATE_SYSTEM, "code": status}]
        assert subject["progress"][0]["reason"]["text"]

    staff = the_subject(r5_url, ids[0])
    staff["progress"] = [{"subjectState": {"coding": [{"system": STATE_SYSTEM, "code": "on-study"}]}}]
    staff_version = staff_put(r5_url, staff)
    before = history_total(r5_url)

    code, err = cli(
        "screen", "--server", r5_url, "--as-of", AS_OF, "--out", str(server_out), "--write-back", *patients
    )

    assert code == 0, err
    assert history_total(r5_url) == before
    counts = write_back_counts(err)
    assert (counts["created"], counts["updated"], counts["staff-managed"]) == (0, 0, 1)
    assert the_subject(r5_url, ids[0])["meta"]["versionId"] == staff_version
