"""``sync`` on the bulk-only profile (searches and a Group-level ``$export`` with ``_type`` and ``_since``;
no ``$everything``, no ``_history`` listings, no ``_lastUpdated``): the change feed is an export with
``_since``, the records come from export files (the file verdicts), a deletion is caught by the full
reconciliation, a killed run resumes its export job, and ``check`` names the strategies the runs used.

The data are copies of example patients under ids of this module, and a Group of them."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fhir_adapter.cli import main

from .bulkproxy import BulkProxy

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "patients"
AS_OF = "2026-06-15"
STEMS = ("dm01", "dm02", "dm07", "dm08", "dm11", "pm05")
Loaded = tuple[list[str], Path, str]  # patient ids, the files, the Group id


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(argv))
    return code, out.getvalue()


def group_body(group: str, ids: list[str]) -> dict[str, Any]:
    return {
        "resourceType": "Group",
        "id": group,
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{pid}"}} for pid in ids],
    }


@pytest.fixture(scope="module")
def loaded(sandbox_url: str, tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    prefix = f"s{uuid.uuid4().hex[:8]}"
    data = tmp_path_factory.mktemp("sync-bulk")
    ids = []
    for stem in STEMS:
        text = re.sub(rf"\b{stem}\b", f"{prefix}-{stem}", (EXAMPLES / f"{stem}.json").read_text("utf-8"))
        (data / f"{stem}.json").write_text(text, encoding="utf-8")
        ids.append(f"{prefix}-{stem}")
    code, err = cli("load", "--server", sandbox_url, str(data))
    assert code == 0, err
    response = requests.put(f"{sandbox_url}/Group/{prefix}", json=group_body(prefix, ids), timeout=30)
    assert response.status_code in (200, 201), response.text
    return ids, data, prefix


def subjects(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {s["patient"]: (s["status"], s["criteria"]) for s in doc["subjects"]}


@pytest.fixture(scope="module")
def by_files(loaded: Loaded, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("files") / "result.json"
    code, err = cli("screen", str(loaded[1]), "--as-of", AS_OF, "--out", str(out))
    assert code == 0, err
    return subjects(out)


def site(folder: Path, url: str, group: str) -> Path:
    config = folder / "site.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [server]
            url = "{url}"
            group = "{group}"

            [study]
            as_of = "{AS_OF}"

            [state]
            path = "state/state.sqlite"

            [report]
            result = "latest.json"

            [bulk]
            poll_max_wait_seconds = 1  # HAPI says Retry-After: 120 for a job of a second
            """
        ),
        encoding="utf-8",
    )
    return config


def manifest(config: Path) -> dict[str, Any]:
    runs = sorted((config.parent / "state" / "runs").glob("run-*.json"))
    return dict(json.loads(runs[-1].read_text()))


def state_db(config: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(config.parent / "state" / "state.sqlite"))


def mark_screened(config: Path) -> None:
    with state_db(config) as db, db:
        db.execute("UPDATE result SET screened_at = 'mark'")


def rescreened(config: Path) -> set[str]:
    with state_db(config) as db:
        return {p for p, at in db.execute("SELECT DISTINCT patient, screened_at FROM result") if at != "mark"}


def known(config: Path) -> set[str]:
    with state_db(config) as db:
        return {r[0] for r in db.execute("SELECT id FROM patient")}


