"""How fast one client may send: a request-rate limit and a pause that a 429 imposes on every thread.

A client fetching patient records with several threads must slow down as a whole when the server says
"too many requests": if only the thread that got the 429 waited, the others would keep the rate up
and collect 429s of their own. So a ``Retry-After`` (or the backoff that stands in for one) moves a
shared "not before" time that every thread waits for before its next request; several threads
throttled at once push it out once, not once each, and the throttling budget counts wall time
paused, not the sum of the threads' waits.

``max_rps`` spaces request starts evenly (no bursts): at most one every ``1 / max_rps`` seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Pacer:
    """Shared by every thread of one client. ``sleep`` and ``monotonic`` are the client's (tests drive
    them)."""

    def __init__(
        self,
        max_rps: float | None,
        *,
        sleep: Callable[[float], None],
        monotonic: Callable[[], float],
    ) -> None:
        if max_rps is not None and max_rps <= 0:
            raise ValueError("max_rps must be > 0 (or None for no limit)")
        self._interval = 1.0 / max_rps if max_rps else 0.0
        self._sleep = sleep
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._next_start = 0.0
        self.paused_seconds = 0.0  # wall time the pauses added, all threads together
        self.waited_for_rate = 0.0  # time threads spent waiting for the rate limit, summed

    @property
    def limited(self) -> bool:
        return self._interval > 0

    def wait_turn(self) -> None:
        """Block until this thread may send: after any pause, and at its slot under the rate limit."""
        served = 0.0  # the pause this call has slept through (a test's sleep may not move the clock)
        while True:
            with self._lock:
                now = self._monotonic()
                if now < self._paused_until and self._paused_until > served:
                    wait, slot = self._paused_until - now, False
                    served = self._paused_until
                elif self._interval:
                    start = max(self._next_start, now)
                    self._next_start = start + self._interval
                    wait, slot = start - now, True
                    if wait <= 0:
                        return
                    self.waited_for_rate += wait
                else:
                    return
            self._sleep(wait)
            if slot:
                with self._lock:
                    if self._monotonic() >= self._paused_until or self._paused_until <= served:
                        return
                # A pause began while this thread waited for its slot: wait for the pause, then
                # take a new slot.

    def extension(self, seconds: float) -> float:
        """How much a pause of ``seconds`` from now would add to the pause in force."""
        with self._lock:
            return max(0.0, self._monotonic() + seconds - max(self._paused_until, self._monotonic()))

    def pause(self, seconds: float) -> float:
        """Every thread waits until ``seconds`` from now (or longer, if a pause already runs past it);
        returns the wall time added."""
        with self._lock:
            now = self._monotonic()
            until = now + max(seconds, 0.0)
            added = max(0.0, until - max(self._paused_until, now))
            if until > self._paused_until:
                self._paused_until = until
            self.paused_seconds += added
            return added
