"""``sync`` on a server whose only change feed is a Bulk Data export (the bulk-only profile: searches and a
Group-level ``$export``), against the loopback fake: a full run reads everything from one export; later runs
ask for ``_since`` the last ``transactionTime``; the manifest's ``deleted`` entries are applied; records
come from export files (the file verdicts); an incomplete export screens nobody; a killed run resumes its
job."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import textwrap
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bulkfake import FakeBulk, FileSpec, manifest, ndjson

from fhir_adapter.cli import main
from fhir_adapter.facts.fhirjson import patient_of
from fhir_adapter.source.reader import Item, read_all
from fhir_adapter.sync.bulk_changes import bulk_folder

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "patients"
AS_OF = "2026-06-15"
MEMBERS = ("dm01", "dm02", "dm07", "pm05")  # pm05: polymyositis, not a candidate
DM = ("dm01", "dm02", "dm07")
TYPES = ("search-type", "read", "vread", "history-instance")


def capability_statement() -> dict[str, Any]:
    """bulk-only: searches and reads, instance history, a Group-level export; no $everything, no
    type-level _history, no _lastUpdated."""
    rtypes = ("Patient", "Group", "Condition", "Observation", "MedicationRequest", "MedicationStatement",
              "MedicationAdministration", "Encounter", "AllergyIntolerance", "Medication")  # fmt: skip
    resources = []
    for rtype in rtypes:
        ops = [{"name": "export"}] if rtype == "Group" else []
        resources.append(
            {
                "type": rtype,
                "interaction": [{"code": c} for c in TYPES],
                "searchParam": [{"name": "patient"}, {"name": "code"}],
                "operation": ops,
            }
        )
    return {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        "rest": [{"mode": "server", "resource": resources}],
    }


def example_resources(stems: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in read_all([EXAMPLES / f"{s}.json" for s in stems]):
        if isinstance(item, Item):
            by_type[item.resource["resourceType"]].append(item.resource)
    return dict(sorted(by_type.items()))


class Server:
    """The fake with the examples loaded: ``export(name, resources, ...)`` scripts the next job."""

    def __init__(self, fake: FakeBulk) -> None:
        self.fake = fake
        self.clock = 0

    def next_manifest(
        self,
        resources: dict[str, list[dict[str, Any]]],
        deleted: tuple[str, ...] = (),
        failing: str | None = None,
    ) -> str:
        """Append the manifest of the next job; returns its transactionTime. The file of type ``failing``
        answers 503 to every attempt."""
        self.clock += 1
        job = len(self.fake.manifests) + 1
        output = []
        for rtype, items in resources.items():
            name = f"job{job}-{rtype}"
            self.fake.files[name] = FileSpec(ndjson(items), statuses=[503] * 20 if rtype == failing else [])
            output.append((rtype, self.fake.file_url(name), len(items)))
        stamp = f"2026-06-{self.clock:02d}T10:00:00.000Z"
        extra: dict[str, Any] = {"transactionTime": stamp}
        if deleted:
            bundle = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"request": {"method": "DELETE", "url": ref}} for ref in deleted],
            }
            self.fake.files[f"job{job}-deleted"] = FileSpec(ndjson([bundle]))
            extra["deleted"] = [{"type": "Bundle", "url": self.fake.file_url(f"job{job}-deleted")}]
        self.fake.manifests.append(manifest(self.fake, output, **extra))
        return stamp


@pytest.fixture
def server() -> Iterator[Server]:
    with FakeBulk() as fake:
        fake.routes["/fhir/metadata"] = capability_statement()
        fake.routes["/fhir/Patient"] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "meta": {"lastUpdated": "2026-06-30T00:00:00.000Z"},  # later than every transactionTime
        }
        fake.routes["/fhir/Group/g1"] = {
            "resourceType": "Group",
            "id": "g1",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{m}"}} for m in MEMBERS],
        }
        yield Server(fake)


def site(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "site.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [server]
            url = "{url}"
            group = "g1"

            [study]
            as_of = "{AS_OF}"

            [state]
            path = "state/state.sqlite"

            [limits]
            write_back = false

            [report]
            result = "latest.json"

            [bulk]
            poll_max_wait_seconds = 0.01
            """
        )
        + extra,
        encoding="utf-8",
    )
    return path


def sync(config: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["sync", "--config", str(config), *args])
    return code, out.getvalue()


def last_manifest(config: Path) -> dict[str, Any]:
    runs = sorted((config.parent / "state" / "runs").glob("run-*.json"))
    return dict(json.loads(runs[-1].read_text()))


