"""The sync job's parts without a server: site.toml validation, the state file, the lock, re-check dates,
the manifest and ``--status`` text, and how deletions in the history feed are traced to a patient."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import shutil
import signal
import sqlite3
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fhirdata import (
    DM,
    IV,
    PLT,
    condition,
    default_mappings,
    med_admin,
    med_request,
    med_statement,
    observation,
    patient,
    record,
    weight,
)

from fhir_adapter.cli import main
from fhir_adapter.errors import ConfigError, ExitCode, LockedError, StateError
from fhir_adapter.model import PatientRecord
from fhir_adapter.screening import screen_record
from fhir_adapter.sync import manifest as sync_manifest
from fhir_adapter.sync import run as sync_run
from fhir_adapter.sync import state as state_module
from fhir_adapter.sync import worker as sync_worker
from fhir_adapter.sync.changes import _patient_of_deleted
from fhir_adapter.sync.config import load_site_config
from fhir_adapter.sync.lock import RunLock
from fhir_adapter.sync.recheck import next_recheck
from fhir_adapter.sync.state import SCHEMA_VERSION, State, StoredResult

REPO = Path(__file__).resolve().parents[1]
D = dt.date.fromisoformat
Res = dict[str, Any]


# -- site.toml ---------------------------------------------------------------------------------------

MINIMAL = """\
[server]
url = "https://fhir.example.org/R4"

