"""Write-back against servers that ignore search parameters, trim meta, answer writes with the wrong
body or an odd version, or store malformed resources (a fuzzing pass found each of these; each test
fails on the code before its mend). What must hold: another patient's subject is never touched, a
coordinator's change is never overwritten, each version gets its Provenance once, no exit 70."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from faultserver import FaultServer, Reply, outcome, searchset
from fhirdata import HGB

from .faultrun import load_patients, screen
from .test_faults_writeback import assert_one_subject_and_one_provenance_per_version, provenance_targets

SUBJECT = "ResearchSubject"


def subjects(server: FaultServer) -> list[dict[str, Any]]:
    return server.store.all(SUBJECT)


def writes(server: FaultServer, since: int = 0) -> list[str]:
    return [
        f"{r.method} {r.path.split('/')[0]}" for r in server.requests[since:] if r.method in ("POST", "PUT")
    ]


def searched(server: FaultServer, req: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What the store answers a ResearchSubject search (by identifier or study): the subjects and the
    Provenances it includes, for a hook to change before it answers."""
    params = {k: v for k, v in req.query.items() if k in ("identifier", "study")}
    found = server.store.search(SUBJECT, params)
    return found, list(server.store.includes(SUBJECT, found, req.query))


def written_then_ineligible(server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """p1's subject written by a first run, then p1's data changed so that the next run updates it."""
    load_patients(server, "p1")
    assert screen(capsys, server, tmp_path / "r.json", "--write-back").code == 0
    make_ineligible(server)


def make_ineligible(server: FaultServer, pid: str = "p1") -> None:
    """The patient's hemoglobin falls to 70 g/L: the adapter now wants the subject updated."""
    (hgb,) = [
        o
        for o in server.store.all("Observation")
        if o["code"]["coding"][0]["code"] == HGB[1] and o["subject"]["reference"] == f"Patient/{pid}"
    ]
    server.store.put({**hgb, "valueQuantity": {**hgb["valueQuantity"], "value": 70}})


def test_a_subject_search_that_ignores_identifier_never_rewrites_another_patients_subject(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1")
    assert screen(capsys, server, tmp_path / "r.json", "--write-back").code == 0
    load_patients(server, "p3")  # a new candidate: not in the study listing, so searched by identifier

    def every_subject(req: Any) -> Reply | None:
        if "identifier" in req.query and "study" not in req.query:
            found, provenances = subjects(server), server.store.all("Provenance")
            return Reply(json=searchset(found + provenances, include=len(provenances)))
        return None

    server.on("GET", SUBJECT, every_subject, repeat=True)
    for _ in range(2):
        run = screen(capsys, server, tmp_path / "r.json", "--write-back")
        assert run.code == 0, run.err[-2000:]
    owners = sorted((s["identifier"][0]["value"], s["individual"]["reference"]) for s in subjects(server))
    assert owners == [("NCT05495321:p1", "Patient/p1"), ("NCT05495321:p3", "Patient/p3")]
    assert [len(server.store.versions(SUBJECT, s["id"])) for s in subjects(server)] == [1, 1]


def test_a_coordinators_change_between_the_search_and_the_read_is_kept_when_searches_trim_versions(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written_then_ineligible(server, tmp_path, capsys)

    def without_versions(req: Any) -> Reply:
        found, included = searched(server, req)
        for resource in found:
            resource["meta"].pop("versionId", None)
        return Reply(json=searchset(found + included, include=len(included)))

    def coordinator_first(req: Any) -> None:
        (current,) = subjects(server)
        if current["status"] != "on-study":
            server.store.put(
                {**current, "status": "on-study", "meta": {"source": "https://coordinator.example"}}
            )

    server.on("GET", SUBJECT, without_versions, repeat=True)
    server.on("GET", rf"{SUBJECT}/[^/]+", coordinator_first, repeat=True)
    before = len(server.requests)
    run = screen(capsys, server, tmp_path / "r.json", "--write-back")

    assert run.code == 0, run.err[-2000:]
    assert "staff-managed 1" in run.err
    assert writes(server, before) == []
    (kept,) = subjects(server)
    assert kept["status"] == "on-study"


def test_study_and_device_searches_that_ignore_identifier_do_not_borrow_another_trials_resources(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = {"system": "https://clinicaltrials.gov/nctid", "value": "NCT99999999"}
    server.store.put(
        {"resourceType": "ResearchStudy", "id": "other-trial", "identifier": [other], "status": "active"}
    )
    server.store.put(
        {"resourceType": "Device", "id": "analyser", "identifier": [{"system": "urn:lab", "value": "XN"}]}
    )
    load_patients(server, "p1")

    def everything_of_the_type(req: Any) -> Reply | None:
        return Reply(json=searchset(server.store.all(req.path))) if "identifier" in req.query else None

    server.on("GET", r"ResearchStudy|Device", everything_of_the_type, repeat=True)
    run = screen(capsys, server, tmp_path / "r.json", "--write-back")

    assert run.code == 0, run.err[-2000:]
    (written,) = subjects(server)
    assert written["study"]["reference"] != "ResearchStudy/other-trial"
    (provenance,) = server.store.all("Provenance")
    assert provenance["agent"][0]["who"]["reference"] != "Device/analyser"


@pytest.mark.parametrize("status", [409, 412])
def test_a_provenance_refused_with_409_or_412_and_not_stored_is_a_failure_not_taken_as_existing(
    status: int, server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1")
    server.on("POST", "Provenance", Reply(status, json=outcome("conflict")), repeat=True)

    run = screen(capsys, server, tmp_path / "r.json", "--write-back")

    assert run.code == 3
    assert any("Provenance" in e["reason"] and "failed" in e["reason"] for e in (run.result or {})["errors"])
    assert server.store.all("Provenance") == []


@pytest.mark.parametrize(
    "odd",
    [
        {"resourceType": SUBJECT, "id": "odd", "identifier": 7},
        {"resourceType": "Provenance", "id": "odd", "target": 5},
    ],
    ids=["subject-identifier-7", "provenance-target-5"],
)
def test_a_malformed_resource_in_the_study_listing_is_not_an_internal_error(
    odd: dict[str, Any], server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1", "p2")
    assert screen(capsys, server, tmp_path / "r.json", "--write-back").code == 0

    def with_odd(req: Any) -> Reply:
        found, included = searched(server, req)
        included.append(odd)
        return Reply(json=searchset(found + included, include=len(included)))

    server.on("GET", SUBJECT, with_odd, repeat=True)
    before = len(server.requests)
    run = screen(capsys, server, tmp_path / "r.json", "--write-back")

    assert run.code == 0, run.err[-2000:]
    assert "internal error" not in run.err
    assert writes(server, before) == []


def test_entries_a_listing_repeats_are_one_subject_not_a_duplicate_to_merge(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1", "p2")
    assert screen(capsys, server, tmp_path / "r.json", "--write-back").code == 0

    def twice(req: Any) -> Reply:
        found, included = searched(server, req)
        return Reply(json=searchset(found + found + included, include=len(included)))

    server.on("GET", SUBJECT, twice, repeat=True)
    run = screen(capsys, server, tmp_path / "r.json", "--write-back")

    assert run.code == 0, run.err[-2000:]
    assert "unchanged 2" in run.err and "merge them by hand" not in run.err


def test_an_update_answered_with_a_stale_etag_and_no_meta_gets_the_provenance_of_the_stored_version(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written_then_ineligible(server, tmp_path, capsys)

    def stale(req: Any) -> Reply:
        status, stored = server.store.update(req.json(), req.path.split("/")[1], req.headers.get("if-match"))
        if status >= 400:
            return Reply(status, json=stored)
        previous = int(stored["meta"]["versionId"]) - 1
        return Reply(
            status, json={k: v for k, v in stored.items() if k != "meta"}, headers={"ETag": f'W/"{previous}"'}
        )

    server.on("PUT", rf"{SUBJECT}/.+", stale)
    assert screen(capsys, server, tmp_path / "r.json", "--write-back").code == 0
    assert_one_subject_and_one_provenance_per_version(server, 1)
    before = len(server.requests)
    assert screen(capsys, server, tmp_path / "r.json", "--write-back").code == 0
    assert writes(server, before) == []


def test_a_create_answered_with_another_subjects_body_gets_its_own_provenance(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1")
    assert screen(capsys, server, tmp_path / "r.json", "--write-back").code == 0
    load_patients(server, "p2")
    (first,) = subjects(server)

    def create_then_show_another(req: Any) -> Reply:
        status, _ = server.store.create(req.json(), req.headers.get("if-none-exist"))
        return Reply(status, json=server.store.read(SUBJECT, first["id"]))

    server.on("POST", SUBJECT, create_then_show_another)
    assert screen(capsys, server, tmp_path / "r.json", "--write-back").code == 0

    assert_one_subject_and_one_provenance_per_version(server, 2)
    assert len(provenance_targets(server)) == 2


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            lambda r: {**r, "study": {**r["study"], "display": "IL-2 in DM"}},
            "changed the ResearchSubject it stored",
        ),
        (lambda r: {**r, "meta": {}}, "did not keep meta.source"),
    ],
    ids=["adds-a-display", "drops-meta"],
)
def test_a_server_that_alters_what_it_stores_is_told_apart_from_one_that_drops_meta_source(
    change: Any, said: str, server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1")

    def store_altered(req: Any) -> Reply:
        status, stored = server.store.create(change(req.json()), req.headers.get("if-none-exist"))
        return Reply(status, json=stored)

    server.on("POST", SUBJECT, store_altered)
    run = screen(capsys, server, tmp_path / "r.json", "--write-back")

    assert f"the server {said}" in run.err