def file_verdicts(stems: tuple[str, ...], tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "files.json"
    code = main(
        ["screen", *(str(EXAMPLES / f"{s}.json") for s in stems), "--as-of", AS_OF, "--out", str(out)]
    )
    assert code == 0
    return {s["patient"]: s for s in json.loads(out.read_text())["subjects"]}


def latest(config: Path) -> dict[str, Any]:
    return {s["patient"]: s for s in json.loads((config.parent / "latest.json").read_text())["subjects"]}


def screened_at(config: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(config.parent / "state" / "state.sqlite")) as db:
        return dict(db.execute("SELECT patient, screened_at FROM result"))


def mark_screened(config: Path) -> None:
    """Set every stored result's screening time to a mark, so a re-screen shows within the same second."""
    with contextlib.closing(sqlite3.connect(config.parent / "state" / "state.sqlite")) as db, db:
        db.execute("UPDATE result SET screened_at = 'mark'")


def rescreened(config: Path) -> set[str]:
    return {p for p, at in screened_at(config).items() if at != "mark"}


def since_of(kick: Any) -> str | None:
    return dict(kick.params()).get("_since")


def test_a_full_run_reads_everything_from_one_group_export_with_the_file_verdicts(
    server: Server, tmp_path: Path
) -> None:
    stamp = server.next_manifest(example_resources(MEMBERS))
    config = site(tmp_path, server.fake.base)

    code, text = sync(config)

    assert code == 0, text
    run = last_manifest(config)
    assert run["strategies"] == {"candidates": "group", "records": "bulk", "changes": "bulk"}
    assert run["counts"]["evaluated"] == len(DM) and run["counts"]["notCandidate"] == 1
    assert run["watermarkAfter"] == "2026-06-01T10:00:00+00:00" == stamp.replace(".000Z", "+00:00")
    kicks = server.fake.kick_offs
    assert [k.path for k in kicks] == ["/fhir/Group/g1/$export"] and since_of(kicks[0]) is None
    files = file_verdicts(DM, tmp_path)
    assert {p: (s["status"], s["criteria"]) for p, s in latest(config).items()} == {
        p: (s["status"], s["criteria"]) for p, s in files.items()
    }
    folder = bulk_folder(config.parent / "state" / "state.sqlite")
    assert not list(folder.rglob("*.ndjson")), "downloads are removed after a complete run"


def test_later_runs_export_since_the_last_transaction_time_and_screen_only_who_changed(
    server: Server, tmp_path: Path
) -> None:
    everything = example_resources(MEMBERS)
    server.next_manifest(everything)  # run 1: full
    config = site(tmp_path, server.fake.base)
    assert sync(config)[0] == 0

    second = server.next_manifest({})  # run 2: nothing changed
    code, text = sync(config)
    run = last_manifest(config)
    assert code == 0 and run["counts"]["queued"] == 0 and run["counts"]["evaluated"] == 0, text
    assert since_of(server.fake.kick_offs[-1]) == "2026-06-01T10:00:00.000Z"
    assert run["watermarkAfter"] == second.replace(".000Z", "+00:00")  # the server's clock, not ours

    # Run 3: one new Observation of dm02; the records export (a Group-only server: the whole Group).
    new = {"resourceType": "Observation", "id": "new1", "status": "final", "code": {"text": "note"},
           "subject": {"reference": "Patient/dm02"}, "meta": {"versionId": "1"}}  # fmt: skip
    server.next_manifest({"Observation": [new]})
    server.next_manifest(everything)
    mark_screened(config)
    code, text = sync(config)
    run = last_manifest(config)
    assert code == 0, text
    assert (run["counts"]["queued"], run["counts"]["evaluated"]) == (1, 1)
    assert run["counts"]["queuedBecause"] == {"changed": 1}
    assert since_of(server.fake.kick_offs[-2]) == "2026-06-02T10:00:00.000Z"
    assert since_of(server.fake.kick_offs[-1]) is None
    assert rescreened(config) == {"dm02"}


def test_deleted_entries_queue_their_patients_and_a_deleted_patient_leaves_the_state(
    server: Server, tmp_path: Path
) -> None:
    everything = example_resources(MEMBERS)
    server.next_manifest(everything)
    config = site(tmp_path, server.fake.base)
    assert sync(config)[0] == 0
    # Observation/gone1 was dm01's (its history says so); Patient/dm07 is deleted with its data.
    server.fake.routes["/fhir/Observation/gone1/_history"] = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [
            {"request": {"method": "DELETE", "url": "Observation/gone1"}},
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": "gone1",
                    "subject": {"reference": "Patient/dm01"},
                }
            },
        ],
    }
    server.next_manifest({}, deleted=("Observation/gone1", "Patient/dm07", "Observation/unknown"))
    without = {t: [r for r in rs if patient_of(r) != "dm07"] for t, rs in everything.items()}
    server.next_manifest(without)

    code, text = sync(config)

    run = last_manifest(config)
    assert code == 0, text
    assert run["counts"]["deletedResourcesSeen"] == 3
    assert run["bulk"]["deletionsNotTraced"] == 1  # Observation/unknown: no history to read
    assert run["counts"]["queued"] == 2 and run["counts"]["evaluated"] == 1  # dm01; dm07 is gone
    assert set(screened_at(config)) == {"dm01", "dm02"}
    assert "dm07" not in latest(config)