[state]
path = "state/state.sqlite"
"""


def write(tmp_path: Path, text: str, name: str = "site.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_site_config(path)
    return str(excinfo.value)


def test_the_example_site_config_is_valid_and_resolves_paths(tmp_path: Path) -> None:
    shutil.copy(REPO / "docs" / "site.example.toml", tmp_path / "site.toml")
    config = load_site_config(tmp_path / "site.toml")
    assert config.server_url == "https://fhir.hospital.example.org/R4"
    auth = config.server.auth
    assert auth.method == "smart" and auth.smart_key is not None and auth.smart_key.startswith("file:")
    assert config.as_of is None  # "today": decided on the day of each run
    assert config.rules.overlays == (tmp_path / "site-overlay.toml",)  # relative to the config file
    assert config.state_path == Path("/var/lib/fhir-adapter/state.sqlite")
    assert config.manifests == Path("/var/lib/fhir-adapter/runs")
    assert config.lock_path == Path("/var/lib/fhir-adapter/state.lock")  # default: next to the state
    assert (config.max_patients, config.write_back, config.server.timeout) == (0, True, 60.0)


def test_minimal_config_defaults(tmp_path: Path) -> None:
    config = load_site_config(write(tmp_path, MINIMAL))
    assert config.server.auth.method == "none"
    assert config.rules.trials == ()  # the default trial of mappings/trials.toml
    assert config.state_path == tmp_path / "state" / "state.sqlite"
    assert config.manifests == tmp_path / "state" / "runs"
    assert config.lock_path == tmp_path / "state" / "state.lock"


@pytest.mark.parametrize(
    ("auth", "key"),
    [
        ('type = "bearer"\ntoken = "abc"', "server.auth.token"),
        ('type = "basic"\nusername = "prescreen"\npassword = "abc"', "server.auth.password"),
        ('type = "smart"\nclient_id = "c"\nprivate_key = "abc"', "server.auth.private_key"),
    ],
)
def test_a_literal_secret_is_refused_naming_file_and_key(tmp_path: Path, auth: str, key: str) -> None:
    path = write(tmp_path, MINIMAL + f"\n[server.auth]\n{auth}\n")
    message = config_error(path)
    assert message.startswith(f"{path}: {key}: ")
    assert "env:VARIABLE or file:/path" in message
    assert "abc" not in message  # the secret itself is never echoed


def test_secret_references_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '\n[server.auth]\ntype = "bearer"\ntoken = "env:FHIR_TOKEN"\n')
    assert load_site_config(path).server.auth.token == "env:FHIR_TOKEN"
    path = write(tmp_path, MINIMAL + '\n[server.auth]\ntype = "bearer"\ntoken = "file:/run/secrets/t"\n')
    assert load_site_config(path).server.auth.token == "file:/run/secrets/t"


@pytest.mark.parametrize(
    ("text", "key", "unexpected"),
    [
        (MINIMAL.replace('path = "state', 'pth = "x"\npath = "state'), "state", "'pth'"),
        (MINIMAL + "\n[sever]\nurl = 'x'\n", "(top level)", "'sever'"),
        (MINIMAL + "\n[limits]\nwrite_bak = false\n", "limits", "'write_bak'"),
    ],
)
def test_an_unknown_key_is_refused_naming_file_and_key(
    tmp_path: Path, text: str, key: str, unexpected: str
) -> None:
    path = write(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"{path}: {key}: ")
    assert unexpected in message and "not allowed" in message


@pytest.mark.parametrize("url", ["fhir.example.org/R4", "ftp://fhir.example.org/R4", ""])
def test_a_bad_server_url_is_refused_naming_file_and_key(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, MINIMAL.replace("https://fhir.example.org/R4", url))
    message = config_error(path)
    assert message.startswith(f"{path}: server.url: ")
    assert "https?://" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[server]\nurl = "https://x"\n', "(top level)"),  # no [state]
        (MINIMAL + "\n[limits]\nmax_patients_per_run = -1\n", "limits.max_patients_per_run"),
        (MINIMAL + '\n[study]\nas_of = "15/06/2026"\n', "study.as_of"),
        (MINIMAL.replace("[server]\n", '[server]\ntimeout_seconds = "60"\n'), "server.timeout_seconds"),
    ],
)
def test_other_invalid_values_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    assert config_error(path).startswith(f"{path}: {key}: ")


def test_an_impossible_as_of_date_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '\n[study]\nas_of = "2026-02-30"\n')
    assert config_error(path).startswith(f"{path}: study.as_of: ")


def test_missing_and_unparseable_config_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert config_error(missing) == f"{missing}: file not found"
    broken = write(tmp_path, "[server\nurl = 1\n")
    assert config_error(broken).startswith(f"{broken}: not valid TOML")


def test_cli_exits_2_on_a_config_error_and_prints_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '\n[server.auth]\ntype = "bearer"\ntoken = "abc"\n')
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["sync", "--config", str(path)])
    assert code == ExitCode.USAGE == 2
    assert f"{path}: server.auth.token: secrets are given by reference" in err.getvalue()
    assert not (tmp_path / "state").exists()  # nothing was created


def _ec_key(tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "smart-key.pem"
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


def _smart_config(tmp_path: Path, extra: str = "") -> Path:
    key = _ec_key(tmp_path)
    return write(
        tmp_path,
        MINIMAL
        + textwrap.dedent(
            f"""
            [server.auth]
            type = "smart"
            client_id = "fhir-adapter-prescreen"
            private_key = "file:{key}"
            algorithm = "ES384"
            token_url = "https://auth.example.org/token"
            """
        )
        + extra,
    )


def test_site_config_auth_reaches_the_client(tmp_path: Path) -> None:
    config = load_site_config(_smart_config(tmp_path))
    with sync_run.client_for(config) as client:
        auth = client._auth
        assert auth is not None
        assert (auth.client_id, auth.token_url, auth.algorithm) == (  # type: ignore[attr-defined]
            "fhir-adapter-prescreen",
            "https://auth.example.org/token",
            "ES384",
        )


def test_the_smart_scope_of_the_site_config_is_used(tmp_path: Path) -> None:
    config = load_site_config(_smart_config(tmp_path, 'scope = "system/Patient.rs system/Observation.rs"\n'))
    with sync_run.client_for(config) as client:
        assert client._auth.scope == "system/Patient.rs system/Observation.rs"  # type: ignore[union-attr]


def test_an_unset_secret_reference_names_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FHIR_ADAPTER_TEST_UNSET_TOKEN", raising=False)
    path = write(
        tmp_path, MINIMAL + '\n[server.auth]\ntype = "bearer"\ntoken = "env:FHIR_ADAPTER_TEST_UNSET_TOKEN"\n'
    )
    config = load_site_config(path)
    with pytest.raises(ConfigError) as excinfo:
        sync_run.client_for(config)
    assert str(excinfo.value).startswith(f"{path}: server.auth.token: ")


# -- state file --------------------------------------------------------------------------------------


def tables(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def stored(pid: str, digest: str, status: str, gate_met: bool = True) -> StoredResult:
    return StoredResult("S1", pid, digest, status, gate_met, {"patient": f"Patient/{pid}", "status": status})


def test_a_v0_state_file_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    sqlite3.connect(path).close()  # an empty SQLite file: user_version 0
    assert user_version(path) == 0

    state = State(path)
    state.put("watermark", "2026-06-15T00:00:00+00:00")
    state.record_results("p1", [stored("p1", "abc", "candidate")], D("2026-06-16"))
    state.close()

    assert user_version(path) == SCHEMA_VERSION >= 2
    assert {"meta", "patient", "pending", "run", "result"} <= tables(path)
    reopened = State(path)  # already current: opening again migrates nothing and keeps the data
    try:
        assert reopened.get("watermark") == "2026-06-15T00:00:00+00:00"
        known = reopened.patient("p1")
        assert known is not None and known.recheck_on == D("2026-06-16")
    finally:
        reopened.close()
    assert user_version(path) == SCHEMA_VERSION


def test_a_state_file_that_does_not_exist_yet_is_created_with_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "state.sqlite"
    State(path).close()
    assert user_version(path) == SCHEMA_VERSION


def test_a_failed_migration_leaves_the_file_at_its_old_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.sqlite"
    State(path).close()
    broken = [*state_module.MIGRATIONS, "CREATE TABLE half_done (a TEXT); THIS IS NOT SQL"]
    monkeypatch.setattr(state_module, "MIGRATIONS", broken)
    monkeypatch.setattr(state_module, "SCHEMA_VERSION", len(broken))

    with pytest.raises(StateError) as caught:
        State(path)

    assert str(caught.value).startswith(f"{path}: not a usable sync state file (")
    assert user_version(path) == SCHEMA_VERSION
    assert "half_done" not in tables(path)


def test_a_state_file_newer_than_the_code_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()

    with pytest.raises(ConfigError) as excinfo:
        State(path)

    message = str(excinfo.value)
    assert f"schema v{SCHEMA_VERSION + 1} is newer than this adapter (v{SCHEMA_VERSION})" in message
    assert excinfo.value.exit_code == 2
    assert user_version(path) == SCHEMA_VERSION + 1  # not touched


def test_cli_refuses_a_newer_state_file_with_exit_2(tmp_path: Path) -> None:
    config = write(tmp_path, MINIMAL.replace("https://fhir.example.org/R4", "http://127.0.0.1:9/fhir"))
    state = tmp_path / "state" / "state.sqlite"
    state.parent.mkdir()
    db = sqlite3.connect(state)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["sync", "--config", str(config)])
    assert code == 2
    assert "is newer than this adapter" in err.getvalue()


def test_the_newer_state_file_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(ConfigError) as excinfo:
        State(path)
    assert str(path) in str(excinfo.value)


def test_the_work_queue_and_runs_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    state = State(path)
    state.enqueue(["b", "a", "c"], "queued")
    state.done("b")
    run_id = state.start_run()
    state.close()

    state = State(path)
    try:
        assert state.pending() == [("a", "queued"), ("c", "queued")]
        (only,) = state.runs()
        assert (only["id"], only["finished"], only["outcome"], only["manifest"]) == (
            run_id,
            None,
            "interrupted",
            None,
        )
        state.record_results("a", [stored("a", "h1", "candidate")], D("2026-07-01"))
        state.record_results("z", [stored("z", "h2", "ineligible", gate_met=False)], None)
        assert state.due_for_recheck(D("2026-06-30")) == []
        assert state.due_for_recheck(D("2026-07-01")) == ["a"]
        state.record_error("a", "HTTP 500")
        known = state.patient("a")
        assert known is not None and (known.hashes, known.last_error) == ({"S1": "h1"}, "HTTP 500")
        # The current state of the study's candidates (gate met) is what the sync's report shows.
        assert [r.patient for r in state.results("S1")] == ["a"]
        assert [r.patient for r in state.results("S1", candidates_only=False)] == ["a", "z"]
        state.forget("a")
        assert state.patient("a") is None and [r.patient for r in state.results("S1")] == []
    finally:
        state.close()


# -- the lock ----------------------------------------------------------------------------------------


def test_a_second_acquire_raises_locked_error_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "state.lock"
    with RunLock(path):
        with pytest.raises(LockedError) as excinfo, RunLock(path):
            pass
        assert str(excinfo.value) == f"another sync run holds {path} (pid {os.getpid()})"
        assert excinfo.value.exit_code == ExitCode.LOCKED == 5
    with RunLock(path):  # released on exit: free again
        pass


def _child_holding_the_lock(path: Path, then: str) -> int:
    """Fork a child that takes the lock, tells us, then exits without releasing it or waits to be killed."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read_end)
            lock = RunLock(path)
            lock.__enter__()
            os.write(write_end, b"locked")
            if then == "exit":
                os._exit(0)  # no __exit__: the lock is never released by the program
            signal.pause()
        finally:
            os._exit(1)
    os.close(write_end)
    assert os.read(read_end, 16) == b"locked"
    os.close(read_end)
    return pid


