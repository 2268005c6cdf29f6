"""``fhir-adapter sync`` against the HAPI FHIR sandbox: incremental runs, re-check dates, crashes, the lock.

Needs ``FHIR_SANDBOX_URL`` (``sandbox/hapi/sandbox.sh start`` prints it); skipped without it unless
``FHIR_REQUIRE_SANDBOX=1``.

The sandbox is shared by every integration test of the session, so each test here loads its own copies
of the example patients under ids unique to it (``<prefix>-dm01``...), keeps its state, manifests and
site.toml in its own ``tmp_path`` and asserts only about its own patients. Except for the first-run test
(which must start from nothing and so screens every candidate on the server), a test's state starts
with the watermark set to the server's clock *before* it loads its patients: its first run is then an
incremental run that sees exactly its own patients, as a site's nightly run sees the day's new ones.
After a test, its patients' Conditions are deleted so later first runs no longer find them.
"""

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from fhir_adapter import __version__
from fhir_adapter.cli import main
from fhir_adapter.client.http import FhirClient
from fhir_adapter.sync.changes import server_now
from fhir_adapter.sync.lock import RunLock
from fhir_adapter.sync.state import State
from fhir_adapter.writeback.subjects import SUBJECT_ID_SYSTEM, XVER_PROGRESS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "patients"
AS_OF = "2026-06-15"
STUDY = "NCT05495321"
DM_STEMS = tuple(sorted(p.stem for p in EXAMPLES.glob("dm*.json")))  # pm05 is not dermatomyositis
Res = dict[str, Any]


# -- fixtures ----------------------------------------------------------------------------------------


@dataclass
class Site:
    """One test's site: its site.toml, state, manifests and the patients it loaded."""

    url: str
    root: Path
    ids: list[str] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "site.toml"

    @property
    def state_path(self) -> Path:
        return self.root / "state" / "state.sqlite"

    @property
    def lock_path(self) -> Path:
        return self.root / "state" / "state.lock"

    @property
    def manifests(self) -> Path:
        return self.root / "runs"

    def pid(self, stem: str) -> str:
        """This test's id of example patient ``stem`` (``dm07`` -> ``s1a2b3c4d-dm07``)."""
        found = [p for p in self.ids if p.endswith(f"-{stem}")]
        assert len(found) == 1, (stem, self.ids)
        return found[0]

    def write_config(self, **limits: object) -> None:
        extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in limits.items())
        self.config.write_text(
            textwrap.dedent(
                f"""\
                [server]
                url = "{self.url}"
                timeout_seconds = 30

                [study]
                id = "{STUDY}"
                as_of = "{AS_OF}"

                [state]
                path = "state/state.sqlite"
                manifests = "runs"

                [limits]
                """
            )
            + extra,
            encoding="utf-8",
        )

    def bootstrap(self) -> str:
        """Start the state where a previous run left it: the watermark is the server's clock now."""
        with FhirClient(self.url, max_retries=2) as client:
            now = server_now(client).isoformat()
        state = State(self.state_path)
        try:
            state.put("watermark", now)
        finally:
            state.close()
        return now

    def load(self, stems: tuple[str, ...], copies: int = 1) -> list[str]:
        """Load copies of the example patients under this test's ids; returns the new patient ids."""
        prefix = f"s{uuid.uuid4().hex[:8]}"
        data = self.root / f"data-{prefix}"
        data.mkdir()
        ids = []
        for n in range(copies):
            tag = prefix if copies == 1 else f"{prefix}{n}"
            for stem in stems:
                text = (EXAMPLES / f"{stem}.json").read_text(encoding="utf-8")
                (data / f"{tag}-{stem}.json").write_text(
                    re.sub(rf"\b{stem}\b", f"{tag}-{stem}", text), encoding="utf-8"
                )
                ids.append(f"{tag}-{stem}")
        code, err = cli("load", "--server", self.url, str(data))
        # dm14-obs5 has a deliberately bad status ("entered-in-error "), which HAPI rejects: exit 3.
        problems = [line for line in err.splitlines() if "HTTP 400" in line]
        assert code == 0 or (code == 3 and all("dm14-obs5" in line for line in problems)), err
        self.ids += ids
        return ids

    def sync(self, *args: str) -> tuple[int, str]:
        return cli("sync", "--config", str(self.config), *args)

    def ok(self, *args: str) -> dict[str, Any]:
        """A sync run that must exit 0; returns its manifest."""
        code, err = self.sync(*args)
        assert code == 0, err
        return self.last_manifest()

    def manifest_files(self) -> list[Path]:
        return sorted(self.manifests.glob("run-*.json")) if self.manifests.is_dir() else []

    def last_manifest(self) -> dict[str, Any]:
        manifests = [json.loads(p.read_text(encoding="utf-8")) for p in self.manifest_files()]
        assert manifests, f"no manifest in {self.manifests}"
        return max(manifests, key=lambda m: int(m["run"]))

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(f"file:{self.state_path}?mode=ro", uri=True, timeout=30)
        try:
            return list(db.execute(sql))
        finally:
            db.close()

    def cleanup(self) -> None:
        """Delete this test's Conditions (and what references them): later first runs skip its patients."""
        for start in range(0, len(self.ids), 40):
            subjects = ",".join(f"Patient/{pid}" for pid in self.ids[start : start + 40])
            requests.delete(
                f"{self.url}/Condition", params={"subject": subjects, "_cascade": "delete"}, timeout=120
            )


