"""Bounded HTTP exchanges: one wall-clock deadline over connect, send, headers and body, and a size cap.

``requests`` timeouts bound each socket operation, not the exchange: a server that sends one byte
every few seconds (a "trickling" body, or trickling headers) never trips a read timeout and can hold a
request for hours. Here a watchdog thread (one for every exchange of the process) shuts the
connection's socket down when the deadline passes, which wakes the blocked read wherever it is (headers
or body); the caller sees :class:`Watch.fired` and reports the deadline instead of whatever the
truncated read looked like.

The socket is found through connection classes of our own that register themselves with the exchange
running on this thread (``requests`` gives no handle on the connection before the headers are in).
A session given by the caller without :class:`WatchedAdapter` still gets the size cap, and the
deadline between body chunks.

Bodies are read in chunks and counted (after decompression, so a gzip bomb counts as what it becomes);
past ``max_bytes`` reading stops and :class:`BodyTooLarge` is raised.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.auth
import requests.sessions
from requests.utils import get_environ_proxies
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

CHUNK: Final = 64 * 1024

_local = threading.local()


class DeadlinePassed(Exception):
    """The exchange's deadline fired before the answer was complete."""


class BodyTooLarge(Exception):
    """The response body (or its Content-Length) exceeds the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {limit} bytes")
        self.limit = limit


class Watch:
    """The deadline of one exchange. ``fired`` tells the caller that a failure (or a truncated body)
    was the deadline's doing."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self._seconds = max(seconds, 0.0)
        self.done = False
        self.fired = False

    def __enter__(self) -> Watch:
        _local.watch = self
        _WATCHDOG.add(time.monotonic() + self._seconds, self)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.done = True
            self._connections.clear()
        _WATCHDOG.finished()
        _local.watch = None

    def attach(self, connection: Any) -> None:
        with self._lock:
            if not self.done:
                self._connections.append(connection)
            fired = self.fired
        if fired:
            _shutdown(connection)

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            connections = list(self._connections)
        for connection in connections:
            _shutdown(connection)


class _Watchdog:
    """One thread for the deadlines of every exchange of the process, not a timer thread per request
    (starting and stopping a thread cost more CPU than a small request itself).

    Deadlines wait in a heap; a finished exchange is only marked done, and the heap is rebuilt without
    the finished ones once they are the majority, so it holds about as many entries as exchanges in
    flight within one deadline of each other, not every request of the run."""

    _COMPACT_AT = 64

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Empty, with no thread (also what a forked child starts from: it has the heap, perhaps a
        lock held mid-update, but not the thread)."""
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Watch]] = []
        self._seq = itertools.count()
        self._finished = 0
        self._thread: threading.Thread | None = None

    def add(self, when: float, watch: Watch) -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="fhir-adapter-deadlines", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (when, next(self._seq), watch))
            if self._heap[0][2] is watch:  # earlier than what the thread sleeps towards
                self._cond.notify()

    def finished(self) -> None:
        with self._cond:
            self._finished += 1
            if self._finished >= self._COMPACT_AT and self._finished * 2 >= len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
                self._finished = 0

    def pending(self) -> int:
        """Entries in the heap, finished ones included (what compaction bounds)."""
        with self._cond:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2].done:
                        heapq.heappop(self._heap)
                        self._finished = max(self._finished - 1, 0)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        watch = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(wait)
            watch.fire()


_WATCHDOG: Final = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WATCHDOG.reset)


def _shutdown(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    # shutdown, not close: it wakes a read blocked in another thread; urllib3 then discards the
    # connection instead of reusing it.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _attach_current(connection: Any) -> None:
    watch = getattr(_local, "watch", None)
    if isinstance(watch, Watch):
        watch.attach(connection)


class _WatchedHTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach_current(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach_current(self)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS: Final = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class WatchedAdapter(requests.adapters.HTTPAdapter):
    """An ``HTTPAdapter`` whose connections let a :class:`Watch` cut them off at the deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        # SOCKS proxies bring pool classes of their own; those keep the per-chunk deadline only.
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


