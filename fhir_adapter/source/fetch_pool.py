"""Fetch patient records on a few threads, handing them on in the order they were asked for.

Fetching a record is waiting on the server; screening it is CPU work in the main thread. A small
pool of threads keeps ``threads`` requests in flight while the main thread screens, and yields the
records in candidate order, so the result file, the write-back and the sync state see exactly the
sequence one thread would have produced. At most ``ahead`` records are fetched before they are
consumed: memory stays bounded however many candidates there are.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def fetch_in_order(
    fetch: Callable[[T], R],
    items: Iterable[T],
    threads: int,
    ahead: int | None = None,
    *,
    pool: Executor | None = None,
    started: Mapping[T, Future[R]] | None = None,
) -> Iterator[R]:
    """``fetch(item)`` for every item, on ``threads`` threads, yielded in item order. An exception
    ``fetch`` raises is raised here at its item's turn (the items after it are not yielded); a consumer
    that stops early cancels what has not started. ``pool``: a caller's pool of ``threads`` threads,
    already fetching ``started`` (see :func:`in_order`), instead of one of its own."""
    window = max(ahead or 2 * threads, threads)
    if pool is not None:
        yield from in_order(pool, fetch, items, window, started)
        return
    if threads <= 1:
        yield from _one_ahead(fetch, items)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="fhir-fetch") as own:
        yield from in_order(own, fetch, items, window)


def in_order(
    pool: Executor,
    fn: Callable[[T], R],
    items: Iterable[T],
    window: int,
    started: Mapping[T, Future[R]] | None = None,
) -> Iterator[R]:
    """``fn(item)`` for every item on ``pool`` (threads or processes), yielded in item order, with at
    most ``window`` submitted and not yet taken. ``started``: items already submitted (fetched ahead),
    whose futures are taken at their turn instead of submitting again. An exception ``fn`` raises is
    raised here at its item's turn; a consumer that stops early cancels what has not started."""
    ahead = dict(started or {})
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            future = ahead.pop(item, None)
            pending.append(future if future is not None else pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in [*pending, *ahead.values()]:
            future.cancel()


def _one_ahead(fetch: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """One request at a time, but the next record is fetched while the caller screens this one, so the
    screening's CPU (a few milliseconds a record) overlaps the wait on a remote server. (On the 2-core
    benchmark machine HAPI needs the very cores the screening uses: no change in time there.) The next
    fetch starts only once this one has succeeded, so a failure stops the run exactly where one thread
    doing both would have stopped: nothing more was asked of the server."""
    queue = iter(items)
    with ThreadPoolExecutor(1, thread_name_prefix="fhir-fetch") as pool:
        first = next(queue, _END)
        running = None if first is _END else pool.submit(fetch, first)  # type: ignore[arg-type]
        try:
            while running is not None:
                result = running.result()
                following = next(queue, _END)
                running = None if following is _END else pool.submit(fetch, following)  # type: ignore[arg-type]
                yield result
        finally:
            if running is not None:
                running.cancel()


_END = object()