@pytest.mark.parametrize("how", ["killed", "exit"])
def test_a_lock_whose_holder_died_is_recovered(tmp_path: Path, how: str) -> None:
    path = tmp_path / "state.lock"
    child = _child_holding_the_lock(path, "exit" if how == "exit" else "wait")
    try:
        if how == "killed":
            with pytest.raises(LockedError, match=rf"\(pid {child}\)"), RunLock(path):
                pass
            os.kill(child, signal.SIGKILL)
    finally:
        _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) if how == "killed" else os.WEXITSTATUS(status) == 0
    assert path.read_text() == str(child)  # the dead holder's pid is still in the file

    with RunLock(path):
        assert path.read_text() == str(os.getpid())


# -- re-check dates ----------------------------------------------------------------------------------

AS_OF = D("2026-06-15")
BORN = patient("1980-03-02")  # next birthday 2027-03-02: far from every window boundary below
DM_LONG_AGO = condition(DM, "Dermatomyositis", onset="2010-01-01")


def rec(*resources: Res) -> PatientRecord:
    return record(*resources)


def status_on(resources: tuple[Res, ...], day: dt.date) -> tuple[str, str]:
    subject = screen_record(rec(*resources), default_mappings(), day)
    return subject.status.value, sync_worker.result_hash(subject)


