"""Reading candidates and records from a server: strategy choice, requests, paging, record shape."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from responses import matchers

from fhir_adapter.client.http import FhirClient
from fhir_adapter.config.loader import load_mappings
from fhir_adapter.config.types import Mappings
from fhir_adapter.screening import Screener
from fhir_adapter.source.candidates import (
    find_candidates,
    given_patients,
    group_members,
    search_tokens,
)
from fhir_adapter.source.patient_index import PatientIndex
from fhir_adapter.source.records import build_record, choose_strategy, fetch_record

BASE = "https://fhir.example.org/r4"
AS_OF = dt.date(2026, 6, 15)
# What the shipped trial's criteria read (Screener.needed_types): the types a record is fetched for.
TYPES = Screener([load_mappings()], AS_OF).needed_types
Res = dict[str, Any]
SCT = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
DM = (SCT, "396230008")


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings()


def patient(id: str = "p1") -> Res:
    return {"resourceType": "Patient", "id": id, "birthDate": "1980-03-02", "gender": "female"}


def condition(code: tuple[str, str] = DM, display: str | None = None, pid: str = "p1", id: str = "c1") -> Res:
    coding = {"system": code[0], "code": code[1]} | ({"display": display} if display else {})
    return {
        "resourceType": "Condition",
        "id": id,
        "code": {"coding": [coding]},
        "subject": {"reference": f"Patient/{pid}"},
    }


def observation(id: str, loinc: str, value: float, unit: str, pid: str = "p1") -> Res:
    return {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2026-06-01",
        "valueQuantity": {"value": value, "unit": unit},
    }


def medication(id: str, name: str) -> Res:
    return {"resourceType": "Medication", "id": id, "code": {"text": name}}


def med_request(id: str, medication_ref: str, pid: str = "p1") -> Res:
    return {
        "resourceType": "MedicationRequest",
        "id": id,
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "medicationReference": {"reference": medication_ref},
        "authoredOn": "2026-06-01",
    }


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


@pytest.fixture
def client() -> FhirClient:
    return FhirClient(BASE, sleep=lambda _: None, rng=random.Random(1))


def bundle(resources: list[Res], next_url: str | None = None, includes: tuple[Res, ...] = ()) -> Res:
    links = [{"relation": "self", "url": f"{BASE}/x"}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    entries = [{"resource": r, "search": {"mode": "match"}} for r in resources]
    entries += [{"resource": r, "search": {"mode": "include"}} for r in includes]
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries}


def versioned(resource: Res, version: str = "1") -> Res:
    return {**resource, "meta": {"versionId": version, "lastUpdated": "2026-06-01T00:00:00Z"}}


def capability(*, resource_op: bool = False, rest_op: bool = False, definition_only: bool = False) -> Res:
    patient_res: Res = {"type": "Patient", "interaction": [{"code": "read"}]}
    op = (
        {"name": "whatever", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}
        if definition_only
        else {
            "name": "everything",
            "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
        }
    )
    if resource_op:
        patient_res["operation"] = [op]
    rest: Res = {"mode": "server", "resource": [patient_res]}
    if rest_op:
        rest["operation"] = [op]
    return {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "rest": [rest]}


# -- strategy --------------------------------------------------------------------------------------


def test_everything_chosen_when_patient_resource_lists_the_operation() -> None:
    assert choose_strategy(capability(resource_op=True)) == "everything"


def test_everything_chosen_when_only_rest_level_lists_the_operation() -> None:
    assert choose_strategy(capability(rest_op=True)) == "everything"


def test_everything_recognised_by_its_definition_url_under_another_name() -> None:
    assert choose_strategy(capability(resource_op=True, definition_only=True)) == "everything"


def test_typed_searches_chosen_when_everything_is_not_offered() -> None:
    assert choose_strategy(capability()) == "typed"


def test_client_mode_rest_entries_do_not_count_as_server_support() -> None:
    cap = capability(rest_op=True)
    cap["rest"][0]["mode"] = "client"
    assert choose_strategy(cap) == "typed"


# -- fetching one record ---------------------------------------------------------------------------


def dm_patient(pid: str = "p1") -> tuple[list[Res], Res]:
    """A DM patient with labs and a prednisone order referencing a Medication resource."""
    med = medication("pred5", "predniSONE 5 MG Oral Tablet")
    rx = med_request("rx1", "Medication/pred5", pid)
    record = [
        patient(pid),
        condition(pid=pid),
        observation("o1", "718-7", 120, "g/L", pid),
        observation("o2", "2157-6", 980, "U/L", pid),
        rx,
    ]
    return [versioned(r, str(n % 3 + 1)) for n, r in enumerate(record)], versioned(med, "4")


def test_everything_fetches_the_record_in_one_request(
    mocked: responses.RequestsMock, client: FhirClient
) -> None:
    resources, med = dm_patient()
    other = versioned(patient(id="p2"))
    practitioner = {"resourceType": "Practitioner", "id": "dr1"}
    mocked.get(f"{BASE}/Patient/p1/$everything", json=bundle([*resources, other, practitioner, med]))

    fetched = fetch_record(client, "p1", "everything", TYPES)

    assert fetched is not None
    assert fetched.requests == 1
    record = fetched.record
    assert record.patient is not None and record.patient["id"] == "p1"
    assert "Practitioner" not in record.resources
    assert record.medications == {"Medication/pred5": med}
    assert fetched.versions["Medication/pred5"] == "4"
    assert fetched.versions["MedicationRequest/rx1"] == resources[-1]["meta"]["versionId"]
    assert "Patient/p2" not in fetched.versions


def test_typed_fallback_searches_each_used_type_with_medication_includes(
    mocked: responses.RequestsMock, client: FhirClient
) -> None:
    resources, med = dm_patient()
    by_type: dict[str, list[Res]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    mocked.get(f"{BASE}/Patient/p1", json=by_type.pop("Patient")[0])
    searched = [
        "AllergyIntolerance",
        "Condition",
        "Encounter",
        "MedicationAdministration",
        "MedicationRequest",
        "MedicationStatement",
        "Observation",
    ]
    for rtype in searched:
        includes = (med,) if rtype == "MedicationRequest" else []
        mocked.get(f"{BASE}/{rtype}", json=bundle(by_type.get(rtype, []), includes=includes))

    fetched = fetch_record(client, "p1", "typed", TYPES)

    assert fetched is not None
    assert fetched.requests == 1 + len(searched)
    queries = {
        urlsplit(c.request.url).path.rsplit("/", 1)[-1]: parse_qs(urlsplit(c.request.url).query)
        for c in mocked.calls
    }
    for rtype in searched:
        assert queries[rtype]["patient"] == ["p1"]
    assert queries["MedicationRequest"]["_include"] == ["MedicationRequest:medication"]
    assert queries["MedicationStatement"]["_include"] == ["MedicationStatement:medication"]
    assert "_include" not in queries["Observation"]
    assert fetched.record.medications == {"Medication/pred5": med}


def test_everything_and_typed_searches_build_the_same_record(
    mocked: responses.RequestsMock, client: FhirClient
) -> None:
    resources, med = dm_patient()
    mocked.get(f"{BASE}/Patient/p1/$everything", json=bundle([*resources, med]))
    mocked.get(f"{BASE}/Patient/p1", json=resources[0])
    for rtype in ("AllergyIntolerance", "Encounter", "MedicationAdministration", "MedicationStatement"):
        mocked.get(f"{BASE}/{rtype}", json=bundle([]))
    mocked.get(f"{BASE}/Condition", json=bundle([r for r in resources if r["resourceType"] == "Condition"]))
    mocked.get(
        f"{BASE}/Observation", json=bundle([r for r in resources if r["resourceType"] == "Observation"])
    )
    mocked.get(
        f"{BASE}/MedicationRequest",
        json=bundle([r for r in resources if r["resourceType"] == "MedicationRequest"], includes=(med,)),
    )

    via_everything = fetch_record(client, "p1", "everything", TYPES)
    via_typed = fetch_record(client, "p1", "typed", TYPES)

    assert via_everything is not None and via_typed is not None
    assert via_everything.record == via_typed.record
    assert via_everything.versions == via_typed.versions


def test_medication_missing_from_everything_is_fetched_by_id(
    mocked: responses.RequestsMock, client: FhirClient
) -> None:
    resources, med = dm_patient()
    mocked.get(f"{BASE}/Patient/p1/$everything", json=bundle(resources))
    mocked.get(
        f"{BASE}/Medication",
        json=bundle([med]),
        match=[matchers.query_param_matcher({"_id": "pred5", "_count": "50"})],
    )

    fetched = fetch_record(client, "p1", "everything", TYPES)

    assert fetched is not None
    assert fetched.requests == 2
    assert fetched.record.medications == {"Medication/pred5": med}


def test_unknown_patient_gives_none(mocked: responses.RequestsMock, client: FhirClient) -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}
    mocked.get(f"{BASE}/Patient/nobody/$everything", status=404, json=outcome)
    mocked.get(f"{BASE}/Patient/nobody", status=404, json=outcome)

    assert fetch_record(client, "nobody", "everything", TYPES) is None
    assert fetch_record(client, "nobody", "typed", TYPES) is None


def test_record_from_server_resources_equals_the_file_path_record(tmp_path: Path) -> None:
    resources, med = dm_patient()
    plain = [{k: v for k, v in r.items() if k != "meta"} for r in [*resources, med]]
    export = tmp_path / "p1.json"
    export.write_text(
        json.dumps(
            {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in plain]}
        )
    )
    with PatientIndex(tmp_path) as index:
        index.build([export])
        from_files, problems = index.record("p1")
    assert problems == []

    from_server, _, missing, _ = build_record("p1", plain, TYPES)

    assert missing == []
    assert from_server == from_files


def _hb(value: float, **meta: str) -> dict[str, Any]:
    obs = {
        "resourceType": "Observation",
        "id": "hb",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-06-01",
        "valueQuantity": {
            "value": value,
            "unit": "g/L",
            "system": "http://unitsofmeasure.org",
            "code": "g/L",
        },
    }
    return {**obs, "meta": meta} if meta else obs


def test_copies_in_a_server_answer_are_chosen_as_in_a_file() -> None:
    patient = {"resourceType": "Patient", "id": "p1"}
    newer, versions = _record_of([patient, _hb(128, versionId="2"), _hb(70, versionId="1")])
    assert [o["valueQuantity"]["value"] for o in newer.resources["Observation"]] == [128]
    assert versions["Observation/hb"] == "2"
    record, _, _, problems = build_record("p1", [patient, _hb(70), _hb(128)], TYPES)
    assert [o["valueQuantity"]["value"] for o in record.resources["Observation"]] == [70]
    assert problems == [
        "Observation/hb: copies of it differ and neither is newer (meta.versionId, meta.lastUpdated): "
        "the first read is used"
    ]


def _record_of(resources: list[dict[str, Any]]) -> tuple[Any, dict[str, str]]:
    record, versions, _, problems = build_record("p1", resources, TYPES)
    assert problems == []
    return record, versions


# -- candidates ------------------------------------------------------------------------------------


def test_prefix_codes_become_the_stem_and_its_one_digit_children(mappings: Mappings) -> None:
    tokens = search_tokens(mappings.concepts["dermatomyositis"])

    assert "http://snomed.info/sct|396230008" in tokens
    assert f"{ICD10CM}|M33.1" in tokens
    assert f"{ICD10CM}|M33.10" in tokens
    assert f"{ICD10CM}|M33.19" in tokens
    assert not any(t.endswith("*") for t in tokens)


def test_candidates_are_collected_across_three_pages_by_following_next_links(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    page2 = f"{BASE}?_getpages=abc&_getpagesoffset=2&_count=2"
    page3 = f"{BASE}?_getpages=abc&_getpagesoffset=4&_count=2"
    pm = condition((ICD10CM, "M33.20"), "Polymyositis", pid="p9")  # e.g. from a :text search; not DM
    pages = [
        bundle([condition(pid="p3"), condition(pid="p1")], next_url=page2),
        bundle([condition(pid="p2"), condition(pid="p1", id="c2")], next_url=page3),
        bundle([condition((ICD10CM, "M33.12"), pid="p4"), pm]),
    ]
    # responses hands out same-URL registrations in order and repeats the last: the first code
    # search gets the paged result, the other code chunks and the :text searches find nothing.
    mocked.get(f"{BASE}/Condition", json=pages[0])
    mocked.get(f"{BASE}/Condition", json=bundle([]))
    mocked.get(page2, json=pages[1])
    mocked.get(page3, json=pages[2])

    found = find_candidates(client, Screener([mappings], AS_OF).gate)

    assert found.patient_ids == ("p1", "p2", "p3", "p4")
    page_calls = [c.request.url for c in mocked.calls if "_getpages" in c.request.url]
    assert page_calls == [page2, page3]
    concept = mappings.concepts["dermatomyositis"]
    code_searches = len(range(0, len(search_tokens(concept)), 20))
    assert found.requests == code_searches + len(concept.text) + 2


def test_server_rejecting_text_search_costs_a_warning_not_the_run(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": "not-supported", "diagnostics": "modifier :text not supported"}
        ],
    }

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        if "code:text" in parse_qs(urlsplit(request.url).query):
            return 400, {}, json.dumps(outcome)
        return 200, {}, json.dumps(bundle([condition(pid="p1")]))

    mocked.add_callback(responses.GET, f"{BASE}/Condition", callback=answer)

    found = find_candidates(client, Screener([mappings], AS_OF).gate)

    assert found.patient_ids == ("p1",)
    assert len(found.warnings) == 1
    assert "code:text" in found.warnings[0] and "error/not-supported" in found.warnings[0]
    assert "modifier :text not supported" not in found.warnings[0]  # server text is not log text


def _search_answers(request: Any) -> tuple[int, dict[str, str], str]:
    """Answers that depend on the query alone, so the order in which searches arrive does not matter:
    each code chunk's search finds a patient named after its first code and has a second page that
    finds another, and :text searches are refused."""
    query = parse_qs(urlsplit(request.url).query)
    if "code:text" in query:
        return 400, {}, json.dumps({"resourceType": "OperationOutcome", "issue": []})
    if "_getpages" in query:
        return 200, {}, json.dumps(bundle([condition(pid=f"paged-{query['_getpages'][0]}")]))
    first = query["code"][0].split(",")[0].rsplit("|", 1)[1]
    more = f"{BASE}?_getpages={first}&_getpagesoffset=1"
    return 200, {}, json.dumps(bundle([condition(pid=f"p-{first}")], next_url=more))


@pytest.mark.parametrize("concurrency", [2, 4, 16])
def test_candidate_searches_run_concurrently_give_the_candidates_requests_and_warnings_of_one_at_a_time(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings, concurrency: int
) -> None:
    mocked.add_callback(responses.GET, f"{BASE}/Condition", callback=_search_answers)
    mocked.add_callback(responses.GET, BASE, callback=_search_answers)
    gate = Screener([mappings], AS_OF).gate

    one = find_candidates(client, gate, 1)
    many = find_candidates(client, gate, concurrency)

    assert many == one
    concept = mappings.concepts["dermatomyositis"]
    chunks = len(range(0, len(search_tokens(concept)), 20))
    assert len(one.patient_ids) == 2 * chunks > 2
    assert len(one.warnings) == 1 and "code:text" in one.warnings[0]
    # every code chunk and its second page, every text (each refused once)
    assert one.requests == 2 * chunks + len(concept.text)


def test_candidate_searches_are_in_flight_together_with_concurrency(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    # The first two searches must be at the server at once to pass the barrier; one at a time, the
    # first waits alone, the barrier breaks and the search fails.
    together = threading.Barrier(2, timeout=10)
    arrived = iter(range(1_000))
    lock = threading.Lock()

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        with lock:
            n = next(arrived)
        if n < 2:
            together.wait()
        return 200, {}, json.dumps(bundle([condition(pid="p1")]))

    mocked.add_callback(responses.GET, f"{BASE}/Condition", callback=answer)
    gate = Screener([mappings], AS_OF).gate
    searches = len(range(0, len(search_tokens(mappings.concepts["dermatomyositis"])), 20))
    searches += len(mappings.concepts["dermatomyositis"].text)

    found = find_candidates(client, gate, 2)

    assert found.patient_ids == ("p1",)
    assert found.requests == searches


def test_group_members_are_its_active_patient_entities(
    mocked: responses.RequestsMock, client: FhirClient
) -> None:
    group = {
        "resourceType": "Group",
        "id": "g1",
        "type": "person",
        "actual": True,
        "member": [
            {"entity": {"reference": "Patient/b"}},
            {"entity": {"reference": "Patient/a"}},
            {"entity": {"reference": "Patient/c"}, "inactive": True},
            {"entity": {"reference": "Device/d"}},
        ],
    }
    mocked.get(f"{BASE}/Group/g1", json=group)

    found = group_members(client, "g1")

    assert found.patient_ids == ("a", "b")
    assert found.requests == 1
    assert found.warnings and "not Patients" in found.warnings[0]


def test_given_patient_ids_accept_a_type_prefix_and_are_deduplicated() -> None:
    assert given_patients(["Patient/b", "a", "b"]).patient_ids == ("a", "b")


def test_given_patient_id_with_a_slash_is_a_usage_error() -> None:
    from fhir_adapter.errors import UsageError

    with pytest.raises(UsageError):
        given_patients(["../metadata"])
