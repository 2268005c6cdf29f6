"""The client's pacing: request starts spaced under max_rps, and one pause for every thread on a 429."""

from __future__ import annotations

import pytest

from fhir_adapter.client.pacing import Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def pacer(clock: Clock, max_rps: float | None = None) -> Pacer:
    return Pacer(max_rps, sleep=clock.sleep, monotonic=clock.monotonic)


def test_without_a_limit_or_a_pause_a_turn_never_waits() -> None:
    clock = Clock()
    p = pacer(clock)
    for _ in range(100):
        p.wait_turn()
    assert clock.sleeps == []


def test_max_rps_spaces_request_starts_evenly() -> None:
    clock = Clock()
    p = pacer(clock, max_rps=4)
    for _ in range(5):
        p.wait_turn()
    # the first goes at once, each next one a quarter second after the one before
    assert clock.sleeps == [0.25, 0.25, 0.25, 0.25]
    assert p.waited_for_rate == pytest.approx(1.0)


def test_a_slow_caller_under_the_limit_is_not_delayed() -> None:
    clock = Clock()
    p = pacer(clock, max_rps=4)
    p.wait_turn()
    clock.now += 1.0
    p.wait_turn()
    assert clock.sleeps == []


def test_a_pause_makes_the_next_turn_wait_for_it() -> None:
    clock = Clock()
    p = pacer(clock)
    assert p.pause(3) == 3
    p.wait_turn()
    assert clock.sleeps == [3]


def test_overlapping_pauses_count_once_not_once_per_thread() -> None:
    clock = Clock()
    p = pacer(clock)
    assert p.pause(3) == 3
    clock.now += 1
    assert p.extension(3) == pytest.approx(1)  # until now+3 = 1 s past the pause in force
    assert p.pause(3) == pytest.approx(1)
    assert p.pause(1) == 0  # inside the pause already running
    assert p.paused_seconds == pytest.approx(4)


def test_a_turn_after_a_pause_still_takes_a_rate_slot() -> None:
    clock = Clock()
    p = pacer(clock, max_rps=2)
    p.wait_turn()
    p.pause(2)
    p.wait_turn()
    p.wait_turn()
    assert clock.sleeps == [2, 0.5]


def test_a_sleep_that_does_not_move_the_clock_does_not_spin() -> None:
    # Tests give the client a sleep that returns at once; the pause then counts as slept.
    p = Pacer(None, sleep=lambda s: None, monotonic=lambda: 5.0)
    p.pause(10)
    p.wait_turn()  # returns instead of looping for ever


def test_max_rps_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Pacer(0, sleep=lambda s: None, monotonic=lambda: 0.0)
