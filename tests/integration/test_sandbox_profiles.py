"""The sandbox behaves like production EHR APIs: profiles full, bulk-only, search-only, throttled, and a
separate research server (sandbox/hapi/README.md, "Profiles").

Plain ``requests`` against the servers ``sandbox.sh start-all`` starts (conftest: ``sandbox_url`` is
``full``, i.e. HAPI itself; the others are the loopback proxies and the research HAPI). Each test module
run loads its own small data set with ids unique to the run, straight into the main HAPI.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import math
import time
import urllib.parse
import uuid
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:10]
CODES = "urn:fhir-adapter:sandbox-profiles"
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
NDJSON = "application/fhir+ndjson"
PAGED = 120  # Observations of patient A with code "paged": more than one capped page
Res = dict[str, Any]


def rid(name: str) -> str:
    return f"sp-{RUN}-{name}"


# -- helpers -----------------------------------------------------------------------------------------


def put(base: str, resource: Res) -> Res:
    r = requests.put(
        f"{base}/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR_JSON, timeout=30
    )
    assert r.status_code in (200, 201), r.text
    body: Res = r.json()
    return body


def get(url: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("timeout", 30)
    headers = {"Accept": "application/fhir+json", **kwargs.pop("headers", {})}
    return requests.get(url, headers=headers, **kwargs)


def instant(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def last_updated(resource: Res) -> dt.datetime:
    return dt.datetime.fromisoformat(resource["meta"]["lastUpdated"])


def observation(name: str, patient: str, code: str, value: float = 1.0) -> Res:
    return {
        "resourceType": "Observation",
        "id": rid(name),
        "status": "final",
        "code": {"coding": [{"system": CODES, "code": f"{RUN}-{code}"}]},
        "subject": {"reference": f"Patient/{rid(patient)}"},
        "valueQuantity": {"value": value, "unit": "1"},
    }


def assert_refused(r: requests.Response, status: int, code: str = "not-supported") -> None:
    assert r.status_code == status, f"{r.request.method} {r.url}: {r.status_code} {r.text[:300]}"
    assert r.headers["Content-Type"].startswith("application/fhir+json"), r.headers
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"][0]["code"] == code, body


def kick_off(url: str) -> str:
    r = requests.get(url, headers=ASYNC, timeout=30)
    assert r.status_code == 202, f"{url}: {r.status_code} {r.text[:300]}"
    location = r.headers["Content-Location"]
    assert "$export-poll-status" in location, location
    return location


def wait_manifest(location: str, timeout: float = 90) -> Res:
    deadline = time.monotonic() + timeout
    while True:
        r = requests.get(location, headers={"Accept": "application/json"}, timeout=30)
        if r.status_code == 200:
            manifest: Res = r.json()
            return manifest
        assert r.status_code == 202, f"{location}: {r.status_code} {r.text[:300]}"
        assert time.monotonic() < deadline, f"export {location} not done after {timeout} s"
        time.sleep(0.5)


def download(manifest: Res) -> dict[str, list[Res]]:
    """resource type -> the resources of its output files (NDJSON), fetched from the manifest's URLs."""
    out: dict[str, list[Res]] = {}
    for item in manifest["output"]:
        r = requests.get(item["url"], headers={"Accept": NDJSON}, timeout=60)
        assert r.status_code == 200, f"{item['url']}: {r.status_code}"
        assert r.headers["Content-Type"].startswith(NDJSON), r.headers
        lines = [json.loads(line) for line in r.text.splitlines() if line.strip()]
        assert all(res["resourceType"] == item["type"] for res in lines)
        out.setdefault(item["type"], []).extend(lines)
    return out


def export(url: str) -> tuple[Res, dict[str, list[Res]]]:
    manifest = wait_manifest(kick_off(url))
    return manifest, download(manifest)


def ids(resources: list[Res]) -> set[str]:
    return {r["id"] for r in resources}


def mine(resources: list[Res]) -> set[str]:
    return {i for i in ids(resources) if i.startswith(f"sp-{RUN}-")}


def capabilities(base: str) -> Res:
    r = get(f"{base}/metadata")
    assert r.status_code == 200, r.text[:300]
    cap: Res = r.json()
    assert cap["resourceType"] == "CapabilityStatement"
    return cap


def resource_cap(cap: Res, rtype: str) -> Res:
    found: Res = next(r for r in cap["rest"][0]["resource"] if r["type"] == rtype)
    return found


def ops(entry: Res) -> set[str]:
    return {o["name"] for o in entry.get("operation", [])}