def first_change(resources: tuple[Res, ...], as_of: dt.date, horizon: int = 400) -> dt.date | None:
    """The first day after ``as_of`` on which what the write-back depends on changes (brute force)."""
    today = status_on(resources, as_of)[1]
    for n in range(1, horizon):
        day = as_of + dt.timedelta(days=n)
        if status_on(resources, day)[1] != today:
            return day
    return None


def test_recheck_the_day_after_a_lab_leaves_its_90_day_window() -> None:
    low = observation(PLT, 40, "10*9/L", date="2026-03-22")  # 85 days before the as-of date
    resources = (BORN, DM_LONG_AGO, low)

    assert next_recheck(rec(*resources), default_mappings(), AS_OF) == D("2026-06-21")  # 03-22 + 91 days
    # Grounded in the criteria: thrombocytopenia holds through day 90 and is gone on day 91.
    assert status_on(resources, D("2026-06-20"))[0] == "ineligible"
    assert status_on(resources, D("2026-06-21"))[0] != "ineligible"
    assert first_change(resources, AS_OF) == D("2026-06-21")


@pytest.mark.parametrize(
    ("born", "as_of", "expected"),
    [
        ("1950-06-16", "2026-06-15", "2026-06-16"),  # tomorrow: 76 (dm07)
        ("1950-03-01", "2026-06-15", "2027-03-01"),  # this year's is past: next year's
        ("1950-06-15", "2026-06-15", "2027-06-15"),  # today's is not "next"
        ("1952-02-29", "2026-06-15", "2027-03-01"),  # no 29 February in 2027: whole_years turns on 1 March
        ("1952-02-29", "2027-06-15", "2028-02-29"),
    ],
)
def test_recheck_on_the_next_birthday(born: str, as_of: str, expected: str) -> None:
    resources = (patient(born), DM_LONG_AGO)
    assert next_recheck(rec(*resources), default_mappings(), D(as_of)) == D(expected)


