"""Issue 8, class 7: every output is private, whatever the umask.

Result JSON, report HTML and CSV, the sync state (and SQLite's -wal/-shm files), manifests, the lock and
the latest report are created 0600, and the folders the adapter creates for them 0700, under a
permissive umask (0o022, the usual default, and 0o000). Folders that already existed keep their mode.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultserver import FaultServer
from fhirdata import REPO, baseline, for_patient

from fhir_adapter.cli import main

EXAMPLES = REPO / "examples" / "patients"


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Every path below ``root``, relative, with its permission bits."""
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in sorted(root.rglob("*"))}


def assert_private(root: Path) -> None:
    found = modes(root)
    assert found, f"nothing was written under {root}"
    wrong = {
        path: oct(mode)
        for path, mode in found.items()
        if mode != (0o700 if (root / path).is_dir() else 0o600)
    }
    assert wrong == {}


def test_screen_results_reports_and_their_new_folders_are_private(umask: int, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(
        ["screen", str(EXAMPLES), "--trial", "NCT05495321", "--trial", "NCT02728752", "--as-of", "2026-06-15",
         "--out-dir", str(out / "nested" / "trials")]
    )  # fmt: skip

    assert code == 0
    assert {p.name for p in (out / "nested" / "trials").iterdir()} == {
        "NCT05495321.json", "NCT05495321.html", "NCT02728752.json", "NCT02728752.html"
    }  # fmt: skip
    assert_private(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700


def test_a_result_in_an_existing_folder_is_private_and_the_folder_keeps_its_mode(
    umask: int, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    (shared / "result.json").write_text("old", encoding="utf-8")
    (shared / "result.json").chmod(0o644)

    code = main(
        ["screen", str(EXAMPLES / "dm01.json"), "--as-of", "2026-06-15", "--out", str(shared / "result.json"),
         "--report", str(shared / "report.html")]
    )  # fmt: skip

    assert code == 0
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755  # not ours to change
    assert modes(shared) == {"report.html": 0o600, "result.json": 0o600}


def test_the_report_command_writes_private_html_and_csv(umask: int, tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    assert main(["screen", str(EXAMPLES), "--as-of", "2026-06-15", "--out", str(result)]) == 0
    reports = tmp_path / "reports"

    code = main(
        [
            "report",
            str(result),
            "--html",
            str(reports / "a" / "r.html"),
            "--csv",
            str(reports / "b" / "w.csv"),
        ]
    )

    assert code == 0
    assert_private(reports)


def test_sync_state_wal_lock_manifests_and_latest_report_are_private(umask: int, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    config = site / "site.toml"
    with FaultServer() as server:
        for pid in ("p1", "p2"):
            server.store.put(*for_patient(baseline(), pid))
        config.write_text(
            textwrap.dedent(
                f"""\
                [server]
                url = "{server.base}"
                [study]
                as_of = "2026-06-15"
                [state]
                path = "var/state/state.sqlite"
                manifests = "var/runs"
                lock = "var/lock/sync.lock"
                [report]
                result = "var/out/latest.json"
                html = "var/out/latest.html"
                """
            ),
            encoding="utf-8",
        )
        assert main(["sync", "--config", str(config)]) == 0
        # While a connection is open, SQLite keeps its -wal and -shm files: they must be private too.
        db = sqlite3.connect(site / "var" / "state" / "state.sqlite")
        try:
            db.execute("SELECT count(*) FROM result").fetchone()
            assert main(["sync", "--config", str(config)]) == 0
            names = {p.name for p in (site / "var" / "state").iterdir()}
            assert {"state.sqlite", "state.sqlite-wal", "state.sqlite-shm"} <= names
            assert_private(site / "var")
        finally:
            db.close()
    assert {p.name for p in (site / "var" / "out").iterdir()} == {"latest.json", "latest.html"}
    assert len(list((site / "var" / "runs").glob("run-*.json"))) == 2
    assert (site / "var" / "lock" / "sync.lock").exists()


def test_state_and_lock_files_left_world_readable_by_an_older_release_are_narrowed(
    umask: int, tmp_path: Path
) -> None:
    from fhir_adapter.sync.lock import RunLock
    from fhir_adapter.sync.state import State

    db_path = tmp_path / "state.sqlite"
    sqlite3.connect(db_path).close()
    db_path.chmod(0o644)
    lock_path = tmp_path / "sync.lock"
    lock_path.write_text("123")
    lock_path.chmod(0o644)

    State(db_path).close()
    with RunLock(lock_path):
        pass

    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(lock_path.stat().st_mode) == 0o600


def test_bulk_downloads_and_their_new_folders_are_private(umask: int, tmp_path: Path) -> None:
    import datetime as dt

    from bulkfake import FakeBulk, FileSpec, ndjson, patients

    from fhir_adapter.client.bulk import Manifest, ManifestFile
    from fhir_adapter.client.bulk_download import Downloader
    from fhir_adapter.client.http import FhirClient
    from fhir_adapter.settings import BulkSettings

    root = tmp_path / "exports"
    with FakeBulk() as fake:
        fake.files["a"] = FileSpec(ndjson(list(patients(20))))
        manifest = Manifest(
            dt.datetime(2026, 6, 1, tzinfo=dt.UTC),
            "",
            True,
            output=(ManifestFile("Patient", fake.file_url("a")),),
        )
        client = FhirClient(fake.base, max_retries=0)
        result = Downloader(client, BulkSettings(poll_max_wait=0.01), sleep=lambda s: None).download(
            manifest, root / "site" / "files"
        )

    assert [f.path.name for f in result.files] == ["Patient.001.ndjson"]
    assert_private(root)