def interactions(entry: Res) -> set[str]:
    return {i["code"] for i in entry.get("interaction", [])}


def search_params(entry: Res) -> set[str]:
    return {p["name"] for p in entry.get("searchParam", [])}


def all_resource_ops(cap: Res) -> set[str]:
    return {name for r in cap["rest"][0]["resource"] for name in ops(r)}


def all_resource_interactions(cap: Res) -> set[str]:
    return {code for r in cap["rest"][0]["resource"] for code in interactions(r)}


def bundle_ids(bundle: Res) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def next_link(bundle: Res) -> str | None:
    return next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)


# -- data (into the main HAPI) ----------------------------------------------------------------------


class Data:
    def __init__(self, base: str) -> None:
        self.base = base
        self.patients = {rid("pa"), rid("pb")}
        group_patients = [{"entity": {"reference": f"Patient/{p}"}} for p in sorted(self.patients)]
        created = [
            put(base, {"resourceType": "Patient", "id": rid("pa"), "name": [{"family": "Alpha"}]}),
            put(base, {"resourceType": "Patient", "id": rid("pb"), "name": [{"family": "Beta"}]}),
            put(base, {"resourceType": "Patient", "id": rid("pc"), "name": [{"family": "Outside"}]}),
            put(base, observation("oa1", "pa", "plain")),
            put(base, observation("oa2", "pa", "special")),
            put(base, observation("ob1", "pb", "plain")),
            put(base, observation("oc1", "pc", "plain")),  # pc is not in the group
            put(
                base,
                {
                    "resourceType": "Group",
                    "id": rid("g"),
                    "type": "person",
                    "actual": True,
                    "member": group_patients,
                },
            ),
        ]
        self.since = instant(min(map(last_updated, created)) - dt.timedelta(seconds=1))
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": observation(f"page{i}", "pa", "paged"),
                    "request": {"method": "PUT", "url": f"Observation/{rid(f'page{i}')}"},
                }
                for i in range(PAGED)
            ],
        }
        r = requests.post(base, json=bundle, headers=FHIR_JSON, timeout=120)
        assert r.status_code == 200, r.text[:500]
        # a moment after everything above, then one more change: what `_since` must return alone
        time.sleep(1.2)
        self.mid = instant(dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=300))
        time.sleep(0.3)
        self.changed = put(base, observation("ob1", "pb", "plain", value=2.0))
        assert last_updated(self.changed) > dt.datetime.fromisoformat(self.mid.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def data(sandbox_url: str) -> Data:
    return Data(sandbox_url)


# -- full (HAPI itself) ------------------------------------------------------------------------------


def test_full_capability_statement_offers_everything_history_last_updated_and_all_exports(
    sandbox_url: str,
) -> None:
    cap = capabilities(sandbox_url)
    rest = cap["rest"][0]
    assert {"export", "export-poll-status"} <= ops(rest)
    assert "history-system" in interactions(rest)
    assert {"everything", "export"} <= ops(resource_cap(cap, "Patient"))
    assert "export" in ops(resource_cap(cap, "Group"))
    assert {"history-type", "history-instance", "vread"} <= interactions(resource_cap(cap, "Observation"))
    assert "_lastUpdated" in search_params(resource_cap(cap, "Observation"))
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in cap.get("instantiates", [])


def test_full_system_level_export(sandbox_url: str, data: Data) -> None:
    manifest, files = export(f"{sandbox_url}/$export?_type=Group,Patient&_since={data.since}")
    assert manifest["requiresAccessToken"] is True  # HAPI always says so (README)
    assert manifest["transactionTime"] and manifest["error"] == []
    assert manifest["request"].startswith(f"{sandbox_url}/$export")
    assert {rid("g")} <= mine(files["Group"])
    assert {rid("pa"), rid("pb"), rid("pc")} <= mine(files["Patient"])
    assert "Observation" not in files  # _type honoured


def test_full_group_level_export_holds_the_members_only(sandbox_url: str, data: Data) -> None:
    _, files = export(
        f"{sandbox_url}/Group/{rid('g')}/$export?_type=Patient,Observation&_outputFormat={NDJSON}"
    )
    assert ids(files["Patient"]) == data.patients
    observations = ids(files["Observation"])
    assert {rid("oa1"), rid("oa2"), rid("ob1"), rid("page0")} <= observations
    assert rid("oc1") not in observations


def test_full_patient_level_exports(sandbox_url: str, data: Data) -> None:
    _, files = export(f"{sandbox_url}/Patient/$export?_type=Patient&_since={data.since}")
    assert {rid("pa"), rid("pb"), rid("pc")} <= mine(files["Patient"])
    _, one = export(f"{sandbox_url}/Patient/{rid('pb')}/$export?_type=Observation")
    assert ids(one["Observation"]) == {rid("ob1")}


def test_full_export_honours_type_filter(sandbox_url: str, data: Data) -> None:
    type_filter = urllib.parse.quote(f"Observation?code={CODES}|{RUN}-special", safe="")
    _, files = export(f"{sandbox_url}/Group/{rid('g')}/$export?_type=Observation&_typeFilter={type_filter}")
    assert ids(files["Observation"]) == {rid("oa2")}


def test_full_export_since_returns_only_what_changed(sandbox_url: str, data: Data) -> None:
    _, files = export(f"{sandbox_url}/Group/{rid('g')}/$export?_type=Observation&_since={data.mid}")
    assert ids(files["Observation"]) == {rid("ob1")}


def test_export_needs_respond_async(sandbox_url: str, data: Data) -> None:
    r = get(f"{sandbox_url}/Group/{rid('g')}/$export?_type=Patient")
    assert r.status_code == 400, r.text[:300]


def test_two_kick_offs_are_two_jobs_and_delete_cancels_one(sandbox_url: str, data: Data) -> None:
    url = f"{sandbox_url}/Group/{rid('g')}/$export?_type=Patient"
    first, second = kick_off(url), kick_off(url)
    assert first != second  # setEnableBulkExportJobReuse(false)
    r = requests.delete(second, timeout=30)
    assert r.status_code == 202, r.text[:300]
    deadline = time.monotonic() + 30
    while (status := requests.get(second, timeout=30).status_code) != 404:
        assert status in (200, 202) and time.monotonic() < deadline, status
        time.sleep(0.5)
    assert ids(download(wait_manifest(first))["Patient"]) == data.patients


# -- Provenance keeps versioned references (every profile) ------------------------------------------


def provenance(target: str, entity: str) -> Res:
    return {
        "resourceType": "Provenance",
        "target": [{"reference": target}],
        "recorded": "2026-06-15T10:00:00Z",
        "agent": [{"who": {"display": "fhir-adapter sandbox test"}}],
        "entity": [{"role": "source", "what": {"reference": entity}}],
    }


@pytest.fixture(scope="module")
def provenances(sandbox_url: str, data: Data) -> dict[str, str]:
    """A ResearchSubject created and updated, with one Provenance per version: name -> Provenance id."""
    put(sandbox_url, {"resourceType": "ResearchStudy", "id": rid("study"), "status": "active"})
    subject = {
        "resourceType": "ResearchSubject",
        "id": rid("subject"),
        "status": "candidate",
        "study": {"reference": f"ResearchStudy/{rid('study')}"},
        "individual": {"reference": f"Patient/{rid('pa')}"},
    }
    assert put(sandbox_url, subject)["meta"]["versionId"] == "1"
    assert put(sandbox_url, {**subject, "status": "eligible"})["meta"]["versionId"] == "2"
    made = {}
    for version in ("1", "2"):
        body = provenance(
            f"ResearchSubject/{rid('subject')}/_history/{version}", f"Patient/{rid('pa')}/_history/1"
        )
        r = requests.post(f"{sandbox_url}/Provenance", json=body, headers=FHIR_JSON, timeout=30)
        assert r.status_code == 201, r.text[:300]
        made[version] = r.json()["id"]
    return made


def stored_references(base: str, provenance_id: str) -> tuple[str, str]:
    r = get(f"{base}/Provenance/{provenance_id}")
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    return body["target"][0]["reference"], body["entity"][0]["what"]["reference"]


def test_provenance_keeps_history_versions_in_target_and_entity(
    sandbox_url: str, provenances: dict[str, str]
) -> None:
    for version, pid in provenances.items():
        target, entity = stored_references(sandbox_url, pid)
        assert target == f"ResearchSubject/{rid('subject')}/_history/{version}"
        assert entity == f"Patient/{rid('pa')}/_history/1"
    # and in a search (a different code path: the search result encoder)
    r = get(f"{sandbox_url}/Provenance?target=ResearchSubject/{rid('subject')}")
    targets = sorted(e["resource"]["target"][0]["reference"] for e in r.json()["entry"])
    assert targets == [f"ResearchSubject/{rid('subject')}/_history/{v}" for v in ("1", "2")]


@pytest.mark.parametrize("profile", ["bulk_only_url", "search_only_url", "throttled_url"])
def test_provenance_keeps_history_versions_behind_each_proxy(
    profile: str, provenances: dict[str, str], request: pytest.FixtureRequest
) -> None:
    base = request.getfixturevalue(profile)
    target, entity = stored_references(base, provenances["2"])
    assert target == f"ResearchSubject/{rid('subject')}/_history/2"
    assert entity == f"Patient/{rid('pa')}/_history/1"


def test_delete_of_what_a_provenance_cites_409_unversioned_but_allowed_when_versioned(
    sandbox_url: str, provenances: dict[str, str]
) -> None:
    """Referential integrity on delete (HAPI default, on) blocks a delete that an unversioned reference
    cites; since HAPI 7.8 (hapi-fhir#6644) a resource cited only by versioned references may be deleted.
    The versioned Provenance then points at a deleted resource whose cited version still reads."""
    subject = {
        "resourceType": "ResearchSubject",
        "status": "candidate",
        "study": {"reference": f"ResearchStudy/{rid('study')}"},
        "individual": {"reference": f"Patient/{rid('pa')}"},
    }
    unversioned = put(sandbox_url, {**subject, "id": rid("subject-unversioned")})
    body = provenance(f"ResearchSubject/{unversioned['id']}", f"Patient/{rid('pa')}")
    assert (
        requests.post(f"{sandbox_url}/Provenance", json=body, headers=FHIR_JSON, timeout=30).status_code
        == 201
    )
    r = requests.delete(f"{sandbox_url}/ResearchSubject/{unversioned['id']}", timeout=30)
    assert r.status_code == 409, r.text[:300]  # setEnforceReferentialIntegrityOnDelete(true)
    assert get(f"{sandbox_url}/ResearchSubject/{unversioned['id']}").status_code == 200

    versioned = f"{sandbox_url}/ResearchSubject/{rid('subject')}"
    r = requests.delete(versioned, timeout=30)
    assert r.status_code == 200, r.text[:300]  # only versioned references cite it
    assert get(versioned).status_code == 410
    assert get(f"{versioned}/_history/1").status_code == 200  # the cited version is still history
    target, _ = stored_references(sandbox_url, provenances["1"])
    assert target == f"ResearchSubject/{rid('subject')}/_history/1"


# -- bulk-only ---------------------------------------------------------------------------------------


def test_bulk_only_capability_statement_lists_what_it_offers(bulk_only_url: str) -> None:
    cap = capabilities(bulk_only_url)
    rest = cap["rest"][0]
    assert "export" not in ops(rest) and "export-poll-status" in ops(rest)
    assert "history-system" not in interactions(rest)
    assert "everything" not in all_resource_ops(cap)
    assert "export" in ops(resource_cap(cap, "Group"))
    assert "export" not in ops(resource_cap(cap, "Patient"))
    assert "history-type" not in all_resource_interactions(cap)
    assert {"read", "vread", "search-type", "history-instance"} <= interactions(
        resource_cap(cap, "Observation")
    )
    assert not any("_lastUpdated" in search_params(r) for r in rest["resource"])
    assert "at most 100 entries" in rest["documentation"]
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in cap["instantiates"]
    assert cap["implementation"]["url"] == bulk_only_url


def test_bulk_only_refuses_everything_history_and_last_updated(bulk_only_url: str, data: Data) -> None:
    b = bulk_only_url
    assert_refused(get(f"{b}/Patient/{rid('pa')}/$everything"), 404)
    assert_refused(get(f"{b}/Observation/_history"), 404)
    assert_refused(get(f"{b}/_history"), 404)
    assert_refused(get(f"{b}/Observation?_lastUpdated=gt{data.since}"), 400)
    assert_refused(get(f"{b}/Observation?_sort=-_lastUpdated"), 400)
    form = {"subject": f"Patient/{rid('pa')}", "_lastUpdated": f"gt{data.since}"}
    assert_refused(requests.post(f"{b}/Observation/_search", data=form, timeout=30), 400)
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": f"Patient/{rid('pa')}/$everything"}}],
    }
    assert_refused(requests.post(b, json=batch, headers=FHIR_JSON, timeout=30), 400)
    # what stays: search, read, instance history, vread
    assert get(f"{b}/Observation?subject=Patient/{rid('pa')}&code={CODES}|{RUN}-plain").json()["total"] == 1
    assert get(f"{b}/Patient/{rid('pa')}/_history").status_code == 200
    assert get(f"{b}/Patient/{rid('pa')}/_history/1").status_code == 200