def test_a_full_run_forgets_a_known_patient_the_export_no_longer_holds(
    server: Server, tmp_path: Path
) -> None:
    everything = example_resources(MEMBERS)
    server.next_manifest(everything)
    config = site(tmp_path, server.fake.base)
    assert sync(config)[0] == 0
    # dm07 leaves the Group and the server; the server lists no deletion (as HAPI): only --full sees it.
    server.fake.routes["/fhir/Group/g1"]["member"] = [
        {"entity": {"reference": f"Patient/{m}"}} for m in MEMBERS if m != "dm07"
    ]
    server.next_manifest({})
    assert sync(config)[0] == 0 and last_manifest(config)["counts"]["evaluated"] == 0
    assert "dm07" in screened_at(config)
    server.next_manifest({t: [r for r in rs if patient_of(r) != "dm07"] for t, rs in everything.items()})

    code, text = sync(config, "--full")

    assert code == 0, text
    assert last_manifest(config)["counts"]["queuedBecause"] == {"full": 4}  # 3 members + dm07 (known)
    assert set(screened_at(config)) == {"dm01", "dm02"}


def test_an_export_with_a_missing_file_screens_nobody_and_keeps_the_watermark(
    server: Server, tmp_path: Path
) -> None:
    # The Conditions do not arrive: screened without them, every patient would fail the gate.
    server.next_manifest(example_resources(MEMBERS), failing="Condition")
    config = site(tmp_path, server.fake.base)

    code, text = sync(config)

    run = last_manifest(config)
    assert code == 3, text
    assert run["counts"]["evaluated"] == 0 and run["watermarkAfter"] is None
    assert screened_at(config) == {}
    with contextlib.closing(sqlite3.connect(config.parent / "state" / "state.sqlite")) as db:
        assert {r[0] for r in db.execute("SELECT id FROM pending")} == set(MEMBERS)  # still queued


def test_a_full_disk_under_the_export_s_working_index_is_not_blamed_on_the_state_file(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_adapter.source.patient_index import PatientIndex

    def full(*args: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    server.next_manifest(example_resources(MEMBERS))
    config = site(tmp_path, server.fake.base)
    monkeypatch.setattr(PatientIndex, "_flush_counts", full)

    code, text = sync(config)

    assert code == 4, text
    assert "the working index of this screen failed (database or disk is full)" in text
    assert "not a usable sync state file" not in text  # before: "restore it from a backup", of a sound file
    monkeypatch.undo()
    server.next_manifest({})  # nothing changed since
    server.next_manifest(example_resources(MEMBERS))  # the records of the patients run 1 left queued
    code, text = sync(config)
    assert code == 0, text  # the state file was sound all along, and kept run 1's queue
    assert last_manifest(config)["counts"]["evaluated"] == len(DM)


def test_a_run_killed_while_the_export_runs_resumes_the_same_job(server: Server, tmp_path: Path) -> None:
    server.next_manifest(example_resources(MEMBERS))
    server.fake.script = [(202, {"Retry-After": "1", "X-Progress": "busy"}, None)]
    config = site(tmp_path, server.fake.base, "export_timeout_seconds = 0.001\n")

    code, text = sync(config)  # gives up polling: the job is kept, as after a kill

    assert code == 4, text
    folder = bulk_folder(config.parent / "state" / "state.sqlite")
    assert len(list(folder.rglob("bulk-job-*.json"))) == 1
    config = site(tmp_path, server.fake.base)
    code, text = sync(config)
    assert code == 0, text
    assert len(server.fake.kick_offs) == 1  # the second run polled the first run's job
    assert last_manifest(config)["counts"]["evaluated"] == len(DM)
    assert not list(folder.rglob("bulk-job-*.json"))


def test_a_large_export_is_read_on_every_core_with_the_verdicts_of_one(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_adapter.source import patient_index

    # The examples are a few kB: let them count as large, cut into pieces, on two cores even where
    # the test runs on one.
    monkeypatch.setattr(patient_index, "AUTO_PARALLEL_BYTES", 0)
    monkeypatch.setattr(patient_index, "PIECE_BYTES", 4096)
    monkeypatch.setattr(patient_index, "available_cores", lambda: 2)
    readers: list[int] = []
    real = patient_index.gate_pieces
    monkeypatch.setattr(patient_index, "gate_pieces", lambda *a, **k: readers.append(a[1]) or real(*a, **k))
    server.next_manifest(example_resources(MEMBERS))
    config = site(tmp_path, server.fake.base)

    code, text = sync(config)

    assert code == 0, text
    assert readers == [2]  # the records' export read on two processes
    files = file_verdicts(DM, tmp_path)
    assert {p: (s["status"], s["criteria"]) for p, s in latest(config).items()} == {
        p: (s["status"], s["criteria"]) for p, s in files.items()
    }
