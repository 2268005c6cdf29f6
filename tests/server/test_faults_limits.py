"""Issue 8, class 5: limits on everything a server controls.

A deadline over each whole exchange (a trickling body or trickling headers are cut off), a maximum
response size (an oversized $everything falls back to typed searches), a maximum number of pages, a
``Retry-After`` beyond the retry budget gives up at once, and a run-level throttling budget ends a 429
storm in bounded time. Wall-time bounds here are generous bounds against hangs, not performance claims.
"""

from __future__ import annotations

import email.utils
import time
from pathlib import Path

import pytest
from faultserver import (
    FaultServer,
    Huge,
    Reply,
    Request,
    Silence,
    Trickle,
    TrickleHeaders,
    outcome,
    searchset,
)
from fhirdata import baseline, for_patient

from .faultrun import load_patients, screen

EVERYTHING = r"Patient/p2/\$everything"


def everything_of(pid: str) -> Reply:
    return Reply(json=searchset(for_patient(baseline(), pid)))


@pytest.mark.parametrize(
    "fault",
    [
        Trickle(everything_of("p2"), interval=0.05, chunk=1),  # ~20 bytes/s of a ~10 kB body
        TrickleHeaders(interval=0.05),
    ],
    ids=["body", "headers"],
)
def test_a_trickling_answer_is_cut_off_at_the_deadline_and_is_that_patients_error(
    fault: object, server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1", "p2", "p3")
    server.on("GET", EVERYTHING, fault, repeat=True)

    run = screen(capsys, server, tmp_path / "r.json", "--request-deadline", "2", "--timeout", "30")

    assert run.code == 3
    assert run.screened() == ["Patient/p1", "Patient/p3"]
    assert "within the 2 s deadline" in run.errors_for("Patient/p2")[0]["reason"]
    assert len(server.requests_to("GET", EVERYTHING)) == 1  # not resent: it would trickle again
    # Deadline 2 s, each read at most 2 s: the run ends in seconds, not after the ~10 minutes of body.
    assert run.seconds < 20


def test_silence_is_bounded_by_the_read_timeout_and_the_retry_budget(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_retries: None
) -> None:
    load_patients(server, "p1", "p2")
    server.on("GET", EVERYTHING, Silence(), repeat=True)

    run = screen(capsys, server, tmp_path / "r.json", "--timeout", "1")

    assert run.code == 3
    assert "ReadTimeout" in run.errors_for("Patient/p2")[0]["reason"]
    assert run.seconds < 30  # 6 attempts of 1 s


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "chunked-or-close"])
def test_an_oversized_everything_falls_back_to_typed_searches_for_that_patient(
    content_length: bool, server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1", "p2", "p3")
    server.on("GET", EVERYTHING, Huge(8 * 1024 * 1024, content_length=content_length), repeat=True)

    run = screen(capsys, server, tmp_path / "r.json", "--max-response-mb", "1")

    assert run.code == 0
    assert run.screened() == ["Patient/p1", "Patient/p2", "Patient/p3"]
    assert "1 patient(s) fetched with typed searches ($everything too large)" in run.err
    assert server.requests_to("GET", "Patient/p2")  # the typed read of the fallback
    assert not server.requests_to("GET", "Patient/p1")  # the others kept $everything


def test_an_oversized_typed_search_is_that_patients_error(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1", "p2")
    server.on("GET", EVERYTHING, Huge(3 * 1024 * 1024), repeat=True)
    server.on(
        "GET",
        "Observation",
        lambda r: Huge(3 * 1024 * 1024) if r.param("patient") == "p2" else None,
        repeat=True,
    )

    run = screen(capsys, server, tmp_path / "r.json", "--max-response-mb", "1")

    assert run.code == 3
    assert "larger than 1048576 bytes" in run.errors_for("Patient/p2")[0]["reason"]
    assert run.screened() == ["Patient/p1"]


def test_a_search_with_endless_pages_stops_at_max_pages(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1", "p2")

    def endless(request: Request) -> Reply:
        n = int(request.param("n") or 0)
        return Reply(json=searchset([], f"{server.base}/endless?n={n + 1}"))

    server.on(
        "GET", EVERYTHING, Reply(json=searchset(for_patient(baseline(), "p2"), f"{server.base}/endless?n=1"))
    )
    server.on("GET", "endless", endless, repeat=True)

    run = screen(capsys, server, tmp_path / "r.json", "--max-pages", "5")

    assert run.code == 3
    assert "more than 5 pages" in run.errors_for("Patient/p2")[0]["reason"]
    assert len(server.requests_to("GET", "endless")) == 4


def _http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@pytest.mark.parametrize(
    ("retry_after", "waited"),
    [("1", 1.0), ("date+2", 1.0), ("soon", 0.0), ("-1", 0.0), ("", 0.0), ("date-60", 0.0)],
)
def test_retry_after_in_every_form_is_honoured_or_ignored_when_invalid(
    retry_after: str, waited: float, server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1")
    if retry_after.startswith("date"):
        retry_after = _http_date(float(retry_after.removeprefix("date")))
    server.on("GET", r"Patient/p1/\$everything", Reply(429, headers={"Retry-After": retry_after}))

    run = screen(capsys, server, tmp_path / "r.json")

    assert run.code == 0
    assert len(server.requests_to("GET", r"Patient/p1/\$everything")) == 2
    assert run.seconds >= waited
    assert run.seconds < waited + 15


@pytest.mark.parametrize("retry_after", ["3600", "86400000", "date+7200"])
def test_a_retry_after_beyond_the_retry_budget_gives_up_at_once(
    retry_after: str, server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, "p1", "p2")
    if retry_after.startswith("date"):
        retry_after = _http_date(float(retry_after.removeprefix("date")))
    server.on("GET", EVERYTHING, Reply(503, headers={"Retry-After": retry_after}), repeat=True)

    run = screen(capsys, server, tmp_path / "r.json")

    assert run.code == 3
    assert "the server asked to wait" in run.errors_for("Patient/p2")[0]["reason"]
    assert len(server.requests_to("GET", EVERYTHING)) == 1
    assert run.seconds < 15


@pytest.mark.parametrize("retry_after", ["1", None])
def test_a_429_storm_ends_the_run_within_the_throttling_budget_with_a_clear_message(
    retry_after: str | None, server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server)
    headers = {"Retry-After": retry_after} if retry_after else {}
    # With Retry-After, every other answer is a 429: no patient fails outright, so only the budget can
    # end the run. Without it, every answer is a 429 and the client's own backoff spends the budget.
    answers = iter(range(10**6))
    every = 2 if retry_after else 1
    server.on(
        "GET",
        r"Patient/p\d/\$everything",
        lambda r: (
            Reply(429, json=outcome("throttled"), headers=headers) if next(answers) % every == 0 else None
        ),
        repeat=True,
    )

    run = screen(capsys, server, tmp_path / "r.json", "--throttle-budget", "2.5")

    assert run.code == 4
    assert "the server keeps throttling (HTTP 429)" in run.err
    assert "throttling budget of 2 s" in run.err or "throttling budget of 3 s" in run.err
    assert run.result is None
    assert run.seconds < 20


def test_a_bulk_file_whose_headers_trickle_is_cut_off_at_the_request_deadline(server: FaultServer) -> None:
    from fhir_adapter.client.http import FhirClient
    from fhir_adapter.client.transport import DeadlinePassed

    server.on("GET", "files/a", TrickleHeaders(interval=0.05), repeat=True)
    client = FhirClient(server.base, deadline_seconds=1.0)
    started = time.monotonic()

    with pytest.raises(DeadlinePassed):
        client.open_stream(f"{server.base}/files/a", send_auth=False)
    assert time.monotonic() - started < 10  # the headers alone would take minutes
