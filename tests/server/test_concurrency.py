"""Issue 10.4: records fetched by a bounded pool, with manners, and the same results in the same order.

Against the loopback fault server (real sockets and threads): ``--concurrency N`` writes the result
file ``--concurrency 1`` writes; fetches really overlap; ``--max-rps`` spaces request starts; a 429
pauses every fetch thread, not only the one that got it; the study's ResearchSubjects are listed once
instead of searched per patient; and the summary counts every request the server received.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from faultserver import FaultServer, Reply, Request, Reset, outcome

from .faultrun import load_patients, screen

MANY = tuple(f"c{i:02d}" for i in range(24))
EVERYTHING = r"Patient/c\d\d/\$everything"


def _without_timestamp(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    doc.pop("generated")
    return doc


def test_concurrency_4_writes_the_result_file_concurrency_1_writes(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_retries: None
) -> None:
    load_patients(server, *MANY)
    # Failures in the middle too: their errors must come out in the same place.
    server.on("GET", r"Patient/c05/\$everything", Reply(500, json=outcome("exception")), repeat=True)
    server.on("GET", r"Patient/c11/\$everything", Reset(), repeat=True)
    one, four = tmp_path / "one.json", tmp_path / "four.json"

    first = screen(capsys, server, one, "--concurrency", "1", verbose=False)
    second = screen(capsys, server, four, "--concurrency", "4", verbose=False)

    assert first.code == second.code == 3
    assert [e["resource"] for e in second.result["errors"]] == ["Patient/c05", "Patient/c11"]  # type: ignore[index]
    assert _without_timestamp(four) == _without_timestamp(one)
    assert len(second.screened()) == len(MANY) - 2


def test_with_concurrency_2_two_record_fetches_are_at_the_server_at_once(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, *MANY[:6])
    both = threading.Barrier(2, timeout=10)
    met: list[bool] = []

    def meet(request: Request) -> None:
        # Passes only if a second fetch arrives while this one is held; with one thread it times out.
        try:
            both.wait()
            met.append(True)
        except threading.BrokenBarrierError:
            met.append(False)
        return None  # then the store answers

    server.on("GET", r"Patient/c0[01]/\$everything", meet, meet)

    run = screen(capsys, server, tmp_path / "r.json", "--concurrency", "2", verbose=False)

    assert run.code == 0, run.err[-2000:]
    assert met == [True, True]


def test_max_rps_spaces_the_requests_the_server_receives(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, *MANY[:8])

    run = screen(capsys, server, tmp_path / "r.json", "--concurrency", "4", "--max-rps", "20", verbose=False)

    assert run.code == 0, run.err[-2000:]
    arrivals = sorted(r.received for r in server.requests)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) > 10
    # One start every 50 ms, whatever the four threads do; arrival times carry the loopback's jitter,
    # so single gaps get a margin (unpaced, four threads put requests within a millisecond).
    assert (arrivals[-1] - arrivals[0]) / len(gaps) >= 0.048
    assert min(gaps) >= 0.02
    assert "at most 20/s" in run.err


def test_a_429_pauses_every_fetch_thread_not_only_the_one_that_got_it(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, *MANY)
    turned_away: list[float] = []

    def throttle(request: Request) -> Reply:
        turned_away.append(request.received)
        return Reply(429, json=outcome("throttled"), headers={"Retry-After": "1"})

    def slow(request: Request) -> None:
        time.sleep(0.15)  # each record takes a while, so unpaused threads are still busy below
        return None  # the store answers

    server.on("GET", r"Patient/c03/\$everything", throttle)
    server.on("GET", EVERYTHING, slow, repeat=True)

    run = screen(capsys, server, tmp_path / "r.json", "--concurrency", "4", verbose=False)

    assert run.code == 0, run.err[-2000:]
    assert len(run.screened()) == len(MANY)
    (at,) = turned_away
    # Once the client has read the 429 (0.3 s is ample, even on a busy machine), nothing starts until
    # its 1 s pause ends: not the other fetch threads, not the main thread's write-back lookups. Without
    # the shared pause the other threads go on filling the pool's look-ahead (eight records) meanwhile.
    during = [r for r in server.requests if at + 0.3 < r.received < at + 0.95]
    assert len(during) <= 1, [r.path for r in during]
    assert "paused" in run.err


def test_the_studys_subjects_are_listed_once_not_searched_per_patient(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, *MANY[:10])
    screen(capsys, server, tmp_path / "first.json", "--write-back", verbose=False)
    before = len(server.requests)

    again = screen(capsys, server, tmp_path / "again.json", "--write-back", "--concurrency", "4")

    assert again.code == 0, again.err[-2000:]
    searches = [r for r in server.requests[before:] if r.method == "GET" and r.path == "ResearchSubject"]
    assert len(searches) == 1 and searches[0].param("study") is not None
    assert searches[0].param("_revinclude") == "Provenance:target"
    assert not [r for r in server.requests[before:] if r.method in ("POST", "PUT")]  # nothing changed
    assert "unchanged 10" in again.err


def test_a_dry_run_before_the_study_exists_searches_no_researchsubject(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, *MANY[:10])

    run = screen(capsys, server, tmp_path / "dry.json", verbose=False)

    assert run.code == 0, run.err[-2000:]
    assert not [r for r in server.requests if r.path == "ResearchSubject"]
    assert "would create 10" in run.err


def test_a_server_refusing_the_study_listing_gets_one_search_per_patient_and_the_same_outcome(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, *MANY[:4])
    screen(capsys, server, tmp_path / "first.json", "--write-back", verbose=False)

    def refuse_listing(request: Request) -> Reply | None:
        return Reply(400, json=outcome("not-supported")) if request.param("study") else None

    server.on("GET", "ResearchSubject", refuse_listing, repeat=True)
    before = len(server.requests)

    again = screen(capsys, server, tmp_path / "again.json", "--write-back", verbose=False)

    assert again.code == 0, again.err[-2000:]
    searches = [r for r in server.requests[before:] if r.method == "GET" and r.path == "ResearchSubject"]
    assert len(searches) == 1 + 4  # the refused listing, then each patient by identifier
    assert not [r for r in server.requests[before:] if r.method in ("POST", "PUT")]
    assert "unchanged 4" in again.err


@pytest.mark.parametrize("concurrency", ["1", "4"])
def test_the_summary_counts_every_request_the_server_received(
    concurrency: str, server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_patients(server, *MANY[:6])

    run = screen(capsys, server, tmp_path / "r.json", "--write-back", "--concurrency", concurrency)

    assert run.code == 0, run.err[-2000:]
    assert f"Requests sent: {len(server.requests)} in all" in run.err


# -- fetching ahead while the candidate search pages ------------------------------------------------


def test_records_are_fetched_while_the_candidate_search_is_still_paging(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_retries: None
) -> None:
    with FaultServer(page_size=5) as server:
        load_patients(server, *MANY[:12])
        fetched = threading.Event()

        def everything(request: Request) -> None:
            fetched.set()
            return None

        def later_page(request: Request) -> Reply | None:
            # The search's next pages wait for a record fetch: one only comes meanwhile if records
            # are fetched ahead; otherwise the wait runs out and the search fails.
            if request.param("_offset") and not fetched.wait(10):
                return Reply(500, json=outcome("exception"))
            return None

        server.on("GET", EVERYTHING, everything, repeat=True)
        server.on("GET", "Condition", later_page, repeat=True)

        run = screen(capsys, server, tmp_path / "r.json", "--concurrency", "4", verbose=False)

    assert run.code == 0, run.err[-2000:]
    assert run.screened() == [f"Patient/{p}" for p in sorted(MANY[:12])]


def test_records_fetched_ahead_come_out_where_concurrency_1_puts_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_retries: None
) -> None:
    with FaultServer(page_size=5) as server:
        load_patients(server, *MANY)
        # A failure among the first pages' patients too: its error must come out in the same place.
        server.on("GET", r"Patient/c01/\$everything", Reply(500, json=outcome("exception")), repeat=True)
        one, four = tmp_path / "one.json", tmp_path / "four.json"

        first = screen(capsys, server, one, "--concurrency", "1", verbose=False)
        second = screen(capsys, server, four, "--concurrency", "4", verbose=False)

    assert first.code == second.code == 3
    assert _without_timestamp(four) == _without_timestamp(one)
    assert len(second.screened()) == len(MANY) - 1


def test_searches_and_records_fetched_ahead_share_the_concurrency_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FaultServer(page_size=5) as server:
        load_patients(server, *MANY)
        lock = threading.Lock()
        at_once = [0]
        most = [0]

        def held(request: Request) -> None:
            # Each GET is held a moment so that overlapping ones are seen together.
            with lock:
                at_once[0] += 1
                most[0] = max(most[0], at_once[0])
            time.sleep(0.02)
            with lock:
                at_once[0] -= 1
            return None

        server.on("GET", r"Condition|Patient/c\d\d/\$everything", held, repeat=True)

        run = screen(capsys, server, tmp_path / "r.json", "--concurrency", "3", verbose=False)

    assert run.code == 0, run.err[-2000:]
    assert 2 <= most[0] <= 3
