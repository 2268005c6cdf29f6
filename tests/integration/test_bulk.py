"""Bulk Data on the HAPI sandbox: kick-off at system, Patient and Group level, polling, downloads,
``screen --bulk`` giving the file verdicts, a killed run resuming its job, ``_since``, the token's
origins, the server's error files, and the bulk-only profile (``_typeFilter`` refused: the fallback)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter.cli import main
from fhir_adapter.client.http import FhirClient

from .bulkproxy import BulkProxy

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "patients"
AS_OF = "2026-06-15"
# HAPI answers Retry-After: 120 to every poll of a job that takes a second or two.
FAST = ["--poll-max-wait", "1"]
Res = dict[str, Any]


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(argv))
    return code, out.getvalue()


def subjects(path: Path) -> dict[str, Res]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {s["patient"]: {k: v for k, v in s.items() if k != "requests"} for s in doc["subjects"]}


def ndjson_ids(folder: Path, rtype: str) -> set[str]:
    ids = set()
    for path in folder.glob(f"{rtype}.*.ndjson"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                ids.add(json.loads(line)["id"])
    return ids


@pytest.fixture(scope="module")
def loaded(sandbox_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, list[str], str]:
    """Copies of the example patients under ids of this module, and a Group of them."""
    prefix = f"k{uuid.uuid4().hex[:8]}"
    data = tmp_path_factory.mktemp("bulk-data")
    ids = []
    for path in sorted(EXAMPLES.glob("*.json")):
        text = re.sub(rf"\b{path.stem}\b", f"{prefix}-{path.stem}", path.read_text(encoding="utf-8"))
        (data / path.name).write_text(text, encoding="utf-8")
        ids.append(f"{prefix}-{path.stem}")
    code, err = cli("load", "--server", sandbox_url, str(data))
    assert code in (0, 3), err  # dm14's deliberately bad status is refused by HAPI (exit 3)
    group = f"{prefix}-group"
    with FhirClient(sandbox_url) as client:
        client.update(
            {
                "resourceType": "Group",
                "id": group,
                "type": "person",
                "actual": True,
                "member": [{"entity": {"reference": f"Patient/{pid}"}} for pid in ids],
            }
        )
    return sandbox_url, data, ids, group


@pytest.fixture(scope="module")
def by_files(
    loaded: tuple[str, Path, list[str], str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Res]:
    _, data, _, _ = loaded
    out = tmp_path_factory.mktemp("files-out") / "result.json"
    code, err = cli("screen", str(data), "--as-of", AS_OF, "--out", str(out))
    assert code == 0, err
    return subjects(out)


@pytest.fixture
def proxy(sandbox_url: str) -> Iterator[BulkProxy]:
    with BulkProxy(sandbox_url) as p:
        yield p


# -- kick-off, polling, download, screen -----------------------------------------------------------


def test_group_export_then_screen_gives_the_file_verdicts(
    loaded: tuple[str, Path, list[str], str], by_files: dict[str, Res], tmp_path: Path
) -> None:
    url, _, ids, group = loaded
    out = tmp_path / "result.json"

    code, err = cli(
        "screen", "--server", url, "--bulk", "--single-pass", "--group", group, "--as-of", AS_OF,
        "--out", str(out), *FAST,
    )  # fmt: skip

    assert code == 0, err
    assert subjects(out) == by_files and len(by_files) == len(ids) == 28
    assert "one export of every type" in err
    assert not (tmp_path / ".fhir-adapter-bulk").exists()  # downloads removed after a complete run


def test_two_pass_group_export_gives_the_candidates_their_file_verdicts(
    loaded: tuple[str, Path, list[str], str], by_files: dict[str, Res], tmp_path: Path
) -> None:
    url, _, _, group = loaded
    out = tmp_path / "result.json"

    code, err = cli(
        "screen", "--server", url, "--bulk", "--group", group, "--as-of", AS_OF, "--out", str(out), *FAST
    )

    assert code == 0, err
    assert "two passes" in err
    candidates = {p for p, s in by_files.items() if len(s["criteria"]) > 1}
    assert subjects(out) == {p: s for p, s in by_files.items() if p in candidates}
    assert re.search(rf"first pass: {len(candidates)} candidate\(s\)", err)


def test_system_and_patient_level_exports_download_the_patients(
    loaded: tuple[str, Path, list[str], str], tmp_path: Path
) -> None:
    url, _, ids, _ = loaded
    for level in ("system", "patient"):
        out = tmp_path / level
        code, err = cli(
            "export", "--server", url, "--export-level", level, "--type", "Patient", "--out", str(out), *FAST
        )

        assert code == 0, err
        assert set(ids) <= ndjson_ids(out, "Patient")
        summary = json.loads((out / "export.summary").read_text())
        assert summary["request"]["level"] == level and summary["complete"]
        assert summary["transactionTime"].endswith("Z")


def test_screen_of_an_export_folder_gives_the_file_verdicts(
    loaded: tuple[str, Path, list[str], str], by_files: dict[str, Res], tmp_path: Path
) -> None:
    url, _, _, group = loaded
    code, err = cli("export", "--server", url, "--group", group, "--out", str(tmp_path / "export"), *FAST)
    assert code == 0, err

    code, err = cli("screen", str(tmp_path / "export"), "--as-of", AS_OF, "--out", str(tmp_path / "r.json"))

    assert code == 0, err
    assert subjects(tmp_path / "r.json") == by_files


# -- _since ----------------------------------------------------------------------------------------


def test_since_returns_only_what_changed(loaded: tuple[str, Path, list[str], str], tmp_path: Path) -> None:
    url, _, ids, group = loaded
    first = tmp_path / "first"
    code, err = cli(
        "export", "--server", url, "--group", group, "--type", "Observation", "--out", str(first), *FAST
    )
    assert code == 0, err
    since = json.loads((first / "export.summary").read_text())["transactionTime"]
    assert len(ndjson_ids(first, "Observation")) > 100
    new_id = f"{ids[0]}-new-obs"
    with FhirClient(url) as client:
        client.update(
            {
                "resourceType": "Observation",
                "id": new_id,
                "status": "final",
                "code": {"text": "a new result"},
                "subject": {"reference": f"Patient/{ids[0]}"},
                "effectiveDateTime": "2026-06-10",
            }
        )

    second = tmp_path / "second"
    code, err = cli(
        "export", "--server", url, "--group", group, "--type", "Observation", "--since", since,
        "--out", str(second), *FAST,
    )  # fmt: skip

    assert code == 0, err
    assert ndjson_ids(second, "Observation") == {new_id}


# -- a killed run resumes its job ---------------------------------------------------------------------


def test_a_run_killed_while_polling_resumes_the_same_job(
    loaded: tuple[str, Path, list[str], str], proxy: BulkProxy, tmp_path: Path
) -> None:
    _, _, ids, group = loaded
    out = tmp_path / "export"
    args = [
        "export",
        "--server",
        proxy.base,
        "--group",
        group,
        "--type",
        "Patient",
        "--out",
        str(out),
        "--poll-max-wait",
        "0.2",
    ]
    proxy.hold.set()  # the job stays "in progress" until the test lets it finish
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.Popen(
        [sys.executable, "-m", "fhir_adapter", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while proxy.polls < 2 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.1)
        assert proxy.polls >= 2, "the export never got to polling"
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == -signal.SIGKILL
    job_files = list(out.glob("bulk-job-*.json"))
    assert len(job_files) == 1 and proxy.kick_offs == 1

    proxy.hold.clear()
    code, err = cli(*args)

    assert code == 0, err
    assert proxy.kick_offs == 1  # the server saw one kick-off
    assert "(resumed job)" in err
    assert set(ids) == ndjson_ids(out, "Patient")
    assert not list(out.glob("bulk-job-*.json"))
    assert any(s.method == "DELETE" and "$export-poll-status" in s.path for s in proxy.seen)


# -- the token's origins -------------------------------------------------------------------------------


@pytest.fixture
def storage(sandbox_url: str) -> Iterator[BulkProxy]:
    """A second origin in front of the same HAPI: the "storage host" the manifest's files move to."""
    with BulkProxy(sandbox_url) as p:
        yield p


