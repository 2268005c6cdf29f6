"""ResearchSubject write-back: shapes, validation, idempotence, conflicts, staff-managed subjects."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from responses import matchers

from fhir_adapter import __version__
from fhir_adapter.client.http import FhirClient
from fhir_adapter.config.loader import load_mappings
from fhir_adapter.config.types import Mappings
from fhir_adapter.errors import WriteBackError
from fhir_adapter.model import CriterionResult, Evidence, Status, SubjectResult, Verdict
from fhir_adapter.writeback.subjects import (
    NCT_SYSTEM,
    PROFILE_URL,
    STATE_SYSTEM,
    SUBJECT_ID_SYSTEM,
    XVER_PROGRESS,
    Action,
    WriteBack,
    build_device,
    build_provenance,
    build_research_subject,
    build_study,
    content_of,
    current_state,
    stamped,
    subject_reason,
    validate,
    written_by_adapter,
)

BASE = "https://fhir.example.org/r4"
REPO = Path(__file__).resolve().parents[2]
Res = dict[str, Any]
STUDY_REF = "ResearchStudy/st1"
DEVICE_REF = "Device/dev1"
TOKEN = f"{SUBJECT_ID_SYSTEM}|NCT05495321:p1"
NOW = dt.datetime(2026, 6, 15, 8, 30, tzinfo=dt.UTC)


def criterion(cid: str, ctype: str, verdict: Verdict, *refs: str) -> CriterionResult:
    return CriterionResult(cid, ctype, verdict, "why", tuple(Evidence(r, "detail") for r in refs))


def result(status: Status = Status.POTENTIAL_CANDIDATE) -> SubjectResult:
    criteria = [
        criterion("age", "inclusion", Verdict.MET, "Patient/p1"),
        criterion("diagnosis", "inclusion", Verdict.MET, "Condition/c1"),
        CriterionResult(
            "active-disease",
            "inclusion",
            Verdict.UNKNOWN,
            "missing",
            components=(criterion("mmt8", "component", Verdict.MET, "Observation/o1"),),
        ),
        criterion("anemia", "exclusion", Verdict.NOT_MET, "Observation/o2"),
        criterion("consent", "inclusion", Verdict.NOT_EVALUABLE),
    ]
    if status is Status.INELIGIBLE:
        criteria.append(criterion("thrombocytopenia", "exclusion", Verdict.MET, "Observation/o3"))
    return SubjectResult("Patient/p1", status, tuple(criteria))


VERSIONS = {"Patient/p1": "2", "Condition/c1": "1", "Observation/o1": "5", "Observation/o2": "1"}


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings()


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


@pytest.fixture
def client() -> FhirClient:
    return FhirClient(BASE, sleep=lambda _: None, rng=random.Random(1))


def searchset(*resources: Res) -> Res:
    """Matches, and the Provenances that ``_revinclude=Provenance:target`` brings along as includes."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": sum(r["resourceType"] != "Provenance" for r in resources),
        "entry": [
            {"resource": r, "search": {"mode": "include" if r["resourceType"] == "Provenance" else "match"}}
            for r in resources
        ],
    }


def provenance_of(subject: Res, pid: str = "pv0") -> Res:
    """The adapter's Provenance of ``subject``'s current version, as the server stores it (HAPI strips
    the version from the target; the tag keeps it)."""
    target = f"ResearchSubject/{subject['id']}/_history/{subject['meta']['versionId']}"
    return {
        "resourceType": "Provenance",
        "id": pid,
        "meta": {
            "versionId": "1",
            "tag": [{"system": "https://fhir-adapter.org/provenance-of", "code": target}],
        },
        "target": [{"reference": f"ResearchSubject/{subject['id']}"}],
    }


def on_server(resource: Res, rid: str = "rs1", version: str = "1", *, keep_meta: bool = True) -> Res:
    """``resource`` as a server returns it: id, versionId, our meta.source with the server's '#request-id'."""
    meta = dict(resource.get("meta") or {}) if keep_meta else {}
    if "source" in meta:
        meta["source"] += "#Xq3kRZt0pP"
    meta.update(versionId=version, lastUpdated="2026-06-14T10:00:00Z")
    return {**resource, "id": rid, "meta": meta}