class _NoAmbientCredentials(requests.auth.AuthBase):
    """The session's own "auth": it adds nothing. With none set, ``requests`` looks a request without
    credentials up in ``~/.netrc`` (two file checks a request) and sends what it finds there; the
    adapter's credentials are the ones its settings name, for the origin they name (a Bulk Data file on
    a storage host is fetched without them unless allowed), never ones a file on the machine adds."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        return r


class WatchedSession(requests.Session):
    """A ``requests.Session`` that reads the proxy settings of the environment (``HTTPS_PROXY``,
    ``NO_PROXY``, ...) and its CA bundle (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) once per origin,
    as ``requests`` would for every request (a walk over the whole environment each time: about 4 % of
    the time a typed-search run holds the interpreter lock), and never reads ``~/.netrc``."""

    def __init__(self) -> None:
        super().__init__()
        self.auth = _NoAmbientCredentials()
        self._environment: dict[tuple[str, str], tuple[dict[str, str], str | None]] = {}

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        if (
            not self.trust_env
            or not isinstance(url, str)
            or not isinstance(proxies, dict)
            or "no_proxy" in proxies
        ):
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        origin = urlsplit(url)[:2]  # scheme and host[:port]: what the proxy choice depends on
        found = self._environment.get(origin)
        if found is None:
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            found = self._environment.setdefault(origin, (get_environ_proxies(url), bundle))
        env_proxies, bundle = found
        for key, value in env_proxies.items():
            proxies.setdefault(key, value)
        if verify is True or verify is None:
            verify = bundle or verify
        return {
            "proxies": _merge(proxies, self.proxies),
            "stream": _merge(stream, self.stream),
            "verify": _merge(verify, self.verify),
            "cert": _merge(cert, self.cert),
        }


# requests' own merge of a request's setting over the session's (its stub leaves it unannotated).
_merge: Callable[[Any, Any], Any] = requests.sessions.merge_setting


def watched_session(connections: int = 10) -> requests.Session:
    """``connections``: kept-alive connections per host, at least the threads that share the session
    (fewer would make urllib3 open and discard a connection per request)."""
    session = WatchedSession()
    adapter = WatchedAdapter(pool_connections=10, pool_maxsize=max(connections, 1))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def read_body(resp: requests.Response, max_bytes: int, watch: Watch) -> bytes:
    """The whole (decoded) body, at most ``max_bytes``; the response is consumed or closed after."""
    length = resp.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > max_bytes:
        resp.close()
        raise BodyTooLarge(max_bytes)
    chunks: list[bytes] = []
    total = 0
    for chunk in resp.iter_content(CHUNK):
        total += len(chunk)
        if total > max_bytes:
            resp.close()
            raise BodyTooLarge(max_bytes)
        chunks.append(chunk)
        if watch.fired:
            resp.close()
            break
    body = b"".join(chunks)
    # What the rest of requests (resp.content, resp.json()) reads.
    resp._content = body
    return body


class Stalled(Exception):
    """A streamed body's next chunk did not arrive in time."""


def paced_chunks(resp: requests.Response, seconds: float) -> Iterator[bytes]:
    """A streamed body's chunks (decoded), each of which must arrive within ``seconds``: a file of any
    size may take as long as it needs, a server that trickles it cannot hold the run (the watchdog cuts
    the connection and :class:`Stalled` is raised)."""
    connection = getattr(resp.raw, "connection", None)
    chunks = resp.iter_content(CHUNK)
    while True:
        with Watch(seconds) as watch:
            if connection is not None:
                watch.attach(connection)
            try:
                chunk = next(chunks, None)
            except requests.exceptions.RequestException:
                if watch.fired:
                    raise Stalled() from None
                raise
            if watch.fired:
                raise Stalled()
        if chunk is None:
            return
        yield chunk


def exchange(
    session: requests.Session,
    method: str,
    url: str,
    *,
    deadline: float,
    max_bytes: int,
    **kwargs: Any,
) -> requests.Response:
    """One request under ``deadline`` (seconds, the whole exchange) with its body read (at most
    ``max_bytes``). Never follows redirects. Raises ``DeadlinePassed``, ``BodyTooLarge`` or what
    ``requests`` raises; a failure caused by the deadline is always ``DeadlinePassed``."""
    with Watch(deadline) as watch:
        return _within(
            watch,
            lambda: session.request(method, url, allow_redirects=False, stream=True, **kwargs),
            lambda resp: read_body(resp, max_bytes, watch),
        )


def headers_within(
    session: requests.Session, method: str, url: str, *, deadline: float, **kwargs: Any
) -> requests.Response:
    """One request whose headers must arrive within ``deadline``; the body is left unread (a file to
    stream, at the pace :func:`paced_chunks` allows). Never follows redirects."""
    with Watch(deadline) as watch:
        return _within(
            watch, lambda: session.request(method, url, allow_redirects=False, stream=True, **kwargs)
        )


def _within(
    watch: Watch,
    send: Callable[[], requests.Response],
    then: Callable[[requests.Response], object] | None = None,
) -> requests.Response:
    """``send()`` (and ``then`` on its response) under ``watch``: a failure the deadline caused is
    ``DeadlinePassed``, whatever the cut-off read looked like."""
    try:
        resp = send()
        if then is not None:
            then(resp)
    except requests.exceptions.RequestException:
        if watch.fired:
            raise DeadlinePassed() from None
        raise
    if watch.fired:
        resp.close()
        raise DeadlinePassed()
    return resp