@pytest.fixture
def site(sandbox_url: str, tmp_path: Path) -> Iterator[Site]:
    made = Site(sandbox_url, tmp_path)
    made.write_config()
    yield made
    made.cleanup()


# -- helpers -----------------------------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str]:
    """Run ``fhir-adapter`` in this process; returns the exit code and everything it printed (the run
    summary goes to stdout, log lines to stderr)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(argv))
    return code, out.getvalue()


def cli_stdout(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue()


def command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "fhir_adapter", *argv]


def subjects_of(url: str, pid: str) -> list[Res]:
    with FhirClient(url, max_retries=2) as fhir:
        token = f"{SUBJECT_ID_SYSTEM}|{STUDY}:{pid}"
        return [
            r
            for r in fhir.search("ResearchSubject", {"identifier": token})
            if r["resourceType"] == "ResearchSubject"
        ]


def the_subject(url: str, pid: str) -> Res:
    found = subjects_of(url, pid)
    assert len(found) == 1, f"{len(found)} ResearchSubjects for Patient/{pid}"
    return found[0]


def provenances_of(url: str, subject_id: str) -> list[Res]:
    with FhirClient(url, max_retries=2) as fhir:
        return [
            r
            for r in fhir.search("Provenance", {"target": f"ResearchSubject/{subject_id}"})
            if r["resourceType"] == "Provenance"
        ]


def reason_of(subject: Res) -> str:
    progress = next(e for e in subject["extension"] if e["url"] == XVER_PROGRESS)
    reason = next(e for e in progress["extension"] if e["url"] == "reason")
    return str(reason["valueCodeableConcept"]["text"])


def versions(url: str, ids: list[str]) -> dict[str, tuple[str, str, int]]:
    """Per patient: ResearchSubject id, its versionId and how many Provenances target it."""
    out = {}
    for pid in ids:
        subject = the_subject(url, pid)
        out[pid] = (subject["id"], subject["meta"]["versionId"], len(provenances_of(url, subject["id"])))
    return out


def file_statuses(data: Path, tmp: Path) -> dict[str, str]:
    """What ``fhir-adapter screen`` of the same files says, per patient id."""
    out = tmp / "files-result.json"
    code, err = cli("screen", str(data), "--as-of", AS_OF, "--out", str(out))
    assert code == 0, err
    return {
        s["patient"].removeprefix("Patient/"): s["status"]
        for s in json.loads(out.read_text(encoding="utf-8"))["subjects"]
        if len(s["criteria"]) > 1
    }


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def platelets(pid: str, value: float, date: str) -> Res:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "777-3", "display": "Platelets"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": date,
        "valueQuantity": {
            "value": value,
            "unit": "10*9/L",
            "system": "http://unitsofmeasure.org",
            "code": "10*9/L",
        },
    }


# -- first run, quiet run ----------------------------------------------------------------------------


def test_first_run_screens_and_writes_everyone_and_a_quiet_second_run_does_nothing(site: Site) -> None:
    ids = site.load((*DM_STEMS, "pm05"))
    data = next(site.root.glob("data-*"))
    expected = file_statuses(data, site.root)
    dm_ids = [pid for pid in ids if not pid.endswith("-pm05")]
    assert sorted(expected) == sorted(dm_ids)

    first = site.ok()

    # A first run has no watermark: it searches the server for every DM candidate (other tests'
    # patients included, hence the >=) and writes a ResearchSubject for each.
    assert first["watermarkBefore"] is None and first["watermarkAfter"]
    assert first["outcome"] == "ok"
    assert (first["adapterVersion"], first["asOf"]) == (__version__, AS_OF)
    assert first["rulesVersion"]
    counts = first["counts"]
    assert counts["queuedBecause"].get("first run", 0) >= len(dm_ids)
    assert counts["candidates"] >= len(dm_ids)
    assert counts["evaluated"] >= len(dm_ids)
    assert counts["written"] >= len(dm_ids)  # ours are new: created
    assert counts["errors"] == 0
    for pid in dm_ids:
        subject = the_subject(site.url, pid)
        assert subject["status"] == expected[pid], pid
        assert subject["individual"] == {"reference": f"Patient/{pid}"}
        assert len(provenances_of(site.url, subject["id"])) == 1
    assert subjects_of(site.url, site.pid("pm05")) == []
    known = {r[0] for r in site.rows("SELECT id FROM patient")}
    assert set(dm_ids) <= known
    assert site.rows("SELECT count(*) FROM pending") == [(0,)]
    before = versions(site.url, dm_ids)

    second = site.ok()

    assert second["watermarkBefore"] == first["watermarkAfter"]
    assert second["watermarkAfter"] >= first["watermarkAfter"]
    c = second["counts"]
    assert (c["queued"], c["evaluated"], c["written"], c["unchanged"], c["errors"]) == (0, 0, 0, 0, 0)
    assert c["queuedBecause"] == {}
    assert versions(site.url, dm_ids) == before  # no new version, no new Provenance
    assert len(site.manifest_files()) == 2


def test_a_quiet_run_still_reports_the_current_state_of_every_candidate(site: Site) -> None:
    site.bootstrap()
    ids = site.load(("dm01", "dm08", "pm05"))
    with site.config.open("a", encoding="utf-8") as fh:
        fh.write('\n[report]\nresult = "latest.json"\nhtml = "latest.html"\n')
    site.ok()

    quiet = site.ok()

    assert quiet["counts"]["evaluated"] == 0
    latest = json.loads((site.root / "latest.json").read_text(encoding="utf-8"))
    candidates = {s["patient"]: s["status"] for s in latest["subjects"]}
    # Every candidate's state from the state file, though this run screened nobody; pm05 (no DM) is none.
    assert candidates == {
        f"Patient/{site.pid('dm01')}": "candidate",
        f"Patient/{site.pid('dm08')}": "ineligible",
    }
    assert latest["source"].startswith("sync: ") and "generated" in latest
    page = (site.root / "latest.html").read_text(encoding="utf-8")
    assert site.pid("dm08") in page and "current state of every candidate" in page
    assert set(ids) >= {site.pid("dm01"), site.pid("pm05")}


# -- incremental -------------------------------------------------------------------------------------


def test_a_new_observation_re_evaluates_only_that_patient_and_updates_its_subject(site: Site) -> None:
    site.bootstrap()
    ids = site.load(("dm01", "dm02", "dm07", "dm11"))
    first = site.ok()
    assert first["counts"]["queuedBecause"] == {"changed": 4}
    assert (first["counts"]["evaluated"], first["counts"]["written"]) == (4, 4)
    dm01 = site.pid("dm01")
    assert the_subject(site.url, dm01)["status"] == "candidate"
    before = versions(site.url, ids)

    with FhirClient(site.url, max_retries=2) as fhir:
        fhir.create(platelets(dm01, 40, "2026-06-14"))
    second = site.ok()

    c = second["counts"]
    assert c["queuedBecause"] == {"changed": 1}
    assert (c["queued"], c["evaluated"], c["written"], c["unchanged"]) == (1, 1, 1, 0)
    subject = the_subject(site.url, dm01)
    assert subject["status"] == "ineligible"
    assert "thrombocytopenia" in reason_of(subject)
    assert subject["meta"]["versionId"] == "2"
    provenances = provenances_of(site.url, subject["id"])
    assert len(provenances) == 2
    assert {p["activity"]["coding"][0]["code"] for p in provenances} == {"CREATE", "UPDATE"}
    after = versions(site.url, ids)
    assert {p: v for p, v in after.items() if p != dm01} == {p: v for p, v in before.items() if p != dm01}


def test_advancing_the_as_of_date_past_a_birthday_changes_the_verdict_without_new_data(site: Site) -> None:
    site.bootstrap()
    ids = site.load(("dm01", "dm07"))
    site.ok()
    dm07 = site.pid("dm07")  # born 1950-06-16: 75 on 2026-06-15, 76 the next day
    assert the_subject(site.url, dm07)["status"] == "candidate"
    assert site.rows(f"SELECT recheck_on FROM patient WHERE id = '{dm07}'") == [("2026-06-16",)]
    before = versions(site.url, ids)

    moved = site.ok("--as-of", "2026-06-16")

    c = moved["counts"]
    assert set(c["queuedBecause"]) == {"window"}  # nothing changed on the server: the date alone
    assert c["deletedResourcesSeen"] == 0
    assert c["written"] == 1
    subject = the_subject(site.url, dm07)
    assert subject["status"] == "ineligible"
    assert reason_of(subject) == "failing: age"
    assert subject["meta"]["versionId"] == "2"
    assert versions(site.url, [site.pid("dm01")]) == {site.pid("dm01"): before[site.pid("dm01")]}
    # dm07's next re-check moved on; the same day again queues nothing.
    (recheck,) = site.rows(f"SELECT recheck_on FROM patient WHERE id = '{dm07}'")[0]
    assert recheck is None or recheck > "2026-06-16"
    again = site.ok("--as-of", "2026-06-16")
    assert again["counts"]["queued"] == 0


def test_a_deleted_observation_re_evaluates_its_patient(site: Site) -> None:
    site.bootstrap()
    site.load(("dm01", "dm08"))
    site.ok()
    dm08 = site.pid("dm08")
    assert the_subject(site.url, dm08)["status"] == "ineligible"  # HBsAg positive
    example = json.loads((EXAMPLES / "dm08.json").read_text(encoding="utf-8"))
    (positive,) = [
        e["resource"]["id"] for e in example["entry"] if e["resource"].get("valueString") == "Positive"
    ]

    # The Provenance of the first write cites the result as evidence: HAPI keeps referential integrity, so
    # the delete cascades to that Provenance (a type the criteria never read).
    response = requests.delete(
        f"{site.url}/Observation/{positive.replace('dm08', dm08)}", params={"_cascade": "delete"}, timeout=30
    )
    assert response.status_code in (200, 204), response.text
    second = site.ok()

    c = second["counts"]
    assert c["deletedResourcesSeen"] == 1
    assert c["queuedBecause"] == {"changed": 1}
    assert (c["evaluated"], c["written"]) == (1, 1)
    subject = the_subject(site.url, dm08)
    assert subject["status"] == "candidate"  # the older negative HBsAg now decides
    assert subject["meta"]["versionId"] == "2"


# -- crashes and overlaps ----------------------------------------------------------------------------


def test_a_run_killed_midway_is_finished_by_the_next_run_without_duplicates(site: Site) -> None:
    site.bootstrap()
    ids = site.load(DM_STEMS, copies=2)
    stderr = (site.root / "killed.stderr").open("wb")
    run = subprocess.Popen(
        command("sync", "--config", str(site.config)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:

        def some_done() -> bool:
            assert run.poll() is None, (
                f"the run exited ({run.returncode}) before it could be killed; see {stderr.name}"
            )
            if not site.state_path.exists():
                return False
            try:
                return site.rows("SELECT count(*) FROM patient")[0][0] >= 5
            except sqlite3.OperationalError:
                return False  # the schema is being created

        wait_for(some_done, 120, "the run to screen 5 patients")
        run.send_signal(signal.SIGKILL)
        assert run.wait(timeout=30) == -signal.SIGKILL
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        stderr.close()
    pending = {r[0] for r in site.rows("SELECT id FROM pending")}
    done = {r[0] for r in site.rows("SELECT id FROM patient")}
    assert pending, "the run finished before it could be killed: nothing left to resume"
    assert pending | done == set(ids) and len(done) >= 5
    assert site.manifest_files() == []  # killed: no manifest

    resumed = site.ok()  # the dead process's lock is no obstacle

    c = resumed["counts"]
    assert c["queuedBecause"] == {"queued": len(pending)}  # nothing new: only the work left over
    assert c["evaluated"] == len(pending)
    # The patient in flight when the run died may have been written already: then it is unchanged now.
    assert c["written"] + c["unchanged"] == len(pending) and c["unchanged"] <= 1
    assert c["errors"] == 0
    assert site.rows("SELECT count(*) FROM pending") == [(0,)]
    assert {r[0] for r in site.rows("SELECT patient FROM result")} == set(ids)
    for pid in ids:
        subject = the_subject(site.url, pid)  # exactly one each
        assert subject["meta"]["versionId"] == "1", pid  # created once, never rewritten
        assert len(provenances_of(site.url, subject["id"])) <= 1, pid
    code, out = cli_stdout("sync", "--config", str(site.config), "--status")
    assert code == 0
    assert "(no manifest: the run did not finish)" in out
    assert "#2 " in out and "queued patients: 0" in out


def test_a_crash_between_subject_and_provenance_is_repaired_by_the_next_run(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Killed(BaseException):
        """The process dies here (SIGKILL, OOM, reboot): nothing after this line runs."""

    site.bootstrap()
    site.load(("dm01",))
    dm01 = site.pid("dm01")
    real_create = FhirClient.create

    def dies_at_provenance(self: FhirClient, resource: Res, *args: Any, **kwargs: Any) -> Any:
        if resource.get("resourceType") == "Provenance":
            raise Killed
        return real_create(self, resource, *args, **kwargs)

    monkeypatch.setattr(FhirClient, "create", dies_at_provenance)
    with pytest.raises(Killed):
        site.sync()
    monkeypatch.setattr(FhirClient, "create", real_create)
    subject = the_subject(site.url, dm01)
    assert provenances_of(site.url, subject["id"]) == []
    assert site.rows("SELECT id FROM pending") == [(dm01,)]

    resumed = site.ok()

    assert resumed["counts"]["evaluated"] == 1
    assert the_subject(site.url, dm01)["meta"]["versionId"] == "1"
    assert len(provenances_of(site.url, subject["id"])) == 1


_PAUSED_RUN = """
import sys, time
from pathlib import Path
from fhir_adapter.cli import main
from fhir_adapter.sync import run