def wanted(status: Status = Status.POTENTIAL_CANDIDATE, release: str = "R4") -> Res:
    return build_research_subject(result(status), "NCT05495321", STUDY_REF, release)  # type: ignore[arg-type]


def writeback(
    client: FhirClient, mappings: Mappings, *, dry_run: bool = False, release: str = "R4"
) -> WriteBack:
    wb = WriteBack(client, mappings.trial, "2026.11.1+abc", release, dry_run=dry_run, clock=lambda: NOW)  # type: ignore[arg-type]
    # prepare() is covered by its own tests; most tests start from a known study and Device.
    wb._study_ref = STUDY_REF
    wb._device_ref = DEVICE_REF
    return wb


def search_subject(mocked: responses.RequestsMock, *resources: Res) -> None:
    mocked.get(
        f"{BASE}/ResearchSubject",
        json=searchset(*resources),
        match=[matchers.query_param_matcher({"identifier": TOKEN, "_revinclude": "Provenance:target"})],
    )


def body(call: Any) -> Res:
    return json.loads(call.request.body)  # type: ignore[no-any-return]


def created(resource_type: str, rid: str, version: str = "1") -> dict[str, Any]:
    def reply(request: Any) -> tuple[int, dict[str, str], str]:
        sent = json.loads(request.body)
        return (
            201,
            {"ETag": f'W/"{version}"', "Location": f"{BASE}/{resource_type}/{rid}/_history/{version}"},
            json.dumps(on_server(sent, rid, version)),
        )

    return {"callback": reply}


# -- shapes and validation ---------------------------------------------------------------------------


def test_reason_names_failing_and_unknown_criteria_but_not_components() -> None:
    assert subject_reason(result(Status.INELIGIBLE)) == "failing: thrombocytopenia; unknown: active-disease"
    assert subject_reason(result()) == "unknown: active-disease"


def test_r4_subject_has_status_identifier_study_individual_and_xver_progress() -> None:
    rs = wanted(Status.INELIGIBLE)

    assert rs["status"] == "ineligible"
    assert rs["identifier"] == [{"system": SUBJECT_ID_SYSTEM, "value": "NCT05495321:p1"}]
    assert rs["study"] == {"reference": STUDY_REF}
    assert rs["individual"] == {"reference": "Patient/p1"}
    (ext,) = rs["extension"]
    assert ext["url"] == XVER_PROGRESS
    parts = {e["url"]: e["valueCodeableConcept"] for e in ext["extension"]}
    assert parts["subjectState"]["coding"] == [{"system": STATE_SYSTEM, "code": "ineligible"}]
    assert parts["reason"]["text"] == "failing: thrombocytopenia; unknown: active-disease"


def test_r5_subject_is_active_with_state_and_reason_in_progress() -> None:
    rs = wanted(Status.CANDIDATE, "R5")

    assert rs["status"] == "active"
    assert rs["subject"] == {"reference": "Patient/p1"}
    assert "individual" not in rs and "extension" not in rs
    (progress,) = rs["progress"]
    assert progress["subjectState"]["coding"] == [{"system": STATE_SYSTEM, "code": "candidate"}]
    assert progress["reason"]["text"] == "unknown: active-disease"
    assert current_state(rs, "R5") == "candidate"


@pytest.mark.parametrize("release", ["R4", "R5"])
def test_built_resources_validate_with_fhir_resources(release: str) -> None:
    rs = stamped(wanted(release=release))
    provenance = build_provenance(
        target="ResearchSubject/rs1/_history/1",
        subject=result(),
        versions=VERSIONS,
        device_ref=DEVICE_REF,
        recorded=NOW,
        rules_version="2026.11.1+abc",
        activity="CREATE",
        study="NCT05495321",
    )
    for resource in (rs, provenance, build_device(release), build_study_for_test()):  # type: ignore[arg-type]
        validate(resource, release)  # type: ignore[arg-type]


def build_study_for_test() -> Res:
    return build_study(load_mappings().trial)


