"""At concurrency 1 the next record is fetched while the last one is screened, one request at a time,
and nothing more is fetched once a fetch has failed."""

from __future__ import annotations

import threading
import time

import pytest

from fhir_adapter.source.fetch_pool import fetch_in_order


def test_the_next_record_is_fetched_while_the_last_is_screened_one_at_a_time() -> None:
    started: list[int] = []
    in_flight = 0
    most = 0
    lock = threading.Lock()

    def fetch(n: int) -> int:
        nonlocal in_flight, most
        with lock:
            started.append(n)
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.01)
        with lock:
            in_flight -= 1
        return n

    seen = []
    for n in fetch_in_order(fetch, range(5), threads=1):
        # While record n is handled here, record n + 1 is already being fetched.
        deadline = time.monotonic() + 5
        while n < 4 and n + 1 not in started and time.monotonic() < deadline:
            time.sleep(0.001)
        assert n == 4 or n + 1 in started
        seen.append(n)
    assert seen == [0, 1, 2, 3, 4]
    assert most == 1  # never two requests at once


def test_nothing_is_fetched_after_a_failed_fetch() -> None:
    started: list[int] = []

    def fetch(n: int) -> int:
        started.append(n)
        if n == 2:
            raise RuntimeError("401 after a token refresh")
        return n

    got = []
    with pytest.raises(RuntimeError):
        for n in fetch_in_order(fetch, range(6), threads=1):
            got.append(n)
    time.sleep(0.05)
    assert got == [0, 1]
    assert started == [0, 1, 2]
