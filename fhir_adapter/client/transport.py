"""Bounded HTTP exchanges: one wall-clock deadline over connect, send, headers and body, and a size cap.

``requests`` timeouts bound each socket operation, not the exchange: a server that sends one byte
every few seconds (a "trickling" body, or trickling headers) never trips a read timeout and can hold a
request for hours. Here a timer shuts the connection's socket down when the deadline passes, which
wakes the blocked read wherever it is (headers or body); the caller sees :class:`Watch.fired` and reports
the deadline instead of whatever the truncated read looked like.

The socket is found through connection classes of our own that register themselves with the exchange
running on this thread (``requests`` gives no handle on the connection before the headers are in).
A session given by the caller without :class:`WatchedAdapter` still gets the size cap, and the
deadline between body chunks.

Bodies are read in chunks and counted (after decompression, so a gzip bomb counts as what it becomes);
past ``max_bytes`` reading stops and :class:`BodyTooLarge` is raised.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any, Final

import requests
import requests.adapters
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
        self._done = False
        self.fired = False
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> Watch:
        _local.watch = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
            self._connections.clear()
        self._timer.cancel()
        _local.watch = None

    def attach(self, connection: Any) -> None:
        with self._lock:
            if not self._done:
                self._connections.append(connection)
            fired = self.fired
        if fired:
            _shutdown(connection)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            connections = list(self._connections)
        for connection in connections:
            _shutdown(connection)


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


def watched_session(connections: int = 10) -> requests.Session:
    """``connections``: kept-alive connections per host, at least the threads that share the session
    (fewer would make urllib3 open and discard a connection per request)."""
    session = requests.Session()
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
        try:
            resp = session.request(method, url, allow_redirects=False, stream=True, **kwargs)
            read_body(resp, max_bytes, watch)
        except requests.exceptions.RequestException:
            if watch.fired:
                raise DeadlinePassed() from None
            raise
        if watch.fired:
            resp.close()
            raise DeadlinePassed()
    return resp