def test_the_birthday_recheck_is_the_day_the_verdict_changes() -> None:
    resources = (patient("1950-06-16"), DM_LONG_AGO)
    assert first_change(resources, AS_OF, horizon=5) == D("2026-06-16")


def test_recheck_the_day_after_the_two_calendar_month_window() -> None:
    dose = med_admin("ceftriaxone 1 G Injection", 1, "g", date="2026-04-20", route=IV)
    resources = (BORN, DM_LONG_AGO, dose)

    assert next_recheck(rec(*resources), default_mappings(), AS_OF) == D("2026-06-21")  # 04-20 + 2 months + 1
    assert first_change(resources, AS_OF) == D("2026-06-21")


def test_a_result_dated_in_the_future_is_rechecked_on_its_date() -> None:
    later = observation(PLT, 40, "10*9/L", date="2026-06-18")
    assert next_recheck(rec(BORN, DM_LONG_AGO, later), default_mappings(), AS_OF) == D("2026-06-18")


def test_no_recheck_for_a_record_without_dates() -> None:
    bare = PatientRecord(patient_id="p1", patient={"resourceType": "Patient", "id": "p1"})
    assert next_recheck(bare, default_mappings(), AS_OF) is None
    assert next_recheck(PatientRecord(patient_id="p1", patient=None), default_mappings(), AS_OF) is None
    # Dates whose every window closed long ago, and no birthDate: nothing can change by date alone.
    old = (patient(birth=None), condition(DM, onset="2001-01-01"))
    assert next_recheck(rec(*old), default_mappings(), AS_OF) is None


def _statement_with_dosage_bounds_only() -> tuple[Res, ...]:
    stmt = med_statement("CellCept", 1000, "mg")
    stmt.pop("effectivePeriod")
    stmt["medicationCodeableConcept"] = {"coding": [{"system": "http://www.whocc.no/atc", "code": "L04AA06"}]}
    stmt["dosage"][0]["timing"] = {
        "repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "boundsPeriod": {"start": "2026-05-16"}}
    }
    return (BORN, DM_LONG_AGO, stmt)