barrier, argv = Path(sys.argv[1]), sys.argv[2:]
real_run = run._run

def paused(*args, **kwargs):
    # Called with the lock held: wait until the test lets the run go on.
    Path(str(barrier) + ".reached").write_text("x")
    while not barrier.exists():
        time.sleep(0.05)
    return real_run(*args, **kwargs)

run._run = paused
sys.exit(main(argv))
"""


def test_two_runs_started_together_one_runs_and_the_other_exits_5(site: Site) -> None:
    site.bootstrap()
    site.load(("dm01",))
    script = site.root / "paused_run.py"
    script.write_text(_PAUSED_RUN, encoding="utf-8")
    barrier = site.root / "go"
    argv = [sys.executable, str(script), str(barrier), "sync", "--config", str(site.config)]

    # Both start at once; whichever takes the lock first holds it until the barrier opens, so the
    # overlap is certain whatever the scheduling.
    runs = [
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        wait_for(lambda: any(r.poll() is not None for r in runs), 60, "one run to give up")
        loser = next(r for r in runs if r.poll() is not None)
        winner = next(r for r in runs if r is not loser)
        assert winner.poll() is None
        _, loser_err = loser.communicate(timeout=30)
        assert loser.returncode == 5, loser_err
        message = loser_err.decode()
        assert "another sync run holds" in message and str(site.lock_path) in message
        assert f"(pid {winner.pid})" in message
        barrier.write_text("go")
        _, winner_err = winner.communicate(timeout=120)
        assert winner.returncode == 0, winner_err
    finally:
        for r in runs:
            if r.poll() is None:
                r.kill()
                r.wait()
    assert [r[0] for r in site.rows("SELECT outcome FROM run")] == ["ok"]
    assert len(site.manifest_files()) == 1
    assert the_subject(site.url, site.pid("dm01"))["meta"]["versionId"] == "1"


def test_a_run_while_the_lock_is_held_exits_5_and_touches_nothing(site: Site) -> None:
    with RunLock(site.lock_path):
        done = subprocess.run(
            command("sync", "--config", str(site.config)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 5, done.stderr
    assert f"another sync run holds {site.lock_path} (pid {os.getpid()})" in done.stderr
    assert not site.state_path.exists()
    assert site.manifest_files() == []
    # Released: the next run goes ahead.
    assert site.ok()["outcome"] == "ok"


# -- dry run, status, logs -----------------------------------------------------------------------------


def test_dry_run_changes_nothing_and_status_prints_the_runs(site: Site) -> None:
    code, out = cli_stdout("sync", "--config", str(site.config), "--status")
    assert code == 0 and out.startswith("no runs yet")
    watermark = site.bootstrap()
    site.load(("dm01", "dm07"))
    dm01, dm07 = site.pid("dm01"), site.pid("dm07")

    code, err = site.sync("--dry-run")

    assert code == 0, err
    assert f"Patient/{dm01}: would create ResearchSubject" in err
    assert f"Patient/{dm07}: would create ResearchSubject" in err
    assert "dry-run (ok)" in err
    assert site.rows("SELECT key, value FROM meta") == [("watermark", watermark)]
    for table in ("patient", "pending", "run"):
        assert site.rows(f"SELECT count(*) FROM {table}") == [(0,)], table
    assert site.manifest_files() == []
    assert subjects_of(site.url, dm01) == [] and subjects_of(site.url, dm07) == []

    first = site.ok()
    assert first["counts"]["written"] == 2
    before = versions(site.url, [dm01, dm07])
    rows_before = site.rows("SELECT * FROM patient ORDER BY id")

    code, err = site.sync("--dry-run", "--as-of", "2026-06-16")

    assert code == 0, err
    assert f"Patient/{dm07}: would update ResearchSubject (candidate -> ineligible)" in err
    assert versions(site.url, [dm01, dm07]) == before
    assert site.rows("SELECT * FROM patient ORDER BY id") == rows_before
    assert site.rows("SELECT value FROM meta WHERE key = 'watermark'") == [(first["watermarkAfter"],)]
    assert site.rows("SELECT count(*) FROM pending") == [(0,)]
    assert len(site.manifest_files()) == 1
    second = site.ok()

    code, out = cli_stdout("sync", "--config", str(site.config), "--status")

    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"watermark: {second['watermarkAfter']}; queued patients: 0"
    assert lines[1].startswith("  #2 ") and " ok: sync run 2 ok: as of 2026-06-15; queued 0" in lines[1]
    assert lines[2].startswith("  #1 ") and "queued 2 (changed: 2), evaluated 2, written 2" in lines[2]
    assert len(lines) == 3  # dry runs are not recorded


def _sync_with_logs(site: Site) -> list[str]:
    site.bootstrap()
    site.load(("dm01",))
    done = subprocess.run(
        command("sync", "--config", str(site.config), "-v"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [line for line in done.stderr.splitlines() if line.strip()]


def test_log_records_are_json_lines_when_stderr_is_not_a_terminal(site: Site) -> None:
    lines = _sync_with_logs(site)

    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(records) >= 3  # -v: history, candidates, one line per write
    for record in records:
        assert set(record) == {"time", "level", "logger", "message"}
        assert record["level"] in {"info", "warning", "error", "debug"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["time"])
    assert any(r["logger"] == "fhir_adapter.sync.changes" for r in records)


def test_every_stderr_line_of_an_unattended_run_is_json(site: Site) -> None:
    lines = _sync_with_logs(site)

    bad = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    assert bad == []
