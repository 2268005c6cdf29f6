"""FhirClient: headers, retries and budget, paging, error mapping, logging hygiene."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError

from fhir_adapter.client.auth import BearerTokenAuth
from fhir_adapter.client.http import USER_AGENT, FhirClient
from fhir_adapter.errors import (
    AccessDenied,
    AuthError,
    ConfigError,
    PreconditionFailed,
    ServerError,
    ServerUnreachable,
)

BASE = "https://fhir.example.org/r4"
MRN = "MRN-0042-SECRET"


class FakeClock:
    """Monotonic clock that only moves when the client sleeps, so budgets are deterministic."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class UpperBoundRng(random.Random):
    """Makes full jitter pick the top of its range, exposing the backoff cap."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


def make_client(clock: FakeClock, **kwargs: Any) -> FhirClient:
    kwargs.setdefault("rng", random.Random(7))
    return FhirClient(BASE, sleep=clock.sleep, monotonic=clock.monotonic, **kwargs)


def patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid}


def bundle(resources: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    links = [{"relation": "self", "url": "ignored"}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


def connection_refused() -> requests.exceptions.ConnectionError:
    reason = NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(MaxRetryError(None, f"/r4/Patient?identifier={MRN}", reason))  # type: ignore[arg-type]


# -- bodies --------------------------------------------------------------------------------------


def test_a_body_with_a_utf8_byte_order_mark_reads_like_one_without(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.get(f"{BASE}/Patient/p1", body=b"\xef\xbb\xbf" + json.dumps(patient("p1")).encode())

    assert make_client(clock).get("Patient/p1") == patient("p1")


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(patient("p1")).encode("utf-16"),
        b'{"resourceType": "Patient", "id": "p1", "n": NaN}',
        b'{"resourceType": "Patient", "id": "p1"} trailing',
    ],
    ids=["utf-16", "nan", "trailing-bytes"],
)
def test_a_body_that_is_not_strict_utf8_json_is_a_server_error_naming_the_request(
    body: bytes, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.get(f"{BASE}/Patient/p1", body=body)

    with pytest.raises(ServerError, match=r"GET .*Patient/p1: the body is not a UTF-8 JSON object"):
        make_client(clock).get("Patient/p1")


# -- headers -------------------------------------------------------------------------------------


def test_get_sends_fhir_accept_and_user_agent_but_no_content_type(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.get(f"{BASE}/Patient/p1", json=patient("p1"))

    make_client(clock).get("Patient/p1")

    headers = mocked.calls[0].request.headers
    assert headers["Accept"] == "application/fhir+json"
    assert headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("fhir-adapter/")
    assert "Content-Type" not in headers


def test_create_sends_fhir_content_type_and_if_none_exist_and_returns_location(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.post(
        f"{BASE}/ResearchSubject",
        status=201,
        json={"resourceType": "ResearchSubject", "id": "rs1", "meta": {"versionId": "1"}},
        headers={"Location": f"{BASE}/ResearchSubject/rs1/_history/1", "ETag": 'W/"1"'},
    )
    resource = {"resourceType": "ResearchSubject", "status": "candidate"}

    result = make_client(clock).create(resource, if_none_exist="identifier=urn:x|42")

    request = mocked.calls[0].request
    assert request.headers["Content-Type"] == "application/fhir+json"
    assert request.headers["If-None-Exist"] == "identifier=urn:x|42"
    assert json.loads(request.body) == resource
    assert result.status == 201
    assert result.location == f"{BASE}/ResearchSubject/rs1/_history/1"
    assert result.version_id == "1"


# -- retries -------------------------------------------------------------------------------------


def test_429_with_retry_after_seconds_sleeps_that_long_then_succeeds(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.get(f"{BASE}/Patient/p1", status=429, headers={"Retry-After": "7"})
    mocked.get(f"{BASE}/Patient/p1", json=patient("p1"))
    client = make_client(clock)

    assert client.get("Patient/p1")["id"] == "p1"

    assert clock.sleeps == [7.0]
    assert (client.request_count, client.retry_count) == (2, 1)


def test_retry_after_http_date_is_measured_against_the_server_date_header(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.get(
        f"{BASE}/Patient/p1",
        status=503,
        headers={"Date": "Tue, 05 May 2026 10:00:00 GMT", "Retry-After": "Tue, 05 May 2026 10:00:12 GMT"},
    )
    mocked.get(f"{BASE}/Patient/p1", json=patient("p1"))

    make_client(clock).get("Patient/p1")

    assert clock.sleeps == [12.0]


@pytest.mark.parametrize("retry_after", ["3600", "99999999999999999999"])
def test_retry_after_beyond_the_retry_budget_gives_up_at_once(
    mocked: responses.RequestsMock, clock: FakeClock, retry_after: str
) -> None:
    mocked.get(f"{BASE}/Patient/p1", status=429, headers={"Retry-After": retry_after})

    with pytest.raises(ServerError) as caught:
        make_client(clock, retry_budget_seconds=300).get("Patient/p1")

    assert clock.sleeps == []  # neither the hour asked for nor a shortened wait that ignores it
    assert len(mocked.calls) == 1
    assert "the server asked to wait" in str(caught.value)
    assert "retry budget" in str(caught.value)


def test_retry_after_within_the_budget_is_waited_in_full_even_past_backoff_max(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.get(f"{BASE}/Patient/p1", status=429, headers={"Retry-After": "45"})
    mocked.get(f"{BASE}/Patient/p1", json=patient("p1"))

    make_client(clock, backoff_max=20).get("Patient/p1")

    assert clock.sleeps == [45.0]


@pytest.mark.parametrize("retry_after", ["soon", "-5", "1.5", "", "Tue, 99 Foo 2026 10:00:00 GMT"])
def test_an_invalid_retry_after_falls_back_to_the_clients_own_backoff(
    mocked: responses.RequestsMock, clock: FakeClock, retry_after: str
) -> None:
    mocked.get(f"{BASE}/Patient/p1", status=503, headers={"Retry-After": retry_after})
    mocked.get(f"{BASE}/Patient/p1", json=patient("p1"))

    make_client(clock, rng=UpperBoundRng(), backoff_base=0.5).get("Patient/p1")

    assert clock.sleeps == [0.5]


def test_503_twice_then_success_counts_every_request_and_each_retry(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    for _ in range(2):
        mocked.get(f"{BASE}/Patient/p1", status=503)
    mocked.get(f"{BASE}/Patient/p1", json=patient("p1"))
    client = make_client(clock)

    assert client.get("Patient/p1")["id"] == "p1"

    assert len(mocked.calls) == 3
    assert (client.request_count, client.retry_count) == (3, 2)
    assert len(clock.sleeps) == 2


def test_backoff_is_full_jitter_below_an_exponential_cap_bounded_by_backoff_max(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    for _ in range(5):
        mocked.get(f"{BASE}/Patient/p1", status=502)
    mocked.get(f"{BASE}/Patient/p1", json=patient("p1"))

    make_client(clock, rng=UpperBoundRng(), backoff_base=0.5, backoff_max=5).get("Patient/p1")

    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 5.0]


def test_jittered_delays_stay_within_their_cap(mocked: responses.RequestsMock, clock: FakeClock) -> None:
    for _ in range(4):
        mocked.get(f"{BASE}/Patient/p1", status=500)
    mocked.get(f"{BASE}/Patient/p1", json=patient("p1"))

    make_client(clock, backoff_base=1).get("Patient/p1")

    assert all(0 <= s <= 2**i for i, s in enumerate(clock.sleeps))


@pytest.mark.parametrize("timeout", [requests.exceptions.ReadTimeout, requests.exceptions.ConnectTimeout])
def test_timeouts_are_retried_until_the_budget_runs_out_then_server_unreachable(
    mocked: responses.RequestsMock, clock: FakeClock, timeout: type[Exception]
) -> None:
    url = f"{BASE}/Patient?identifier={MRN}"
    for _ in range(4):
        mocked.get(f"{BASE}/Patient", body=timeout(f"timed out: {url}"))
    # Delays 1, 2, 4 fit a 10 s budget (7 s); the fourth (8 s) would end past it.
    client = make_client(clock, rng=UpperBoundRng(), backoff_base=1, retry_budget_seconds=10, max_retries=10)

    with pytest.raises(ServerError) as caught:
        client.get("Patient", params={"identifier": MRN})

    assert clock.sleeps == [1.0, 2.0, 4.0]
    assert len(mocked.calls) == 4
    error = caught.value
    assert type(error) is ServerUnreachable  # the one "no HTTP answer" type every caller checks
    assert error.status is None
    assert error.url == f"{BASE}/Patient"
    assert timeout.__name__ in str(error)
    assert "4 attempt" in str(error)
    assert MRN not in str(error)
    assert error.__cause__ is None and error.__suppress_context__


def test_connection_errors_stop_after_max_retries(mocked: responses.RequestsMock, clock: FakeClock) -> None:
    for _ in range(3):
        mocked.get(f"{BASE}/metadata", body=connection_refused())

    with pytest.raises(ServerError, match=r"ConnectionError \(NewConnectionError\).*3 attempt"):
        make_client(clock, max_retries=2).get("metadata")

    assert len(mocked.calls) == 3


def test_503_until_max_retries_raises_server_error_with_status_and_url(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    for _ in range(3):
        mocked.get(f"{BASE}/Patient", status=503)

    with pytest.raises(ServerError) as caught:
        make_client(clock, max_retries=2).get("Patient", params={"identifier": MRN})

    assert caught.value.status == 503
    assert caught.value.url == f"{BASE}/Patient"
    assert str(caught.value) == "HTTP 503 on GET Patient (Service Unavailable) [after 3 attempts]"


def test_post_is_not_retried_after_a_read_timeout_because_it_may_have_been_processed(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.post(f"{BASE}/ResearchSubject", body=requests.exceptions.ReadTimeout("slow"))

    with pytest.raises(ServerError, match="not retried"):
        make_client(clock).create({"resourceType": "ResearchSubject"})

    assert len(mocked.calls) == 1


def test_post_is_retried_when_the_connection_failed_before_sending(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.post(f"{BASE}/ResearchSubject", body=connection_refused())
    mocked.post(f"{BASE}/ResearchSubject", body=requests.exceptions.ConnectTimeout("connect"))
    mocked.post(f"{BASE}/ResearchSubject", status=201, json={"resourceType": "ResearchSubject", "id": "1"})

    assert make_client(clock).create({"resourceType": "ResearchSubject"}).status == 201
    assert len(mocked.calls) == 3


def test_post_is_not_retried_after_a_dropped_connection(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.post(f"{BASE}/", body=requests.exceptions.ConnectionError("Connection aborted"))

    with pytest.raises(ServerError, match="not retried"):
        make_client(clock).transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})

    assert len(mocked.calls) == 1


@pytest.mark.parametrize(
    ("status", "retried"), [(429, True), (503, False), (500, False), (502, False), (504, False)]
)
def test_post_retries_only_statuses_that_mean_not_processed(
    mocked: responses.RequestsMock, clock: FakeClock, status: int, retried: bool
) -> None:
    mocked.post(f"{BASE}/ResearchSubject", status=status)
    if retried:
        mocked.post(f"{BASE}/ResearchSubject", status=201, json={"resourceType": "ResearchSubject"})
        assert make_client(clock).create({"resourceType": "ResearchSubject"}).status == 201
    else:
        with pytest.raises(ServerError) as caught:
            make_client(clock).create({"resourceType": "ResearchSubject"})
        assert caught.value.status == status
    assert len(mocked.calls) == (2 if retried else 1)


def test_put_and_delete_are_retried_on_500(mocked: responses.RequestsMock, clock: FakeClock) -> None:
    mocked.put(f"{BASE}/ResearchSubject/rs1", status=500)
    mocked.put(f"{BASE}/ResearchSubject/rs1", json={"resourceType": "ResearchSubject", "id": "rs1"})
    mocked.delete(f"{BASE}/ResearchSubject/rs1", status=504)
    mocked.delete(f"{BASE}/ResearchSubject/rs1", status=204)
    client = make_client(clock)

    client.update({"resourceType": "ResearchSubject", "id": "rs1"})
    assert client.delete("ResearchSubject", "rs1").status == 204

    assert client.retry_count == 2


def test_tls_errors_are_not_retried(mocked: responses.RequestsMock, clock: FakeClock) -> None:
    mocked.get(f"{BASE}/metadata", body=requests.exceptions.SSLError("certificate verify failed"))

    with pytest.raises(ServerError, match="TLS error"):
        make_client(clock).get("metadata")

    assert len(mocked.calls) == 1


# -- paging --------------------------------------------------------------------------------------


def test_search_follows_next_links_exactly_across_three_pages(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    page2 = f"{BASE}?_getpages=abc-123&_getpagesoffset=2&_count=2&_bundletype=searchset"
    page3 = f"{BASE}?_getpages=abc-123&_getpagesoffset=4&_count=2&_bundletype=searchset"
    mocked.get(f"{BASE}/Patient", json=bundle([patient("a"), patient("b")], page2))
    mocked.get(BASE, json=bundle([patient("c"), patient("d")], page3))
    mocked.get(BASE, json=bundle([patient("e")]))
    client = make_client(clock)

    ids = [r["id"] for r in client.search("Patient", {"birthdate": "ge1950", "_count": 2})]

    assert ids == ["a", "b", "c", "d", "e"]
    assert client.request_count == 3
    first = f"{BASE}/Patient?birthdate=ge1950&_count=2"
    assert [c.request.url for c in mocked.calls] == [first, page2, page3]


def test_search_resolves_relative_next_links_against_the_base(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.get(f"{BASE}/Observation", json=bundle([{"resourceType": "Observation"}], "Observation?cursor=x1"))
    mocked.get(
        f"{BASE}/Observation", json=bundle([{"resourceType": "Observation"}], "/r4/Observation?cursor=x2")
    )
    mocked.get(f"{BASE}/Observation", json=bundle([]))

    assert len(list(make_client(clock).search("Observation", {"code": "2157-6"}))) == 2

    assert [c.request.url for c in mocked.calls][1:] == [
        f"{BASE}/Observation?cursor=x1",
        f"{BASE}/Observation?cursor=x2",
    ]


def test_search_pages_yields_whole_bundles(mocked: responses.RequestsMock, clock: FakeClock) -> None:
    first = bundle([patient("a")], f"{BASE}/Patient?page=2")
    first["total"] = 2
    mocked.get(f"{BASE}/Patient", json=first)
    mocked.get(f"{BASE}/Patient", json=bundle([patient("b")]))

    pages = list(make_client(clock).search_pages("Patient"))

    assert [p["total"] for p in pages[:1]] == [2]
    assert len(pages) == 2


def test_search_refuses_a_next_link_to_another_origin(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.get(f"{BASE}/Patient", json=bundle([patient("a")], "https://hapi-internal:8080/fhir?_getpages=1"))
    client = make_client(clock, auth=BearerTokenAuth("tok"))

    with pytest.raises(ServerError, match="another origin") as caught:
        list(client.search("Patient"))

    assert "hapi-internal" not in str(caught.value)  # a URL from the server is not repeated

    assert len(mocked.calls) == 1


def test_search_stops_when_a_next_link_repeats(mocked: responses.RequestsMock, clock: FakeClock) -> None:
    mocked.get(f"{BASE}/Patient", json=bundle([patient("a")], f"{BASE}/Patient?page=2"))
    mocked.get(f"{BASE}/Patient", json=bundle([patient("b")], f"{BASE}/Patient?page=2"))

    with pytest.raises(ServerError, match="paging loop"):
        list(make_client(clock).search("Patient"))


def test_search_skips_outcome_entries_and_keeps_included_resources(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    page = bundle([patient("a")])
    page["entry"] += [
        {"resource": {"resourceType": "Organization", "id": "o"}, "search": {"mode": "include"}},
        {
            "resource": {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "warning", "code": "too-costly"}],
            },
            "search": {"mode": "outcome"},
        },
    ]
    mocked.get(f"{BASE}/Patient", json=page)

    types = [
        r["resourceType"] for r in make_client(clock).search("Patient", {"_include": "Patient:organization"})
    ]

    assert types == ["Patient", "Organization"]


def test_history_yields_entries_including_deletions(mocked: responses.RequestsMock, clock: FakeClock) -> None:
    history = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [
            {"request": {"method": "DELETE", "url": "Patient/p1"}, "response": {"status": "204"}},
            {"resource": patient("p1"), "request": {"method": "PUT", "url": "Patient/p1"}},
        ],
    }
    mocked.get(f"{BASE}/Patient/p1/_history", json=history)

    entries = list(make_client(clock).history("Patient", "p1"))

    assert [e["request"]["method"] for e in entries] == ["DELETE", "PUT"]


# -- error mapping -------------------------------------------------------------------------------


def test_400_operation_outcome_codes_are_the_message_and_its_free_text_only_server_text(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "invalid",
                "diagnostics": "Observation.status: minimum required = 1,\n but only found 0",
                "details": {"text": "Missing status"},
            },
            {"severity": "warning", "code": "informational", "details": {"text": "Unknown code system"}},
        ],
    }
    mocked.post(f"{BASE}/Observation", status=400, json=outcome)

    with pytest.raises(ServerError) as caught:
        make_client(clock).create({"resourceType": "Observation"})

    assert str(caught.value) == "HTTP 400 on POST Observation: error/invalid, warning/informational"
    # The free text may quote patient data: it rides on the exception for the result file only.
    assert caught.value.server_text == (
        "error/invalid: Observation.status: minimum required = 1, "
        "but only found 0 (Missing status); warning/informational: Unknown code system"
    )
    assert caught.value.status == 400
    assert caught.value.url == f"{BASE}/Observation"


def test_error_without_operation_outcome_uses_the_reason_phrase_not_the_body(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.get(f"{BASE}/Patient", status=400, body=f"<html>bad query identifier={MRN}</html>")

    with pytest.raises(ServerError) as caught:
        make_client(clock).get("Patient", params={"identifier": MRN})

    assert str(caught.value) == "HTTP 400 on GET Patient (Bad Request)"


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_without_renewable_auth_are_access_denied_for_that_request_without_retry(
    mocked: responses.RequestsMock, clock: FakeClock, status: int
) -> None:
    mocked.get(f"{BASE}/Patient/p1", status=status)

    with pytest.raises(AccessDenied) as caught:
        make_client(clock, auth=BearerTokenAuth("tok")).read("Patient", "p1")

    # Not AuthError: that one stops the run; a closed patient is that patient's problem.
    assert not isinstance(caught.value, AuthError)
    assert caught.value.status == status
    assert len(mocked.calls) == 1


class CountingAuth(requests.auth.AuthBase):
    def __init__(self) -> None:
        self.generation = 1
        self.invalidations = 0

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer gen-{self.generation}"
        return r

    def invalidate(self) -> None:
        self.invalidations += 1
        self.generation += 1


def test_401_with_renewable_auth_invalidates_and_resends_once(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.get(f"{BASE}/Patient/p1", status=401)
    mocked.get(f"{BASE}/Patient/p1", json=patient("p1"))
    auth = CountingAuth()

    assert make_client(clock, auth=auth).read("Patient", "p1") is not None

    assert auth.invalidations == 1
    assert [c.request.headers["Authorization"] for c in mocked.calls] == ["Bearer gen-1", "Bearer gen-2"]
    assert clock.sleeps == []


def test_second_401_after_renewal_raises_auth_error(mocked: responses.RequestsMock, clock: FakeClock) -> None:
    mocked.get(f"{BASE}/Patient/p1", status=401)
    mocked.get(f"{BASE}/Patient/p1", status=401)
    auth = CountingAuth()

    with pytest.raises(AuthError):
        make_client(clock, auth=auth).read("Patient", "p1")

    assert auth.invalidations == 1
    assert len(mocked.calls) == 2


@pytest.mark.parametrize("status", [409, 412])
def test_409_and_412_on_update_raise_precondition_failed(
    mocked: responses.RequestsMock, clock: FakeClock, status: int
) -> None:
    mocked.put(
        f"{BASE}/ResearchSubject/rs1",
        status=status,
        json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "conflict"}]},
    )

    with pytest.raises(PreconditionFailed) as caught:
        make_client(clock).update({"resourceType": "ResearchSubject", "id": "rs1"}, if_match='W/"3"')

    assert mocked.calls[0].request.headers["If-Match"] == 'W/"3"'
    assert str(caught.value) == f"HTTP {status} on PUT ResearchSubject/rs1: error/conflict"
    assert len(mocked.calls) == 1


@pytest.mark.parametrize("status", [404, 410])
def test_read_of_a_missing_or_deleted_resource_returns_none(
    mocked: responses.RequestsMock, clock: FakeClock, status: int
) -> None:
    mocked.get(f"{BASE}/Patient/gone", status=status, body="<html>not here</html>")

    assert make_client(clock).read("Patient", "gone") is None


def test_404_outside_read_raises_server_error(mocked: responses.RequestsMock, clock: FakeClock) -> None:
    mocked.get(f"{BASE}/Patient/x/$everything", status=404)

    with pytest.raises(ServerError) as caught:
        make_client(clock).get("Patient/x/$everything")

    assert caught.value.status == 404


@pytest.mark.parametrize("bad_id", ["../metadata", "a/b", "", "x" * 65])
def test_ids_that_would_change_the_url_path_are_rejected(clock: FakeClock, bad_id: str) -> None:
    with pytest.raises(ValueError):
        make_client(clock).read("Patient", bad_id)


# -- responses and bookkeeping -------------------------------------------------------------------


def test_read_returns_etag_version_location_and_parsed_dates(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.get(
        f"{BASE}/Patient/p1",
        json=patient("p1"),
        headers={
            "ETag": 'W/"3"',
            "Content-Location": f"{BASE}/Patient/p1/_history/3",
            "Last-Modified": "Mon, 04 May 2026 08:30:00 GMT",
            "Date": "Tue, 05 May 2026 10:00:00 GMT",
        },
    )

    result = make_client(clock).read("Patient", "p1")

    assert result is not None
    assert (result.status, result.etag, result.version_id) == (200, 'W/"3"', "3")
    assert result.location == f"{BASE}/Patient/p1/_history/3"
    assert result.last_modified == datetime(2026, 5, 4, 8, 30, tzinfo=UTC)
    assert result.date == datetime(2026, 5, 5, 10, 0, tzinfo=UTC)
    assert result.body == patient("p1")


def test_vread_requests_the_history_version(mocked: responses.RequestsMock, clock: FakeClock) -> None:
    mocked.get(f"{BASE}/Patient/p1/_history/2", json=patient("p1"))

    result = make_client(clock).vread("Patient", "p1", "2")

    assert result is not None and result.body == patient("p1")


def test_conditional_update_puts_to_the_type_with_the_query(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.put(f"{BASE}/ResearchSubject", status=201, json={"resourceType": "ResearchSubject", "id": "n"})

    make_client(clock).conditional_update(
        {"resourceType": "ResearchSubject"}, "identifier=https://site.example/rs|NCT05495321-p1"
    )

    assert mocked.calls[0].request.url == (
        f"{BASE}/ResearchSubject?identifier=https://site.example/rs%7CNCT05495321-p1"
    )


def test_delete_of_a_missing_resource_is_returned_not_raised(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.delete(f"{BASE}/ResearchSubject/rs1", status=404)

    assert make_client(clock).delete("ResearchSubject", "rs1").status == 404


def test_transaction_posts_to_the_base_and_returns_the_response_bundle(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.post(f"{BASE}/", json={"resourceType": "Bundle", "type": "transaction-response", "entry": []})

    result = make_client(clock).transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})

    assert result["type"] == "transaction-response"


def test_capabilities_are_fetched_once_and_give_the_fhir_version(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"})
    client = make_client(clock)

    assert client.fhir_version() == "4.0.1"
    assert client.capabilities()["resourceType"] == "CapabilityStatement"
    assert len(mocked.calls) == 1


def test_last_server_date_is_the_tz_aware_date_header_of_the_latest_response(
    mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    mocked.get(f"{BASE}/Patient/p1", json=patient("p1"), headers={"Date": "Tue, 05 May 2026 10:00:00 GMT"})
    mocked.get(f"{BASE}/Patient/p2", json=patient("p2"), headers={"Date": "Tue, 05 May 2026 10:00:05 GMT"})
    client = make_client(clock)
    assert client.last_server_date is None

    client.read("Patient", "p1")
    client.read("Patient", "p2")

    assert client.last_server_date == datetime(2026, 5, 5, 10, 0, 5, tzinfo=UTC)
    assert client.last_server_date.tzinfo is not None


# -- TLS and configuration -----------------------------------------------------------------------


def test_verify_path_is_set_on_the_session_and_passed_with_each_request(
    mocked: responses.RequestsMock, clock: FakeClock, tmp_path: Any
) -> None:
    bundle_path = tmp_path / "hospital-ca.pem"
    bundle_path.write_text("-----BEGIN CERTIFICATE-----\n")
    session = requests.Session()
    mocked.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"})

    make_client(clock, verify=str(bundle_path), session=session).capabilities()

    assert session.verify == str(bundle_path)
    assert mocked.calls[0].request.req_kwargs["verify"] == str(bundle_path)  # type: ignore[attr-defined]


def test_missing_ca_bundle_is_a_config_error(clock: FakeClock) -> None:
    with pytest.raises(ConfigError, match="verify"):
        make_client(clock, verify="/nonexistent/ca.pem")


def test_verify_false_is_allowed_but_warned_about_once(
    mocked: responses.RequestsMock, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fhir_adapter")
    mocked.get(f"{BASE}/Patient/p1", json=patient("p1"))
    mocked.get(f"{BASE}/Patient/p2", json=patient("p2"))
    client = make_client(clock, verify=False)

    client.read("Patient", "p1")
    client.read("Patient", "p2")

    warnings = [r for r in caplog.records if "verification is DISABLED" in r.getMessage()]
    assert len(warnings) == 1
    assert mocked.calls[0].request.req_kwargs["verify"] is False  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "base", ["fhir.example.org/r4", "https://user:pw@fhir.example.org/r4", f"{BASE}?x=1"]
)
def test_malformed_base_urls_are_config_errors(base: str) -> None:
    with pytest.raises(ConfigError):
        FhirClient(base)


# -- logging hygiene -----------------------------------------------------------------------------


def test_debug_logs_name_query_parameters_but_hold_no_values_or_credentials(
    mocked: responses.RequestsMock, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "s3cr3t-access-token"
    next_url = f"{BASE}/Patient?_getpages=page-{MRN}"
    mocked.get(f"{BASE}/Patient", status=503)
    mocked.get(f"{BASE}/Patient", json=bundle([patient("a")], next_url))
    mocked.get(f"{BASE}/Patient", json=bundle([{**patient("b"), "name": [{"family": "Doe"}]}]))
    client = make_client(clock, auth=BearerTokenAuth(token))

    list(client.search("Patient", [("identifier", f"urn:mrn|{MRN}"), ("birthdate", "1961-02-03")]))

    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "birthdate, identifier" in text
    assert "_getpages" in text
    assert "GET Patient -> 503" in text and "GET Patient -> 200" in text
    for forbidden in (MRN, "1961-02-03", token, "Bearer", "Authorization", "Doe", "?"):
        assert forbidden not in text
