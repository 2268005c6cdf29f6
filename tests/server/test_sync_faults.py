"""A nightly sync against what a fuzzing pass found goes wrong in unattended runs (one test per finding,
each failing on the code before its mend): a server clock that went back, a malformed patient reference
in the change feed, a state row that cannot be written, and a damaged state file or lock. None may lose
a change in silence, stop every later run, end "ok, errors 0" after failing someone, or end in exit 70.
The loopback fault server holds the shipped example patients and keeps a history feed."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faultserver
import pytest
from faultserver import FaultServer, Reply
from fhirdata import REPO

from fhir_adapter.cli import main
from fhir_adapter.source.reader import Item, read_file
from fhir_adapter.sync.state import State

STUDY = "NCT05495321"


@pytest.fixture
def examples() -> Iterator[FaultServer]:
    with FaultServer() as server:
        for path in sorted((REPO / "examples" / "patients").glob("*.json")):
            server.store.put(*(i.resource for i in read_file(path) if isinstance(i, Item)))
        yield server


def _site(tmp_path: Path, server: FaultServer, extra: str = "") -> Path:
    site = tmp_path / "site.toml"
    site.write_text(
        f"""[server]
url = "{server.url()}"
[study]
as_of = "2026-06-15"
[state]
path = "state/state.sqlite"
manifests = "runs"
[limits]
write_back = false
full_reconciliation_days = 7
[report]
result = "out/latest.json"
{extra}""",
        encoding="utf-8",
    )
    return site


def _sync(site: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["sync", "--config", str(site), *args])
    return code, out.getvalue(), err.getvalue()


def _manifest(site: Path) -> dict[str, Any]:
    newest = sorted((site.parent / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)[-1]
    loaded: dict[str, Any] = json.loads(newest.read_text(encoding="utf-8"))
    return loaded


def _status(site: Path, pid: str) -> str:
    doc = json.loads((site.parent / "out" / "latest.json").read_text(encoding="utf-8"))
    return next(str(s["status"]) for s in doc["subjects"] if s["patient"] == f"Patient/{pid}")


def _edit(path: Path, *statements: str) -> None:
    """What a crash, a full disk or a hand edit leaves in the state file."""
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def _edit_state(site: Path, *statements: str) -> None:
    _edit(site.parent / "state" / "state.sqlite", *statements)


def _low_hemoglobin(pid: str, rid: str = "hb-low") -> dict[str, Any]:
    """An exclusion (hemoglobin 60 g/L, anemia) the day before the as-of date."""
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2026-06-14",
        "valueQuantity": {"value": 60, "unit": "g/L", "system": "http://unitsofmeasure.org", "code": "g/L"},
    }


def _clock(monkeypatch: pytest.MonkeyPatch, ahead: dt.timedelta) -> None:
    """The fault server's clock (its stamps and its Bundle.meta.lastUpdated), ``ahead`` of the real one."""

    def now() -> str:
        moment = dt.datetime.now(dt.UTC) + ahead
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    monkeypatch.setattr(faultserver, "_now", now)


