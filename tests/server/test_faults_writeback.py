"""Issue 8, class 3: ambiguous write outcomes never duplicate and never lose a Provenance.

A write that was stored but answered with a 5xx, never answered, or cut off is re-read by its identifier
before anything is resent; a ResearchSubject version without our Provenance is work to do in every
``screen --write-back``; Provenance writes are keyed by a tag on the versioned target, so a resend
cannot make a second one; a server that ignores ``If-None-Exist`` does not get duplicates either.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faultserver import FaultServer, Reply, Reset, Silence, Stored, outcome
from fhirdata import HGB

from fhir_adapter.writeback.resources import PROVENANCE_TAG_SYSTEM

from .faultrun import load_patients, screen

SUBJECT = "ResearchSubject"
PROVENANCE = "Provenance"


def provenance_targets(server: FaultServer) -> list[str]:
    return sorted(
        t["code"]
        for p in server.store.all(PROVENANCE)
        for t in p["meta"].get("tag", [])
        if t["system"] == PROVENANCE_TAG_SYSTEM
    )


def versions_of_subjects(server: FaultServer) -> list[str]:
    return sorted(
        f"ResearchSubject/{s['id']}/_history/{v['meta']['versionId']}"
        for s in server.store.all(SUBJECT)
        for v in server.store.versions(SUBJECT, s["id"])
    )


def assert_one_subject_and_one_provenance_per_version(server: FaultServer, patients: int) -> None:
    assert len(server.store.all(SUBJECT)) == patients
    assert provenance_targets(server) == versions_of_subjects(server)
    assert len(server.store.all(PROVENANCE)) == len(versions_of_subjects(server))


LOST_ANSWERS = {
    "500": Reply(500, json=outcome("exception")),
    "502": Reply(502),
    "silence": Silence(),
    "reset": Reset(),
}
WRITE_ARGS = ("--write-back", "--timeout", "1")


@pytest.mark.parametrize("lost", sorted(LOST_ANSWERS))
def test_a_subject_stored_but_answered_badly_is_found_again_not_created_twice(
    lost: str, server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_retries: None
) -> None:
    load_patients(server, "p1", "p2")
    server.on("POST", SUBJECT, Stored(then=LOST_ANSWERS[lost]))

    run = screen(capsys, server, tmp_path / "r.json", *WRITE_ARGS)

    assert run.code == 0, run.err[-3000:]
    assert_one_subject_and_one_provenance_per_version(server, 2)
    assert "created 2, updated 0, unchanged 0" in run.err
    assert run.seconds < 30


@pytest.mark.parametrize("lost", sorted(LOST_ANSWERS))
def test_a_server_ignoring_if_none_exist_still_ends_with_one_subject(
    lost: str, server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_retries: None
) -> None:
    server.store.honour_if_none_exist = False
    load_patients(server, "p1")
    server.on("POST", SUBJECT, Stored(then=LOST_ANSWERS[lost]))

    first = screen(capsys, server, tmp_path / "r.json", *WRITE_ARGS)
    second = screen(capsys, server, tmp_path / "r.json", *WRITE_ARGS)

    assert (first.code, second.code) == (0, 0)
    assert_one_subject_and_one_provenance_per_version(server, 1)
    # Searched first, the study and the Device are not duplicated by a second run either.
    assert len(server.store.all("ResearchStudy")) == 1
    assert len(server.store.all("Device")) == 1


@pytest.mark.parametrize("lost", sorted(LOST_ANSWERS))
def test_a_provenance_stored_but_answered_badly_is_not_written_twice(
    lost: str, server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_retries: None
) -> None:
    server.store.honour_if_none_exist = False  # the tag search alone must prevent the duplicate
    load_patients(server, "p1")
    server.on("POST", PROVENANCE, Stored(then=LOST_ANSWERS[lost]))

    run = screen(capsys, server, tmp_path / "r.json", *WRITE_ARGS)

    assert run.code == 0, run.err[-3000:]
    assert_one_subject_and_one_provenance_per_version(server, 1)


def test_an_update_stored_but_answered_with_500_gets_its_provenance_once(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_retries: None
) -> None:
    load_patients(server, "p1")
    assert screen(capsys, server, tmp_path / "r.json", "--write-back").code == 0
    (hgb,) = [o for o in server.store.all("Observation") if o["code"]["coding"][0]["code"] == HGB[1]]
    server.store.put({**hgb, "valueQuantity": {**hgb["valueQuantity"], "value": 70}})  # anemia: ineligible
    server.on("PUT", r"ResearchSubject/.+", Stored(then=Reply(500)), Stored(then=Reply(503)))

    run = screen(capsys, server, tmp_path / "r.json", "--write-back")

    assert run.code == 0, run.err[-3000:]
    (subject,) = server.store.all(SUBJECT)
    assert subject["status"] == "ineligible"
    assert subject["meta"]["versionId"] == "2"  # the resent PUT (If-Match v1) did not make a v3
    assert_one_subject_and_one_provenance_per_version(server, 1)
    # The client resent the PUT (If-Match v1: refused, 409); the re-read found our v2 without its
    # Provenance and wrote it.
    assert "missing Provenance written 1" in run.err


def test_a_subject_left_without_its_provenance_gets_it_from_the_next_screen(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_retries: None
) -> None:
    load_patients(server, "p1", "p2")
    server.on("POST", PROVENANCE, Reply(500), Reply(500), Reply(500), Reply(500), Reply(500), Reply(500))

    first = screen(capsys, server, tmp_path / "r.json", "--write-back")
    assert first.code == 3  # the subjects were written, their Provenances failed: said so
    assert len(server.store.all(SUBJECT)) == 2
    assert server.store.all(PROVENANCE) == []

    second = screen(capsys, server, tmp_path / "r.json", "--write-back")
    assert second.code == 0
    assert "missing Provenance written 2" in second.err
    assert_one_subject_and_one_provenance_per_version(server, 2)

    third = screen(capsys, server, tmp_path / "r.json", "--write-back")
    assert third.code == 0 and "missing Provenance" not in third.err
    assert_one_subject_and_one_provenance_per_version(server, 2)
    # The study, the Device, 2 subjects, 6 failed Provenance attempts, 2 repaired ones; nothing after.
    assert len([r for r in server.requests if r.method in ("POST", "PUT")]) == 2 + 2 + 6 + 2


def test_a_dry_run_says_a_provenance_is_missing_and_writes_nothing(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1")
    server.on("POST", PROVENANCE, Reply(500), Reply(500), Reply(500))
    screen(capsys, server, tmp_path / "r.json", "--write-back")
    before = len(server.requests_to("POST", ".*"))

    run = screen(capsys, server, tmp_path / "r.json")

    assert "would write the missing Provenance of its current version" in run.err
    assert len(server.requests_to("POST", ".*")) == before


def test_a_write_refused_with_a_4xx_is_not_resent(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1")
    server.on("POST", SUBJECT, Reply(422, json=outcome("invalid")), repeat=True)

    run = screen(capsys, server, tmp_path / "r.json", "--write-back")

    assert run.code == 3
    assert len(server.requests_to("POST", SUBJECT)) == 1
    assert server.store.all(SUBJECT) == []


def test_an_outcome_that_stays_unknown_gives_up_after_bounded_attempts(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_retries: None
) -> None:
    load_patients(server, "p1", "p2")
    server.on("POST", SUBJECT, Reply(500), Reply(500), Reply(500))  # p1's three attempts, none stored

    run = screen(capsys, server, tmp_path / "r.json", "--write-back")

    assert run.code == 3
    assert "outcome stayed unknown after 3 attempt(s)" in run.errors_for("Patient/p1")[0]["reason"]
    assert len(server.store.all(SUBJECT)) == 1  # p2's
    # The study's listing once; each p1 attempt re-read first; p2 once (not in the listing).
    assert len(server.requests_to("GET", SUBJECT)) == 1 + 3 + 1
