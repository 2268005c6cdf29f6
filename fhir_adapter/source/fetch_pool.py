"""Fetch patient records on a few threads, handing them on in the order they were asked for.

Fetching a record is waiting on the server; screening it is CPU work in the main thread. A small
pool of threads keeps ``threads`` requests in flight while the main thread screens, and yields the
records in candidate order, so the result file, the write-back and the sync state see exactly the
sequence one thread would have produced. At most ``ahead`` records are fetched before they are
consumed: memory stays bounded however many candidates there are.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def fetch_in_order(
    fetch: Callable[[T], R], items: Iterable[T], threads: int, ahead: int | None = None
) -> Iterator[R]:
    """``fetch(item)`` for every item, on ``threads`` threads, yielded in item order. An exception
    ``fetch`` raises is raised here at its item's turn (the items after it are not yielded); a consumer
    that stops early cancels what has not started."""
    if threads <= 1:
        for item in items:
            yield fetch(item)
        return
    limit = max(ahead or 2 * threads, threads)
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="fhir-fetch") as pool:
        try:
            for item in items:
                pending.append(pool.submit(fetch, item))
                if len(pending) >= limit:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
