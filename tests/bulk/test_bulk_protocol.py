"""Bulk Data protocol details: kick-off forms, status polling (Retry-After, X-Progress, caps, failures),
manifest parsing, DELETE."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from responses import matchers

from fhir_adapter.client.bulk import (
    BulkClient,
    ExportFailed,
    ExportRequest,
    ExportTimedOut,
    JobGone,
    parse_manifest,
)
from fhir_adapter.client.http import FhirClient
from fhir_adapter.errors import AuthError, ServerError
from fhir_adapter.settings import BulkSettings

BASE = "https://fhir.example.org/r4"
STATUS = f"{BASE}/$export-poll-status?_jobId=j1"
MANIFEST: dict[str, Any] = {
    "transactionTime": "2026-06-01T10:00:00.123+00:00",
    "request": f"{BASE}/$export?_type=Patient",
    "requiresAccessToken": True,
    "output": [{"type": "Patient", "url": f"{BASE}/Binary/a", "count": 3}],
    "error": [],
}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


@pytest.fixture
def clock() -> Clock:
    return Clock()


def bulk(clock: Clock, **settings: Any) -> BulkClient:
    client = FhirClient(BASE, sleep=clock.sleep, monotonic=clock.monotonic, max_retries=1)
    return BulkClient(client, BulkSettings(**settings), sleep=clock.sleep, monotonic=clock.monotonic)


def in_progress(
    mocked: responses.RequestsMock, headers: dict[str, str] | None = None, status: int = 202
) -> None:
    mocked.get(STATUS, status=status, headers=headers or {})


def done(mocked: responses.RequestsMock, body: dict[str, Any] | None = None) -> None:
    mocked.get(STATUS, json=body or MANIFEST)


# -- kick-off --------------------------------------------------------------------------------------


def test_kick_off_sends_prefer_respond_async_ndjson_type_since_and_type_filter(
    mocked: responses.RequestsMock, clock: Clock
) -> None:
    since = dt.datetime(2026, 5, 1, 8, 30, tzinfo=dt.UTC)
    mocked.get(
        f"{BASE}/$export",
        status=202,
        headers={"Content-Location": STATUS},
        match=[
            matchers.header_matcher({"Prefer": "respond-async", "Accept": "application/fhir+json"}),
            matchers.query_param_matcher(
                {
                    "_outputFormat": "application/fhir+ndjson",
                    "_type": "Condition,Patient",
                    "_since": "2026-05-01T08:30:00.000Z",
                    "_typeFilter": "Condition?code=http://snomed.info/sct|396230008",
                }
            ),
        ],
    )
    request = ExportRequest(
        types=("Condition", "Patient"),
        since=since,
        type_filters=("Condition?code=http://snomed.info/sct|396230008",),
    )

    assert bulk(clock).kick_off(request) == STATUS


def test_kick_off_at_group_and_patient_level_uses_their_paths(
    mocked: responses.RequestsMock, clock: Clock
) -> None:
    mocked.get(f"{BASE}/Group/g1/$export", status=202, headers={"Content-Location": STATUS})
    mocked.get(f"{BASE}/Patient/$export", status=202, headers={"Content-Location": STATUS})
    client = bulk(clock)

    client.kick_off(ExportRequest(level="group", group="g1", types=("Patient",)))
    client.kick_off(ExportRequest(level="patient", types=("Patient",)))

    assert client.kick_offs == 2


def test_kick_off_for_given_patients_posts_parameters_with_patient_references(
    mocked: responses.RequestsMock, clock: Clock
) -> None:
    mocked.post(
        f"{BASE}/Patient/$export", status=202, headers={"Content-Location": "$export-poll-status?_jobId=j1"}
    )
    request = ExportRequest(level="patient", types=("Condition", "Patient"), patients=("p1", "p2"))

    status = bulk(clock).kick_off(request)

    body = json.loads(mocked.calls[0].request.body)
    assert body["resourceType"] == "Parameters"
    assert {"name": "patient", "valueReference": {"reference": "Patient/p2"}} in body["parameter"]
    assert {"name": "_type", "valueString": "Condition,Patient"} in body["parameter"]
    assert mocked.calls[0].request.headers["Prefer"] == "respond-async"
    assert status == STATUS  # a relative Content-Location is resolved against the base


def test_a_long_query_goes_in_a_posted_parameters_body(mocked: responses.RequestsMock, clock: Clock) -> None:
    mocked.post(f"{BASE}/$export", status=202, headers={"Content-Location": STATUS})
    filters = tuple(f"Condition?code=http://example.org|{'X' * 40}{n}" for n in range(60))

    bulk(clock).kick_off(ExportRequest(types=("Condition",), type_filters=filters))

    params = json.loads(mocked.calls[0].request.body)["parameter"]
    assert sum(1 for p in params if p["name"] == "_typeFilter") == 60


def test_a_kick_off_without_content_location_is_an_error(
    mocked: responses.RequestsMock, clock: Clock
) -> None:
    mocked.get(f"{BASE}/$export", status=200, json={"resourceType": "Bundle"})

    with pytest.raises(ServerError, match="202 with Content-Location"):
        bulk(clock).kick_off(ExportRequest(types=("Patient",)))


def test_a_refused_kick_off_raises_with_its_status(mocked: responses.RequestsMock, clock: Clock) -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-supported"}]}
    mocked.get(f"{BASE}/$export", status=400, json=outcome)

    with pytest.raises(ServerError) as caught:
        bulk(clock).kick_off(ExportRequest(types=("Patient",), type_filters=("Patient?active=true",)))

    assert caught.value.status == 400


def test_export_request_key_differs_by_parameter_and_server() -> None:
    a = ExportRequest(types=("Patient",))
    assert a.key(BASE) == ExportRequest(types=("Patient",)).key(BASE)
    assert a.key(BASE) != ExportRequest(types=("Patient",), since=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)).key(
        BASE
    )
    assert a.key(BASE) != a.key("https://other.example.org/fhir/")


def test_export_request_describe_never_lists_patient_ids() -> None:
    text = ExportRequest(level="patient", types=("Patient",), patients=("secret-id-1",)).describe()

    assert "secret-id-1" not in text and "1 patient(s)" in text


# -- polling ---------------------------------------------------------------------------------------


def test_poll_caps_a_long_retry_after_at_the_maximum_wait(
    mocked: responses.RequestsMock, clock: Clock
) -> None:
    in_progress(mocked, {"Retry-After": "120", "X-Progress": "Build in progress"})
    done(mocked)

    manifest = bulk(clock, poll_max_wait=10).poll(STATUS)

    assert clock.sleeps == [10]
    assert manifest.output[0].count == 3


def test_poll_honours_a_short_retry_after_in_seconds(mocked: responses.RequestsMock, clock: Clock) -> None:
    in_progress(mocked, {"Retry-After": "3"})
    done(mocked)

    bulk(clock, poll_max_wait=10).poll(STATUS)

    assert clock.sleeps == [3]


def test_poll_honours_retry_after_as_an_http_date_against_the_servers_clock(
    mocked: responses.RequestsMock, clock: Clock
) -> None:
    # Our clock may be off; the Date header is the server's, Retry-After 4 s after it.
    in_progress(
        mocked, {"Date": "Mon, 01 Jun 2026 10:00:00 GMT", "Retry-After": "Mon, 01 Jun 2026 10:00:04 GMT"}
    )
    done(mocked)

    bulk(clock).poll(STATUS)

    assert clock.sleeps == [4]


def test_poll_never_waits_less_than_the_initial_wait_when_told_zero(
    mocked: responses.RequestsMock, clock: Clock
) -> None:
    in_progress(mocked, {"Retry-After": "0"})
    done(mocked)

    bulk(clock, poll_initial_wait=1.5).poll(STATUS)

    assert clock.sleeps == [1.5]


def test_poll_backs_off_exponentially_without_retry_after(
    mocked: responses.RequestsMock, clock: Clock
) -> None:
    for _ in range(5):
        in_progress(mocked)
    done(mocked)

    bulk(clock, poll_initial_wait=1, poll_max_wait=6).poll(STATUS)

    assert clock.sleeps == [1, 2, 4, 6, 6]


@pytest.mark.parametrize(
    ("header", "shown"),
    [
        ("50% done\x1b[31m", ": 50%"),
        ("Zhang Weiling: 3/8 files", ": 3/8"),
        ("Build in progress - Status set to IN_PROGRESS at 2026-06-01T10:00:00Z", ""),
    ],
)
def test_poll_logs_only_the_figure_of_x_progress_never_its_text(
    mocked: responses.RequestsMock,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    header: str,
    shown: str,
) -> None:
    in_progress(mocked, {"X-Progress": header, "Retry-After": "1"})
    done(mocked)
    caplog.set_level(logging.INFO, logger="fhir_adapter.client.bulk")

    bulk(clock).poll(STATUS)

    (line,) = [r.getMessage() for r in caplog.records if "in progress" in r.getMessage()]
    assert line.startswith(f"bulk export in progress (HTTP 202){shown}; next poll")


def test_poll_backs_off_on_429_and_gateway_errors(mocked: responses.RequestsMock, clock: Clock) -> None:
    in_progress(mocked, {"Retry-After": "2"}, status=429)
    in_progress(mocked, status=503)
    done(mocked)

    bulk(clock, poll_initial_wait=1).poll(STATUS)

    assert clock.sleeps == [2, 2]


def test_poll_gives_up_after_the_export_timeout_and_says_the_job_is_kept(
    mocked: responses.RequestsMock, clock: Clock
) -> None:
    for _ in range(4):
        in_progress(mocked, {"Retry-After": "10"})

    with pytest.raises(ExportTimedOut, match="run again to resume"):
        bulk(clock, poll_max_wait=10, export_timeout=35).poll(STATUS)

    assert sum(clock.sleeps) <= 35


def test_a_500_with_an_operation_outcome_is_the_jobs_failure(
    mocked: responses.RequestsMock, clock: Clock
) -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}
    mocked.get(STATUS, status=500, json=outcome)

    with pytest.raises(ExportFailed, match="job failed"):
        bulk(clock).poll(STATUS)


def test_a_4xx_on_the_status_url_is_the_jobs_failure(mocked: responses.RequestsMock, clock: Clock) -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid"}]}
    mocked.get(STATUS, status=400, json=outcome)

    with pytest.raises(ExportFailed):
        bulk(clock).poll(STATUS)


def test_a_404_on_the_status_url_means_the_job_is_gone(mocked: responses.RequestsMock, clock: Clock) -> None:
    mocked.get(STATUS, status=404)

    with pytest.raises(JobGone):
        bulk(clock).poll(STATUS)


def test_401_on_the_status_url_stays_an_auth_error(mocked: responses.RequestsMock, clock: Clock) -> None:
    mocked.get(STATUS, status=401)

    with pytest.raises(AuthError):
        bulk(clock).poll(STATUS)


def test_poll_asks_for_json(mocked: responses.RequestsMock, clock: Clock) -> None:
    mocked.get(STATUS, json=MANIFEST, match=[matchers.header_matcher({"Accept": "application/json"})])

    bulk(clock).poll(STATUS)


# -- manifest --------------------------------------------------------------------------------------


def test_manifest_types_output_error_deleted_and_transaction_time() -> None:
    body = {
        **MANIFEST,
        "error": [{"type": "OperationOutcome", "url": "Binary/e1"}],
        "deleted": [{"type": "Bundle", "url": f"{BASE}/Binary/d1"}],
        "message": "partial",
    }

    manifest = parse_manifest(body, STATUS)

    assert manifest.transaction_time == dt.datetime(2026, 6, 1, 10, 0, 0, 123000, tzinfo=dt.UTC)
    assert manifest.requires_access_token is True
    assert manifest.error[0].url == f"{BASE}/Binary/e1"  # relative: against the status URL
    assert manifest.deleted[0].type == "Bundle"
    assert manifest.has_message


def test_manifest_without_requires_access_token_sends_no_token() -> None:
    body = {k: v for k, v in MANIFEST.items() if k != "requiresAccessToken"}

    assert parse_manifest(body, STATUS).requires_access_token is False


@pytest.mark.parametrize(
    "change",
    [
        {"transactionTime": None},
        {"transactionTime": "2026-06-01T10:00:00"},  # no zone: not an instant
        {"output": {"type": "Patient"}},
        {"output": [{"type": "Patient"}]},
        {"output": [{"type": "patient", "url": "x"}]},
    ],
)
def test_a_malformed_manifest_is_an_error(change: dict[str, Any]) -> None:
    with pytest.raises(ServerError, match="manifest"):
        parse_manifest({**MANIFEST, **change}, STATUS)


@pytest.mark.parametrize(
    "body",
    [
        # an undecodable byte in a URL: requests' resp.json() would have read it as U+FFFD
        json.dumps(MANIFEST).replace("Binary/a", "Binary/\udcff", 1).encode("utf-8", "surrogateescape"),
        json.dumps(MANIFEST).encode("utf-16"),  # JSON in FHIR is UTF-8
        json.dumps(MANIFEST).encode("utf-8").replace(b"true", b"NaN", 1),  # not JSON
    ],
    ids=["broken-utf8", "utf16", "nan"],
)
def test_a_manifest_that_is_not_utf8_json_is_an_error_not_a_guess(
    mocked: responses.RequestsMock, clock: Clock, body: bytes
) -> None:
    mocked.get(STATUS, body=body, content_type="application/json")

    with pytest.raises(ServerError, match="manifest"):
        bulk(clock).poll(STATUS)


def test_a_manifest_with_a_utf8_bom_is_read(mocked: responses.RequestsMock, clock: Clock) -> None:
    mocked.get(STATUS, body=b"\xef\xbb\xbf" + json.dumps(MANIFEST).encode(), content_type="application/json")

    assert [f.url for f in bulk(clock).poll(STATUS).output] == [f"{BASE}/Binary/a"]


def test_a_negative_or_non_integer_count_is_ignored() -> None:
    body = {
        **MANIFEST,
        "output": [
            {"type": "Patient", "url": "Binary/a", "count": -1},
            {"type": "Patient", "url": "Binary/b", "count": True},
        ],
    }

    assert [f.count for f in parse_manifest(body, STATUS).output] == [None, None]


# -- delete ----------------------------------------------------------------------------------------


def test_delete_of_a_completed_job_that_is_already_gone_is_fine(
    mocked: responses.RequestsMock, clock: Clock
) -> None:
    mocked.delete(STATUS, status=404)

    assert bulk(clock).delete(STATUS) is True


def test_a_failed_delete_is_logged_not_raised(
    mocked: responses.RequestsMock, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    mocked.delete(STATUS, status=400)

    assert bulk(clock).delete(STATUS) is False
    assert any("DELETE of the job failed" in r.getMessage() for r in caplog.records)