# -- the change feed ------------------------------------------------------------------------------------
def test_a_server_clock_that_went_back_makes_the_next_run_a_full_one_and_says_so(
    tmp_path: Path, examples: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(tmp_path, examples)
    assert _sync(site)[0] == 0
    before = _status(site, "dm02")
    assert before != "ineligible"
    _clock(monkeypatch, dt.timedelta(days=1))  # a run while the server's clock is a day ahead
    assert _sync(site)[0] == 0
    _clock(monkeypatch, dt.timedelta(0))  # corrected; then a change that excludes dm02
    examples.store.put(_low_hemoglobin("dm02"))

    code, out, _ = _sync(site)

    assert code == 3, out
    reasons = [e["reason"] for e in _manifest(site)["errors"]]
    assert any("later than the server's time now" in r and "re-screens everyone" in r for r in reasons)
    assert _status(site, "dm02") == "ineligible"  # before the mend: unchanged until the weekly full run


def test_a_watermark_that_is_not_a_time_makes_the_run_a_full_one(
    tmp_path: Path, examples: FaultServer
) -> None:
    site = _site(tmp_path, examples)
    assert _sync(site)[0] == 0
    state = State(site.parent / "state" / "state.sqlite")
    state.put("watermark", "yesterday-ish")
    state.put("last_full_reconciliation", "last week")
    state.close()
    examples.store.put(_low_hemoglobin("dm02"))

    code, _, err = _sync(site)

    assert code == 3, err
    assert any("'yesterday-ish' is not a time" in e["reason"] for e in _manifest(site)["errors"])
    assert _status(site, "dm02") == "ineligible"


def test_a_malformed_patient_reference_in_the_change_feed_costs_that_id_not_every_later_run(
    tmp_path: Path, examples: FaultServer
) -> None:
    site = _site(tmp_path, examples)
    assert _sync(site)[0] == 0
    examples.store.put({**_low_hemoglobin("dm01"), "id": "odd", "subject": {"reference": "Patient/a_b"}})
    examples.store.put(_low_hemoglobin("dm01"))

    code, out, err = _sync(site)

    assert code == 3, err  # before the mend: exit 2, "--patient: 'a_b' is not a FHIR id", nobody screened
    assert "a_b" not in out + err
    assert any("not valid FHIR ids (not shown)" in e["reason"] for e in _manifest(site)["errors"])
    assert _status(site, "dm01") == "ineligible"
    assert _sync(site)[0] == 0  # the bad id is not left in the queue to fail every night


def _history_with(server: FaultServer, *extra: dict[str, Any]) -> None:
    """The store's own Observation history feed, with ``extra`` entries after its own."""

    def feed(request: Any) -> Reply:
        entries = server.store.history("Observation", request.param("_since"))
        return Reply(json={"resourceType": "Bundle", "type": "history", "entry": [*entries, *extra]})

    server.on("GET", r"Observation/_history", feed, repeat=True)


@pytest.mark.parametrize(
    "url",
    ["Observation/o_1/_history/2", "x/_history/2", "_history/5", "Observation/o1?x=1/_history/2"],
)
def test_a_deletion_the_feed_names_badly_costs_that_deletion_not_the_run(
    tmp_path: Path, examples: FaultServer, url: str
) -> None:
    site = _site(tmp_path, examples)
    assert _sync(site)[0] == 0
    examples.store.put(_low_hemoglobin("dm02"))
    _history_with(examples, {"request": {"method": "DELETE", "url": url}})

    code, _, err = _sync(site)

    assert code == 0, err  # before the mend: exit 70, "internal error: ValueError", nobody screened
    assert "could not be traced to a patient" in err
    counts = _manifest(site)["counts"]
    assert counts["deletedResourcesSeen"] == 1 and counts["deletionsNotTraced"] == 1
    assert _status(site, "dm02") == "ineligible"  # the feed's other change was screened


def test_a_deleted_version_the_server_will_not_serve_costs_that_deletion_not_the_run(
    tmp_path: Path, examples: FaultServer
) -> None:
    site = _site(tmp_path, examples)
    assert _sync(site)[0] == 0
    examples.store.put(_low_hemoglobin("dm02"))
    _history_with(examples, {"request": {"method": "DELETE", "url": "Observation/gone/_history/2"}})
    examples.on(
        "GET", r"Observation/gone/_history/1", Reply(400, json=faultserver.outcome("invalid")), repeat=True
    )

    code, _, err = _sync(site)

    assert code == 0, err  # before the mend: exit 4, the whole run refused for one unreadable version
    assert _manifest(site)["counts"]["deletionsNotTraced"] == 1
    assert _status(site, "dm02") == "ineligible"
    manifest = _manifest(site)
    assert manifest["watermarkAfter"] > manifest["watermarkBefore"]  # not held: no night meets it again


LAST_UPDATED = '[strategies]\nchanges = "last-updated"\n'


def test_a_last_updated_feed_with_no_change_screens_nobody_and_warns_of_nothing(
    tmp_path: Path, examples: FaultServer
) -> None:
    site = _site(tmp_path, examples, LAST_UPDATED)
    assert _sync(site)[0] == 0

    code, _, err = _sync(site)

    assert code == 0, err
    manifest = _manifest(site)
    assert manifest["strategies"]["changes"] == "last-updated"
    assert manifest["counts"]["queued"] == 0
    assert "ignore the parameter" not in err


def test_a_server_that_ignores_last_updated_is_named_and_every_patient_it_lists_re_screened(
    tmp_path: Path, examples: FaultServer
) -> None:
    site = _site(tmp_path, examples, LAST_UPDATED)
    assert _sync(site)[0] == 0
    examples.store.honour_last_updated = False  # lists everything, as if the parameter were not sent
    examples.store.put(_low_hemoglobin("dm02"))

    code, _, err = _sync(site)

    assert code == 0, err
    assert "it may ignore the parameter" in err  # before: silent, every night a full run called changes
    assert "Observation " in err and "Patient 28" in err
    assert _manifest(site)["counts"]["queued"] == 28  # not wrong, only slow: everyone is screened again
    assert _status(site, "dm02") == "ineligible"


# -- the state -------------------------------------------------------------------------------------------
def test_a_result_the_state_cannot_record_is_an_error_and_the_patient_stays_queued(
    tmp_path: Path, examples: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(tmp_path, examples)
    real = State.record_results

    def full_disk(self: State, pid: str, *args: Any) -> None:
        if pid == "dm02":
            raise sqlite3.OperationalError("database or disk is full")
        real(self, pid, *args)

    monkeypatch.setattr(State, "record_results", full_disk)
    code, out, _ = _sync(site)

    assert code == 3, out  # before the mend: exit 0, "errors 0"
    manifest = _manifest(site)
    assert manifest["outcome"] == "partial" and manifest["counts"]["errors"] >= 1
    assert any(e.get("resource") == "Patient/dm02" for e in manifest["errors"])
    state = State(site.parent / "state" / "state.sqlite")
    try:
        assert ("dm02", "queued") in state.pending()
    finally:
        state.close()


def test_a_damaged_re_check_date_is_re_screened_not_a_failure(tmp_path: Path, examples: FaultServer) -> None:
    site = _site(tmp_path, examples)
    assert _sync(site)[0] == 0
    _edit_state(
        site,
        "UPDATE patient SET recheck_on = 'soon' WHERE id = 'dm02'",
        "INSERT INTO pending VALUES ('dm02', 'queued')",
    )

    assert _sync(site)[0] == 0
    state = State(site.parent / "state" / "state.sqlite")
    try:
        assert state.pending() == []
    finally:
        state.close()


def _damage(path: Path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    elif how == "half":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "folder":
        path.unlink()
        path.mkdir()
    elif how == "dev-zero":
        path.unlink()
        path.symlink_to("/dev/zero")
    elif how == "dangling":
        path.unlink()
        path.symlink_to(path.parent / "gone")
    elif how == "no-queue":
        _edit(path, "DROP TABLE pending")


@pytest.mark.parametrize("how", ["garbage", "half", "folder", "dev-zero", "dangling", "no-queue"])
def test_a_damaged_state_file_is_exit_4_naming_it(tmp_path: Path, examples: FaultServer, how: str) -> None:
    site = _site(tmp_path, examples)
    assert _sync(site)[0] == 0
    state = site.parent / "state" / "state.sqlite"
    for sidecar in state.parent.glob("state.sqlite-*"):
        sidecar.unlink()
    _damage(state, how)

    for args in ((), ("--status",)):
        code, _, err = _sync(site, *args)
        assert code == 4, (args, err)  # before the mend: 70, "internal error", no file named
        assert str(state) in err


def test_an_empty_state_file_is_a_first_run_that_says_so(tmp_path: Path, examples: FaultServer) -> None:
    site = _site(tmp_path, examples)
    assert _sync(site)[0] == 0
    state = site.parent / "state" / "state.sqlite"
    for sidecar in state.parent.glob("state.sqlite-*"):
        sidecar.unlink()
    state.write_bytes(b"")  # truncated, or made with touch

    code, _, err = _sync(site)

    assert code == 0, err
    assert f"{state}: the state file held no sync state" in err  # before: a silent first run
    assert set(_manifest(site)["counts"]["queuedBecause"]) == {"first run"}
    code, _, err = _sync(site)
    assert code == 0 and "held no sync state" not in err  # once only: the file holds a state now


def test_a_fifo_as_the_state_file_is_refused_not_waited_on(tmp_path: Path, examples: FaultServer) -> None:
    site = _site(tmp_path, examples)
    (tmp_path / "state").mkdir()
    os.mkfifo(tmp_path / "state" / "state.sqlite")
    done = subprocess.run(
        [sys.executable, "-m", "fhir_adapter", "sync", "--config", str(site)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 4, done.stderr
    assert "not a regular file" in done.stderr


@pytest.mark.parametrize("how", ["folder", "dev-zero"])
def test_a_lock_that_is_not_a_file_is_exit_4_naming_it(
    tmp_path: Path, examples: FaultServer, how: str
) -> None:
    site = _site(tmp_path, examples)
    lock = tmp_path / "state" / "state.lock"
    lock.parent.mkdir()
    if how == "folder":
        lock.mkdir()
    else:
        lock.symlink_to("/dev/zero")
    code, _, err = _sync(site)
    assert code == 4, err
    assert f"{lock}: the sync lock is not a regular file" in err


def test_a_damaged_stored_result_is_left_out_of_the_report_not_the_end_of_the_run(
    tmp_path: Path, examples: FaultServer
) -> None:
    site = _site(tmp_path, examples)
    assert _sync(site)[0] == 0
    _edit_state(
        site,
        "UPDATE result SET body = '[1, 2]' WHERE patient = 'dm02'",
        "UPDATE run SET manifest = '{\"counts\": 1}' WHERE id = 1",
    )

    code, _, err = _sync(site)
    assert code == 0, err  # before the mend: 70 after all the run's work
    patients = {s["patient"] for s in json.loads((tmp_path / "out" / "latest.json").read_text())["subjects"]}
    assert "Patient/dm02" not in patients and "Patient/dm01" in patients
    code, out, _ = _sync(site, "--status")
    assert code == 0 and "(its stored manifest is damaged)" in out


def test_a_folder_where_the_report_goes_is_a_configuration_error(
    tmp_path: Path, examples: FaultServer
) -> None:
    site = _site(tmp_path, examples)
    (tmp_path / "out" / "latest.json").mkdir(parents=True)
    code, _, err = _sync(site)
    assert code == 2, err
    assert f"{site}: report: cannot write {tmp_path / 'out' / 'latest.json'}" in err