def _order_with_validity_period_only() -> tuple[Res, ...]:
    order = med_request("prednisone", 40, "mg", start="2026-05-01", status="completed")
    del order["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]
    order["dispenseRequest"] = {"validityPeriod": {"start": "2026-05-01", "end": "2026-06-10"}}
    return (BORN, DM_LONG_AGO, order, weight(60, date="2026-06-01"))


@pytest.mark.parametrize(
    ("make", "as_of", "changes_on"),
    [
        pytest.param(
            lambda: (BORN, DM_LONG_AGO, med_admin("ceftriaxone", 1, "g", date="2026-06-30", route=IV)),
            "2026-08-31",
            "2026-09-01",
            id="month-window-end-of-month",
        ),
        pytest.param(
            lambda: (patient("1950-06"), DM_LONG_AGO),
            "2026-06-15",
            "2026-06-30",
            id="partial-birthdate",
        ),
        pytest.param(
            _statement_with_dosage_bounds_only,
            "2026-06-15",
            "2026-08-09",
            id="statement-dosage-bounds",
        ),
        pytest.param(
            _order_with_validity_period_only,
            "2026-07-08",
            "2026-07-09",
            id="request-validity-period",
        ),
    ],
)
def test_the_recheck_is_never_later_than_the_first_change(make: Any, as_of: str, changes_on: str) -> None:
    resources = make()
    assert first_change(resources, D(as_of)) == D(changes_on)  # the scenario is what it claims

    recheck = next_recheck(rec(*resources), default_mappings(), D(as_of))
    assert recheck is not None and D(as_of) < recheck <= D(changes_on)


# -- deletions in the history feed ---------------------------------------------------------------------


class FakeClient:
    def __init__(self, previous: Res) -> None:
        self.previous = previous
        self.reads: list[tuple[str, str, str]] = []

    def vread(self, rtype: str, rid: str, version: str) -> SimpleNamespace:
        self.reads.append((rtype, rid, version))
        return SimpleNamespace(body=self.previous)


OBS_V1 = {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p7"}}


def test_a_deletion_whose_full_url_carries_the_version_is_traced_to_its_patient() -> None:
    client = FakeClient(OBS_V1)
    entry = {"fullUrl": "http://h/fhir/Observation/o1/_history/3", "request": {"method": "DELETE"}}
    assert _patient_of_deleted(client, entry) == "p7"  # type: ignore[arg-type]
    assert client.reads == [("Observation", "o1", "2")]


def test_a_hapi_deletion_entry_is_traced_to_its_patient() -> None:
    client = FakeClient(OBS_V1)
    entry = {  # exactly what HAPI 8.8 returns in Observation/_history for a DELETE
        "fullUrl": "http://127.0.0.1:8089/fhir/Observation/o1",
        "request": {"method": "DELETE", "url": "Observation/o1/_history/2"},
        "response": {"status": "200 OK", "etag": 'W/"2"'},
    }
    assert _patient_of_deleted(client, entry) == "p7"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "Observation/o_1/_history/2",  # not a FHIR id
        "x/_history/2",  # no type before the id
        "_history/5",
        "Observation/o1?x=1/_history/2",  # the version is inside the query
        "Observation/o1/_history/1",  # a first version has nothing before it
        "Observation/o1/_history/2/_history/3",
        "Observation/o1/_history/two",
        "https://h/fhir/Obs%2Fervation/o1/_history/2",
    ],
)
def test_a_deletion_url_that_names_no_earlier_version_is_not_read_from(url: str) -> None:
    client = FakeClient(OBS_V1)
    entry = {"request": {"method": "DELETE", "url": url}}
    assert _patient_of_deleted(client, entry) is None  # type: ignore[arg-type]
    assert client.reads == []  # before the mend: "x/_history/2" asked for a type "2", id "x"


# -- manifests and --status ----------------------------------------------------------------------------


def manifest(**counts: Any) -> dict[str, Any]:
    base = sync_manifest.Counts(queued=3, evaluated=2, written=1, unchanged=1, staff_managed=0, errors=1)
    base.reasons.update({"changed": 2, "window": 1})
    body = base.to_json() | counts
    return {
        "run": 7,
        "started": "2026-06-15T02:00:00+00:00",
        "finished": "2026-06-15T02:00:09+00:00",
        "outcome": "partial",
        "asOf": "2026-06-15",
        "watermarkBefore": "2026-06-14T02:00:01.250000+00:00",
        "watermarkAfter": "2026-06-15T02:00:00.500000+00:00",
        "counts": body,
        "rulesVersion": "r1",
        "adapterVersion": "0.1.0",
        "server": "https://fhir.example.org/R4",
        "errors": [],
    }