def test_validation_rejects_a_malformed_subject() -> None:
    rs = wanted()
    del rs["individual"]
    with pytest.raises(WriteBackError, match="individual"):
        validate(rs, "R4")
    r5 = wanted(release="R5")
    r5["individual"] = {"reference": "Patient/p1"}  # the R4 name is unknown in R5
    with pytest.raises(WriteBackError):
        validate(r5, "R5")


def test_validation_rejects_a_state_the_adapter_never_sets() -> None:
    rs = {**wanted(), "status": "on-study"}
    with pytest.raises(WriteBackError, match="never sets"):
        validate(rs, "R4")


def test_provenance_versions_the_target_and_every_evidence_entity() -> None:
    provenance = build_provenance(
        target="ResearchSubject/rs1/_history/3",
        subject=result(),
        versions=VERSIONS,
        device_ref=DEVICE_REF,
        recorded=NOW,
        rules_version="2026.11.1+abc",
        activity="UPDATE",
        study="NCT05495321",
    )

    assert provenance["target"] == [{"reference": "ResearchSubject/rs1/_history/3"}]
    assert [e["what"]["reference"] for e in provenance["entity"]] == [
        "Condition/c1/_history/1",
        "Observation/o1/_history/5",  # from a component
        "Observation/o2/_history/1",
        "Patient/p1/_history/2",
    ]
    assert provenance["agent"][0]["who"] == {"reference": DEVICE_REF}
    assert provenance["recorded"] == "2026-06-15T08:30:00.000Z"
    assert provenance["policy"] == ["urn:fhir-adapter:rules:NCT05495321:2026.11.1+abc"]


def test_device_carries_the_adapter_version() -> None:
    for release in ("R4", "R5"):
        device = build_device(release)  # type: ignore[arg-type]
        assert device["version"] == [{"value": __version__}]
        assert device["identifier"][0]["value"] == f"fhir-adapter/{__version__}"


def test_stamp_is_recognised_only_while_the_content_matches_it() -> None:
    mine = on_server(stamped(wanted()))
    assert written_by_adapter(mine)
    edited = {**mine, "status": "ineligible"}  # a tool that GETs, edits and PUTs back our meta
    assert not written_by_adapter(edited)
    assert not written_by_adapter(on_server(wanted(), keep_meta=False))


def test_r5_state_is_the_latest_progress_entry() -> None:
    rs = wanted(release="R5")
    rs["progress"] = [
        {
            "subjectState": {"coding": [{"system": STATE_SYSTEM, "code": "on-study"}]},
            "startDate": "2026-05-01",
        },
        {
            "subjectState": {"coding": [{"system": STATE_SYSTEM, "code": "candidate"}]},
            "startDate": "2026-01-01",
        },
    ]
    assert current_state(rs, "R5") == "on-study"


def test_profile_requires_our_identifier_status_subset_study_and_individual() -> None:
    from fhir.resources.R4B.structuredefinition import StructureDefinition

    path = REPO / "profiles" / "StructureDefinition-fhir-adapter-researchsubject.json"
    sd = json.loads(path.read_text(encoding="utf-8"))
    StructureDefinition.model_validate(sd)
    assert sd["url"] == PROFILE_URL
    elements = {e["id"]: e for e in sd["differential"]["element"]}
    assert elements["ResearchSubject.identifier"]["min"] == 1
    assert elements["ResearchSubject.identifier:adapter.system"]["fixedUri"] == SUBJECT_ID_SYSTEM
    assert elements["ResearchSubject.identifier:adapter"]["min"] == 1
    assert elements["ResearchSubject.study"]["min"] == 1
    assert elements["ResearchSubject.individual"]["min"] == 1
    status = elements["ResearchSubject.status"]
    assert status["min"] == 1
    expression = status["constraint"][0]["expression"]
    for code in ("candidate", "potential-candidate", "ineligible"):
        assert f"'{code}'" in expression
    assert elements["ResearchSubject.extension:progress"]["type"][0]["profile"] == [XVER_PROGRESS]


# -- talking to the server ---------------------------------------------------------------------------