def test_a_file_on_another_origin_gets_no_token_unless_allowed(
    loaded: tuple[str, Path, list[str], str], proxy: BulkProxy, storage: BulkProxy, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    _, _, ids, group = loaded
    monkeypatch.setenv("BULK_TEST_TOKEN", "test-token-not-for-storage")
    proxy.files_origin = storage.origin
    auth = ["--auth", "bearer", "--token", "env:BULK_TEST_TOKEN"]
    common = ["export", "--server", proxy.base, "--group", group, "--type", "Patient", *auth, *FAST]

    code, err = cli(*common, "--out", str(tmp_path / "refused"))

    assert code == 3, err
    assert storage.seen == []  # never asked: neither the file nor the token
    assert proxy.seen and all(s.auth == "Bearer test-token-not-for-storage" for s in proxy.seen)
    errors = json.loads((tmp_path / "refused" / "export.summary").read_text())["errors"]
    assert any("not requested" in e["reason"] for e in errors)

    code, err = cli(*common, "--bulk-storage-origin", storage.origin, "--out", str(tmp_path / "allowed"))

    assert code == 0, err
    assert storage.seen and all(s.auth == "Bearer test-token-not-for-storage" for s in storage.seen)
    assert set(ids) == ndjson_ids(tmp_path / "allowed", "Patient")


# -- the server's error files -----------------------------------------------------------------------------


def test_the_entries_of_an_error_file_appear_in_errors(
    loaded: tuple[str, Path, list[str], str], proxy: BulkProxy, tmp_path: Path
) -> None:
    url, _, _, group = loaded
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": "could not export a resource"}],
    }
    line = (json.dumps(outcome) + "\n").encode()
    binary_id = f"{group}-errors"
    with FhirClient(url) as client:
        client.update(
            {
                "resourceType": "Binary",
                "id": binary_id,
                "contentType": "application/fhir+ndjson",
                "data": base64.b64encode(line).decode(),
            }
        )
    # HAPI's own manifests have "error": [] for this data: the proxy adds one, as a server would.
    proxy.extra_errors = [{"type": "OperationOutcome", "url": f"{proxy.base}/Binary/{binary_id}"}]
    out = tmp_path / "result.json"

    code, err = cli(
        "screen", "--server", proxy.base, "--bulk", "--single-pass", "--group", group, "--as-of", AS_OF,
        "--out", str(out), *FAST,
    )  # fmt: skip

    assert code == 3, err
    errors = json.loads(out.read_text())["errors"]
    assert [e["reason"] for e in errors] == ["export error error/processing"]
    assert errors[0]["line"] == 1 and "OperationOutcome.001.ndjson" in errors[0]["file"]