def test_counts_json_has_every_count_the_issue_asks_for() -> None:
    counts = manifest()["counts"]
    assert {
        "candidates",
        "queued",
        "evaluated",
        "unchanged",
        "written",
        "skippedStaffManaged",
        "errors",
        "queuedBecause",
        "deletedResourcesSeen",
        "requests",
    } <= set(counts)
    assert counts["queuedBecause"] == {"changed": 2, "window": 1}


def test_render_manifest() -> None:
    assert sync_manifest.render_manifest(manifest()) == (
        "sync run 7 partial: as of 2026-06-15; queued 3 (changed: 2, window: 1), evaluated 2, written 1, "
        "unchanged 1, staff-managed 0, errors 1, requests 0; "
        "watermark 2026-06-14T02:00:01.250000+00:00 -> 2026-06-15T02:00:00.500000+00:00"
    )
    quiet = manifest(queued=0, evaluated=0, written=0, unchanged=0, errors=0, queuedBecause={})
    assert "queued 0 (nothing changed), evaluated 0" in sync_manifest.render_manifest(quiet)


def test_the_run_summary_names_the_strategies_used() -> None:
    body = manifest() | {"strategies": {"candidates": "group", "records": "bulk", "changes": "bulk"}}
    assert sync_manifest.render_manifest(body).endswith(
        "; strategies: candidates group, records bulk, changes bulk"
    )


def test_write_manifest_is_one_json_file_per_run(tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    sync_manifest.write_manifest(folder, 7, manifest())
    (written,) = folder.iterdir()
    assert written.name.startswith("run-") and written.name.endswith("-000007.json")
    assert json.loads(written.read_text(encoding="utf-8")) == manifest()


def test_status_lists_the_last_runs_newest_first(tmp_path: Path) -> None:
    config = load_site_config(write(tmp_path, MINIMAL))
    assert sync_manifest.status(config) == f"no runs yet ({config.state_path} does not exist)"

    state = State(config.state_path)
    first = state.start_run()
    state.finish_run(first, "ok", manifest() | {"run": first, "outcome": "ok"})
    second = state.start_run()  # killed: never finished
    state.put("watermark", "2026-06-15T02:00:00.500000+00:00")
    state.enqueue(["p1", "p2"], "queued")
    state.close()

    lines = sync_manifest.status(config).splitlines()

    assert lines[0] == "watermark: 2026-06-15T02:00:00.500000+00:00; queued patients: 2"
    assert lines[1].startswith(f"  #{second} ") and lines[1].endswith(
        "interrupted (no manifest: the run did not finish)"
    )
    assert lines[2].startswith(f"  #{first} ") and f" ok: sync run {first} ok: as of 2026-06-15" in lines[2]
    assert len(lines) == 3


def test_cli_status_prints_to_stdout_and_exits_0(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["sync", "--config", str(path), "--status"])
    assert code == 0
    assert out.getvalue().startswith("no runs yet")


def test_the_sandbox_site_config_ships_valid_and_needs_nothing_else() -> None:
    config = load_site_config(REPO / "docs" / "site.sandbox.toml")
    assert config.server_url == "http://127.0.0.1:8089/fhir" and config.server.auth.method == "none"
    assert config.rules.trials == ("NCT05495321", "NCT02728752")
    assert config.report_dir == REPO / "docs" / ".." / "out" / "sandbox-sync" / "latest"
    assert all(p.is_file() for p in config.rules.overlays)


def test_the_example_site_config_names_an_overlay_that_exists() -> None:
    config = load_site_config(REPO / "docs" / "site.example.toml")
    assert config.rules.overlays and all(p.is_file() for p in config.rules.overlays)