def test_bulk_only_caps_search_pages_at_100(bulk_only_url: str, data: Data) -> None:
    first = get(f"{bulk_only_url}/Observation?code={CODES}|{RUN}-paged&_count=500").json()
    assert first["total"] == PAGED
    assert len(first["entry"]) == 100
    link = next_link(first)
    assert link is not None and link.startswith(f"{bulk_only_url}?"), link
    second = get(link).json()
    assert len(second.get("entry", [])) == PAGED - 100
    assert set(bundle_ids(first)).isdisjoint(bundle_ids(second))
    # the same search on HAPI itself gives one page of 120: the cap is the profile's
    assert len(get(f"{data.base}/Observation?code={CODES}|{RUN}-paged&_count=500").json()["entry"]) == PAGED


def test_bulk_only_group_export_with_type_and_since_end_to_end(bulk_only_url: str, data: Data) -> None:
    location = kick_off(
        f"{bulk_only_url}/Group/{rid('g')}/$export?_type=Patient,Observation&_outputFormat={NDJSON}"
    )
    assert location.startswith(f"{bulk_only_url}/$export-poll-status?"), location
    manifest = wait_manifest(location)
    assert manifest["output"] and all(
        o["url"].startswith(f"{bulk_only_url}/Binary/") for o in manifest["output"]
    )
    files = download(manifest)
    assert ids(files["Patient"]) == data.patients
    assert {rid("oa1"), rid("ob1"), rid("page119")} <= ids(files["Observation"])
    _, since = export(f"{bulk_only_url}/Group/{rid('g')}/$export?_type=Observation&_since={data.mid}")
    assert ids(since["Observation"]) == {rid("ob1")}