def platelets(pid: str) -> dict[str, Any]:
    """Platelets 41 x 10^9/L yesterday: thrombocytopenia (< 60) excludes the patient."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2026-06-14",
        "valueQuantity": {
            "value": 41,
            "unit": "10*9/L",
            "system": "http://unitsofmeasure.org",
            "code": "10*9/L",
        },
    }


def test_sync_on_bulk_only_changes_by_since_exports_and_deletions_at_the_full_run(
    loaded: Loaded, by_files: dict[str, Any], bulk_only_url: str, sandbox_url: str, tmp_path: Path
) -> None:
    ids, _, group = loaded
    dm = [pid for pid in ids if not pid.endswith("pm05")]
    config = site(tmp_path, bulk_only_url, group)

    # 1. The first run: one Group export of everything; the file verdicts; a ResearchSubject each.
    code, text = cli("sync", "--config", str(config))
    first = manifest(config)
    assert code == 0, text
    assert first["strategies"] == {"candidates": "group", "records": "bulk", "changes": "bulk"}
    assert (first["counts"]["evaluated"], first["counts"]["written"]) == (len(dm), len(dm)), text
    latest = subjects(config.parent / "latest.json")
    assert latest == {p: v for p, v in by_files.items() if p in latest} and len(latest) == len(dm)

    # 2. Nothing changed: the _since export is empty, nobody is evaluated, the watermark moves on.
    code, text = cli("sync", "--config", str(config))
    second = manifest(config)
    assert code == 0 and (second["counts"]["queued"], second["counts"]["evaluated"]) == (0, 0), text
    assert second["watermarkBefore"] == first["watermarkAfter"] < second["watermarkAfter"]

    # 3. One new Observation: exactly that patient is evaluated (and excluded: a new version written).
    dm08 = next(p for p in ids if p.endswith("dm08"))
    created = requests.post(f"{sandbox_url}/Observation", json=platelets(dm08), timeout=30)
    assert created.status_code == 201, created.text
    mark_screened(config)
    code, text = cli("sync", "--config", str(config))
    third = manifest(config)["counts"]
    assert code == 0 and (third["queued"], third["evaluated"], third["written"]) == (1, 1, 1), text
    assert rescreened(config) == {dm08}

    # 4. Its deletion. HAPI 8.8's _since export lists no `deleted` entries (checked: the manifest's
    #    `deleted` is empty), so the incremental run cannot see it; the full reconciliation does. Should a
    #    later HAPI list it, the incremental run must re-screen dm08 itself.
    gone = requests.delete(
        f"{sandbox_url}/Observation/{created.json()['id']}", params={"_cascade": "delete"}, timeout=30
    )
    assert gone.status_code in (200, 204), gone.text
    mark_screened(config)
    code, text = cli("sync", "--config", str(config))
    fourth = manifest(config)["counts"]
    assert code == 0, text
    if fourth["deletedResourcesSeen"]:
        assert rescreened(config) == {dm08} and fourth["written"] == 1
    else:
        assert (fourth["evaluated"], fourth["written"]) == (0, 0) and rescreened(config) == set()
        code, text = cli("sync", "--config", str(config), "--full")
        full = manifest(config)["counts"]
        assert code == 0 and full["evaluated"] == len(dm) and full["written"] == 1, text
    assert subjects(config.parent / "latest.json")[f"Patient/{dm08}"] == by_files[f"Patient/{dm08}"]

    # 5. A patient leaves the Group and the server: the full run's export no longer holds them, and the
    #    state forgets them (as a 404 on a read does on other servers).
    dm11 = next(p for p in ids if p.endswith("dm11"))
    rest = [p for p in ids if p != dm11]
    response = requests.put(f"{sandbox_url}/Group/{group}", json=group_body(group, rest), timeout=30)
    assert response.status_code == 200, response.text
    gone = requests.delete(f"{sandbox_url}/Patient/{dm11}", params={"_cascade": "delete"}, timeout=60)
    assert gone.status_code in (200, 204), gone.text
    assert dm11 in known(config)
    code, text = cli("sync", "--config", str(config), "--full")
    assert code == 0, text
    assert dm11 not in known(config) and f"Patient/{dm11}" not in subjects(config.parent / "latest.json")
    assert known(config) == set(dm) - {dm11}

    # 6. `check` names the strategies the runs used.
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["check", "--server", bulk_only_url, "--group", group, "--json"])
    assert code in (0, 3), out.getvalue()
    report = json.loads(out.getvalue())
    assert report["strategies"]["sync"] == first["strategies"]
    assert report["requestEstimate"]["sync"]["exports"] == 2  # the change feed and the records


@pytest.fixture
def counting(bulk_only_url: str) -> Iterator[BulkProxy]:
    """A counting proxy in front of the bulk-only profile: kick-offs seen, polls held "in progress"."""
    with BulkProxy(bulk_only_url) as proxy:
        yield proxy


def test_a_sync_killed_while_its_export_runs_resumes_the_same_job(
    loaded: Loaded, counting: BulkProxy, tmp_path: Path
) -> None:
    _, _, group = loaded
    config = site(tmp_path, counting.base, group)
    counting.hold.set()  # the job stays "in progress" until the test lets it finish
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.Popen(
        [sys.executable, "-m", "fhir_adapter", "sync", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while counting.polls < 2 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.1)
        assert counting.polls >= 2, "the sync never got to polling its export"
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == -signal.SIGKILL
    jobs = list((config.parent / "state" / "state.bulk").rglob("bulk-job-*.json"))
    assert len(jobs) == 1 and counting.kick_offs == 1

    counting.hold.clear()
    code, text = cli("sync", "--config", str(config))

    assert code == 0, text
    assert counting.kick_offs == 1  # the server saw one kick-off
    assert manifest(config)["counts"]["evaluated"] > 0
    assert not list((config.parent / "state" / "state.bulk").rglob("bulk-job-*.json"))