def test_create_sends_if_none_exist_and_a_provenance_for_the_new_version(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    search_subject(mocked)
    post_subject = mocked.add_callback(
        responses.POST,
        f"{BASE}/ResearchSubject",
        match=[matchers.header_matcher({"If-None-Exist": f"identifier={TOKEN}"})],
        **created("ResearchSubject", "rs1"),
    )
    post_prov = mocked.add_callback(responses.POST, f"{BASE}/Provenance", **created("Provenance", "pv1"))

    outcome = writeback(client, mappings).write(result(), VERSIONS)

    assert outcome.action is Action.CREATED
    assert outcome.reference == "ResearchSubject/rs1/_history/1"
    assert post_subject.call_count == 1
    sent = body(mocked.calls[1])
    assert content_of(sent) == wanted()
    assert sent["meta"]["tag"] == [{"system": "https://fhir-adapter.org/tags", "code": "written-by-adapter"}]
    assert written_by_adapter(sent)
    assert post_prov.call_count == 1
    provenance = body(mocked.calls[2])
    assert provenance["target"] == [{"reference": "ResearchSubject/rs1/_history/1"}]
    assert provenance["activity"]["coding"][0]["code"] == "CREATE"


def test_unchanged_subject_is_not_written(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    current = on_server(stamped(wanted()), version="4")
    search_subject(mocked, current, provenance_of(current))

    outcome = writeback(client, mappings).write(result(), VERSIONS)

    assert outcome.action is Action.UNCHANGED
    assert [c.request.method for c in mocked.calls] == ["GET"]


def test_changed_subject_is_updated_with_if_match_of_the_version_read(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    search_subject(mocked, on_server(stamped(wanted(Status.CANDIDATE)), version="2"))
    put = mocked.put(
        f"{BASE}/ResearchSubject/rs1",
        json=on_server(stamped(wanted()), version="3"),
        headers={"ETag": 'W/"3"'},
        match=[matchers.header_matcher({"If-Match": 'W/"2"'})],
    )
    mocked.add_callback(responses.POST, f"{BASE}/Provenance", **created("Provenance", "pv1"))

    outcome = writeback(client, mappings).write(result(), VERSIONS)

    assert outcome.action is Action.UPDATED
    assert outcome.detail == "candidate -> potential-candidate"
    assert outcome.reference == "ResearchSubject/rs1/_history/3"
    assert put.call_count == 1
    assert body(mocked.calls[1])["id"] == "rs1"
    assert body(mocked.calls[2])["activity"]["coding"][0]["code"] == "UPDATE"


@pytest.mark.parametrize("conflict", [412, 409])
def test_conflict_on_update_rereads_and_retries_with_the_new_version(
    conflict: int, mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    outcome_body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "conflict"}]}
    # Another adapter run wrote v3 (still ours, still different from what this run wants).
    mocked.get(
        f"{BASE}/ResearchSubject", json=searchset(on_server(stamped(wanted(Status.CANDIDATE)), version="2"))
    )
    mocked.get(
        f"{BASE}/ResearchSubject", json=searchset(on_server(stamped(wanted(Status.INELIGIBLE)), version="3"))
    )
    mocked.put(f"{BASE}/ResearchSubject/rs1", status=conflict, json=outcome_body)
    mocked.put(
        f"{BASE}/ResearchSubject/rs1",
        json=on_server(stamped(wanted()), version="4"),
        headers={"ETag": 'W/"4"'},
    )
    mocked.add_callback(responses.POST, f"{BASE}/Provenance", **created("Provenance", "pv1"))

    outcome = writeback(client, mappings).write(result(), VERSIONS)

    assert outcome.action is Action.UPDATED
    assert outcome.reference == "ResearchSubject/rs1/_history/4"
    if_match = [c.request.headers.get("If-Match") for c in mocked.calls if c.request.method == "PUT"]
    assert if_match == ['W/"2"', 'W/"3"']
    assert [c.request.method for c in mocked.calls] == ["GET", "PUT", "GET", "PUT", "POST"]


def test_conflict_then_staff_change_leaves_the_subject_alone(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    mocked.get(
        f"{BASE}/ResearchSubject", json=searchset(on_server(stamped(wanted(Status.CANDIDATE)), version="2"))
    )
    staff = {**content_of(wanted()), "status": "screening"}
    mocked.get(f"{BASE}/ResearchSubject", json=searchset(on_server(staff, version="3", keep_meta=False)))
    mocked.put(f"{BASE}/ResearchSubject/rs1", status=412)

    outcome = writeback(client, mappings).write(result(), VERSIONS)

    assert outcome.action is Action.STAFF
    assert outcome.detail == "status screening"
    assert [c.request.method for c in mocked.calls] == ["GET", "PUT", "GET"]


def test_endless_conflicts_give_up_after_a_bounded_number_of_attempts(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    mocked.get(
        f"{BASE}/ResearchSubject", json=searchset(on_server(stamped(wanted(Status.CANDIDATE)), version="2"))
    )
    mocked.put(f"{BASE}/ResearchSubject/rs1", status=412)

    outcome = writeback(client, mappings).write(result(), VERSIONS)

    assert outcome.action is Action.FAILED
    assert "gave up after 3 attempts" in outcome.detail
    assert sum(c.request.method == "PUT" for c in mocked.calls) == 3


@pytest.mark.parametrize("status", ["on-study", "screening", "eligible", "withdrawn"])
def test_subject_in_a_state_set_by_staff_is_not_written(
    status: str, mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    staff = on_server({**content_of(wanted()), "status": status}, keep_meta=False)
    search_subject(mocked, staff)

    outcome = writeback(client, mappings).write(result(Status.INELIGIBLE), VERSIONS)

    assert outcome.action is Action.STAFF
    assert outcome.detail == f"status {status}"
    assert [c.request.method for c in mocked.calls] == ["GET"]


def test_subject_last_written_by_staff_is_not_written_even_in_an_adapter_state(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    # A coordinator set "ineligible" by hand; HAPI even carries our tag forward onto their version.
    staff = on_server({**content_of(wanted()), "status": "ineligible"}, keep_meta=False)
    staff["meta"]["tag"] = [{"system": "https://fhir-adapter.org/tags", "code": "written-by-adapter"}]
    staff["meta"]["source"] = "#hapiRequestId"
    search_subject(mocked, staff)

    outcome = writeback(client, mappings).write(result(Status.CANDIDATE), VERSIONS)

    assert outcome.action is Action.STAFF
    assert outcome.detail == "latest version not written by the adapter"
    assert [c.request.method for c in mocked.calls] == ["GET"]


def test_r5_subject_with_a_staff_state_is_not_written(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    r5 = wanted(release="R5")
    r5["progress"].append({"subjectState": {"coding": [{"system": STATE_SYSTEM, "code": "on-study"}]}})
    search_subject(mocked, on_server(stamped(r5)))

    outcome = writeback(client, mappings, release="R5").write(result(), VERSIONS)

    assert outcome.action is Action.STAFF
    assert outcome.detail == "subjectState on-study"


def test_r5_create_sends_the_r5_shape(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    search_subject(mocked)
    mocked.add_callback(responses.POST, f"{BASE}/ResearchSubject", **created("ResearchSubject", "rs1"))
    mocked.add_callback(responses.POST, f"{BASE}/Provenance", **created("Provenance", "pv1"))

    outcome = writeback(client, mappings, release="R5").write(result(), VERSIONS)

    assert outcome.action is Action.CREATED
    sent = body(mocked.calls[1])
    assert sent["status"] == "active"
    assert sent["progress"][0]["subjectState"]["coding"][0]["code"] == "potential-candidate"
    assert sent["subject"] == {"reference": "Patient/p1"}


def test_losing_a_concurrent_create_rereads_and_finds_the_winner_unchanged(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    winner = on_server(stamped(wanted()))
    mocked.get(f"{BASE}/ResearchSubject", json=searchset())
    mocked.get(f"{BASE}/ResearchSubject", json=searchset(winner, provenance_of(winner)))
    mocked.post(f"{BASE}/ResearchSubject", status=409, json={"resourceType": "OperationOutcome", "issue": []})

    outcome = writeback(client, mappings).write(result(), VERSIONS)

    assert outcome.action is Action.UNCHANGED
    assert [c.request.method for c in mocked.calls] == ["GET", "POST", "GET"]


def test_conditional_create_answering_200_is_treated_as_existing(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    existing = on_server(stamped(wanted()))
    mocked.get(f"{BASE}/ResearchSubject", json=searchset())
    mocked.get(f"{BASE}/ResearchSubject", json=searchset(existing, provenance_of(existing)))
    mocked.post(f"{BASE}/ResearchSubject", status=200, json=existing, headers={"ETag": 'W/"1"'})

    outcome = writeback(client, mappings).write(result(), VERSIONS)

    assert outcome.action is Action.UNCHANGED
    assert [c.request.method for c in mocked.calls] == ["GET", "POST", "GET"]  # no Provenance written


def test_duplicate_subjects_for_one_identifier_fail_without_writing(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    search_subject(mocked, on_server(stamped(wanted()), "a"), on_server(stamped(wanted()), "b"))

    outcome = writeback(client, mappings).write(result(), VERSIONS)

    assert outcome.action is Action.FAILED
    assert "2 ResearchSubjects share identifier" in outcome.detail


def test_rejected_write_is_a_failed_outcome_not_an_exception(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    search_subject(mocked)
    outcome_body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": "Unknown code"}],
    }
    mocked.post(f"{BASE}/ResearchSubject", status=422, json=outcome_body)

    outcome = writeback(client, mappings).write(result(), VERSIONS)

    assert outcome.action is Action.FAILED
    assert outcome.detail == "HTTP 422 on POST ResearchSubject: error/invalid"
    # Server text may quote patient data: kept apart, for the result file only.
    assert "Unknown code" not in outcome.detail and "Unknown code" not in outcome.describe()
    assert outcome.server_text == "error/invalid: Unknown code"


def test_dry_run_reads_only_and_says_what_it_would_do(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    mocked.get(f"{BASE}/ResearchSubject", json=searchset())
    mocked.get(f"{BASE}/ResearchSubject", json=searchset(on_server(stamped(wanted(Status.CANDIDATE)))))
    wb = writeback(client, mappings, dry_run=True)

    first = wb.write(result(), VERSIONS)
    second = wb.write(result(), VERSIONS)

    assert first.describe() == "Patient/p1: would create ResearchSubject (potential-candidate)"
    assert second.describe() == "Patient/p1: would update ResearchSubject (candidate -> potential-candidate)"
    assert {c.request.method for c in mocked.calls} == {"GET"}


def test_prepare_reuses_a_study_under_an_older_nct_system_and_ensures_the_device_once(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    old = {
        "resourceType": "ResearchStudy",
        "id": "legacy",
        "status": "active",
        "identifier": [{"system": "http://clinicaltrials.gov", "value": "NCT05495321"}],
    }
    mocked.get(f"{BASE}/ResearchStudy", json=searchset(old))
    mocked.get(f"{BASE}/Device", json=searchset())
    device_token = f"https://fhir-adapter.org/device-id|fhir-adapter/{__version__}"
    mocked.post(
        f"{BASE}/Device",
        status=200,
        json={**build_device("R4"), "id": "dev9", "meta": {"versionId": "1"}},
        match=[matchers.header_matcher({"If-None-Exist": f"identifier={device_token}"})],
    )
    wb = WriteBack(client, mappings.trial, "x", "R4", dry_run=False)

    wb.prepare()

    assert wb.study_ref == "ResearchStudy/legacy"
    searched = mocked.calls[0].request.url
    assert "https%3A%2F%2Fclinicaltrials.gov%2Fnctid%7CNCT05495321" in searched


def test_prepare_creates_the_study_conditionally_when_none_exists(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    mocked.get(f"{BASE}/ResearchStudy", json=searchset())
    mocked.get(f"{BASE}/Device", json=searchset())
    mocked.add_callback(
        responses.POST,
        f"{BASE}/ResearchStudy",
        match=[matchers.header_matcher({"If-None-Exist": f"identifier={NCT_SYSTEM}|NCT05495321"})],
        **created("ResearchStudy", "st7"),
    )
    mocked.add_callback(responses.POST, f"{BASE}/Device", **created("Device", "dev1"))
    wb = WriteBack(client, mappings.trial, "x", "R4", dry_run=False)

    wb.prepare()

    assert wb.study_ref == "ResearchStudy/st7"
    assert mocked.calls[1].request.method == "POST"
    assert body(mocked.calls[1])["identifier"][0] == {
        "use": "official",
        "system": NCT_SYSTEM,
        "value": "NCT05495321",
    }