def test_bulk_only_refuses_type_filter_and_other_export_levels(bulk_only_url: str, data: Data) -> None:
    b = bulk_only_url
    type_filter = urllib.parse.quote(f"Observation?code={CODES}|{RUN}-special", safe="")
    assert_refused(
        requests.get(f"{b}/Group/{rid('g')}/$export?_typeFilter={type_filter}", headers=ASYNC), 400
    )
    assert_refused(requests.get(f"{b}/Group/{rid('g')}/$export?_elements=id", headers=ASYNC), 400)
    assert_refused(requests.get(f"{b}/$export?_type=Patient", headers=ASYNC), 404)
    assert_refused(requests.get(f"{b}/Patient/$export?_type=Patient", headers=ASYNC), 404)
    assert_refused(requests.get(f"{b}/Patient/{rid('pa')}/$export", headers=ASYNC), 404)
    params = {"resourceType": "Parameters", "parameter": [{"name": "_typeFilter", "valueString": "Patient?"}]}
    r = requests.post(
        f"{b}/Group/{rid('g')}/$export", json=params, headers={**ASYNC, **FHIR_JSON}, timeout=30
    )
    assert_refused(r, 400)


# -- search-only -------------------------------------------------------------------------------------


def test_search_only_capability_statement_lists_what_it_offers(search_only_url: str) -> None:
    cap = capabilities(search_only_url)
    rest = cap["rest"][0]
    assert not {"export", "export-poll-status"} & ops(rest)
    assert not {"export", "everything"} & all_resource_ops(cap)
    assert not {"history-type", "history-instance"} & all_resource_interactions(cap)
    assert "history-system" not in interactions(rest)
    assert {"read", "vread", "search-type"} <= interactions(resource_cap(cap, "Observation"))
    assert "_lastUpdated" in search_params(resource_cap(cap, "Observation"))
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" not in cap.get("instantiates", [])


