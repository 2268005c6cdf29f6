"""The exchange deadline's watchdog: one thread for every exchange, finished deadlines dropped, and an
earlier deadline never waits behind a later one. (The trickling-server tests in test_faults_limits.py
show a fired deadline cutting a real connection.)"""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import pytest

from fhir_adapter.client import transport
from fhir_adapter.client.transport import Watch


def _wait_for(predicate: Any, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_many_exchanges_start_at_most_one_thread_for_their_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    real_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    for _ in range(50):
        with Watch(30):
            pass

    assert len(started) <= 1  # a timer per exchange would be 50


def test_finished_deadlines_do_not_pile_up_in_the_watchdog() -> None:
    for _ in range(10_000):
        with Watch(300):  # far in the future: only compaction can drop them
            pass

    assert transport._WATCHDOG.pending() < 200


def test_an_earlier_deadline_fires_on_time_while_a_later_one_is_pending() -> None:
    later, earlier = Watch(60), Watch(0.2)
    later.__enter__()
    try:
        earlier.__enter__()
        try:
            assert _wait_for(lambda: earlier.fired, 5.0)
            assert not later.fired
        finally:
            earlier.__exit__(None, None, None)
    finally:
        later.__exit__(None, None, None)


def test_a_finished_exchange_is_never_fired() -> None:
    with Watch(0.05) as watch:
        pass
    time.sleep(0.3)

    assert not watch.fired


def _child_deadline_fires(out: Any) -> None:
    with Watch(0.1) as watch:
        _wait_for(lambda: watch.fired, 5.0)
    out.put(watch.fired)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_deadlines_still_fire_in_a_forked_child_of_a_process_that_used_them() -> None:
    with Watch(30):
        pass  # the parent's watchdog thread now exists; the child has only its memory
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_deadline_fires, args=(out,))
    child.start()
    fired = out.get(timeout=30)
    child.join(timeout=30)

    assert fired is True