# -- the bulk-only profile -----------------------------------------------------------------------------


def test_bulk_only_refuses_type_filter_so_screen_uses_one_group_export(
    loaded: tuple[str, Path, list[str], str], bulk_only_url: str, by_files: dict[str, Res], tmp_path: Path
) -> None:
    _, _, _, group = loaded
    out = tmp_path / "result.json"

    code, err = cli(
        "screen",
        "--server",
        bulk_only_url,
        "--bulk",
        "--group",
        group,
        "--as-of",
        AS_OF,
        "--out",
        str(out),
        *FAST,
    )

    assert code == 0, err
    assert "refused the gate's _typeFilter (HTTP 400)" in err
    assert subjects(out) == by_files


def test_bulk_only_group_export_with_type_and_since(
    loaded: tuple[str, Path, list[str], str], bulk_only_url: str, tmp_path: Path
) -> None:
    _, _, ids, group = loaded
    code, err = cli(
        "export",
        "--server",
        bulk_only_url,
        "--group",
        group,
        "--type",
        "Patient",
        "--out",
        str(tmp_path / "a"),
        *FAST,
    )
    assert code == 0, err
    assert set(ids) == ndjson_ids(tmp_path / "a", "Patient")
    since = json.loads((tmp_path / "a" / "export.summary").read_text())["transactionTime"]

    code, err = cli(
        "export", "--server", bulk_only_url, "--group", group, "--type", "Patient", "--since", since,
        "--out", str(tmp_path / "b"), *FAST,
    )  # fmt: skip

    assert code == 0, err
    assert ndjson_ids(tmp_path / "b", "Patient") == set()  # nothing changed since