def test_search_only_supports_last_updated(search_only_url: str, data: Data) -> None:
    r = get(f"{search_only_url}/Observation?subject=Patient/{rid('pb')}&_lastUpdated=gt{data.mid}")
    assert r.status_code == 200, r.text[:300]
    assert bundle_ids(r.json()) == [rid("ob1")]
    everything_since = get(
        f"{search_only_url}/Observation?subject=Patient/{rid('pa')}&_lastUpdated=gt{data.since}"
    )
    assert everything_since.json()["total"] == 2 + PAGED


def test_search_only_refuses_export_everything_and_history(search_only_url: str, data: Data) -> None:
    s = search_only_url
    for url in (f"{s}/$export", f"{s}/Patient/$export", f"{s}/Group/{rid('g')}/$export?_type=Patient"):
        assert_refused(requests.get(url, headers=ASYNC, timeout=30), 404)
    assert_refused(get(f"{s}/$export-poll-status?_jobId=x"), 404)
    assert_refused(get(f"{s}/Patient/{rid('pa')}/$everything"), 404)
    assert_refused(get(f"{s}/Patient/{rid('pa')}/_history"), 404)
    assert_refused(get(f"{s}/Observation/_history"), 404)
    assert_refused(get(f"{s}/_history"), 404)
    assert get(f"{s}/Patient/{rid('pa')}/_history/1").status_code == 200  # vread stays


# -- throttled ---------------------------------------------------------------------------------------


def test_throttled_capability_statement_is_full_plus_the_rate_limit(
    throttled_url: str, throttle_rps: float
) -> None:
    time.sleep(1.1)  # an empty window
    cap = capabilities(throttled_url)
    assert "everything" in ops(resource_cap(cap, "Patient"))
    assert "export" in ops(cap["rest"][0])
    assert f"at most {throttle_rps:g} requests per second" in cap["rest"][0]["documentation"]


def test_throttled_answers_429_with_retry_after_over_the_rate(
    throttled_url: str, throttle_rps: float, data: Data
) -> None:
    url = f"{throttled_url}/Patient/{rid('pa')}"
    time.sleep(1.1)  # an empty window
    burst = int(throttle_rps * 3) + 3
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: get(url), range(burst)))
    elapsed = time.monotonic() - started
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 429}, codes
    assert 429 in codes and 200 in codes, codes
    # at most N in any one second: the burst spans floor(elapsed) + 1 windows at most
    assert codes.count(200) <= throttle_rps * (math.floor(elapsed) + 1), (codes, elapsed)
    refused = next(a for a in answers if a.status_code == 429)
    assert_refused(refused, 429, "throttled")
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 5
    time.sleep(retry_after)
    assert get(url).status_code == 200


def test_throttled_passes_a_client_under_the_rate(
    throttled_url: str, throttle_rps: float, data: Data
) -> None:
    time.sleep(1.1)
    pace = 2 / throttle_rps  # half the rate
    codes = []
    for _ in range(int(throttle_rps)):
        started = time.monotonic()
        codes.append(get(f"{throttled_url}/Patient/{rid('pb')}").status_code)
        time.sleep(max(0.0, pace - (time.monotonic() - started)))
    assert codes == [200] * int(throttle_rps), codes


# -- the research server -----------------------------------------------------------------------------


def test_research_server_is_a_separate_store(research_url: str, sandbox_url: str, data: Data) -> None:
    research_patient = rid("research-only")
    assert research_url != sandbox_url
    cap = capabilities(research_url)
    assert "'research'" in cap["implementation"]["description"]
    put(research_url, {"resourceType": "Patient", "id": research_patient, "name": [{"family": "Research"}]})
    assert get(f"{research_url}/Patient/{research_patient}").status_code == 200
    assert get(f"{sandbox_url}/Patient/{research_patient}").status_code == 404
    assert get(f"{research_url}/Patient/{rid('pa')}").status_code == 404


def test_research_server_takes_study_subject_and_provenance_citing_the_ehr(
    research_url: str, sandbox_url: str, data: Data
) -> None:
    """Read from one FHIR server, write ResearchStudy/ResearchSubject/Provenance to the other."""
    patient = f"{sandbox_url}/Patient/{rid('pa')}"
    put(research_url, {"resourceType": "ResearchStudy", "id": rid("rstudy"), "status": "active"})
    subject = put(
        research_url,
        {
            "resourceType": "ResearchSubject",
            "id": rid("rsubject"),
            "status": "candidate",
            "study": {"reference": f"ResearchStudy/{rid('rstudy')}"},
            "individual": {"reference": patient},
        },
    )
    assert subject["individual"]["reference"] == patient  # external reference kept as written
    body = provenance(f"ResearchSubject/{rid('rsubject')}/_history/1", f"{patient}/_history/1")
    r = requests.post(f"{research_url}/Provenance", json=body, headers=FHIR_JSON, timeout=30)
    assert r.status_code == 201, r.text[:300]
    target, entity = stored_references(research_url, r.json()["id"])
    assert (target, entity) == (f"ResearchSubject/{rid('rsubject')}/_history/1", f"{patient}/_history/1")
    assert get(f"{sandbox_url}/ResearchSubject/{rid('rsubject')}").status_code == 404
