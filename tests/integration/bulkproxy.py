"""A loopback proxy in front of the sandbox HAPI for the Bulk Data tests: counts kick-offs, can hold the
job "in progress", rewrites the manifest (file URLs to another origin, extra error files), records
every request and whether it carried an Authorization header.

The client's ``Host`` header is forwarded, so HAPI's ``Content-Location`` and manifest URLs name the
proxy and the client stays behind it. Bodies are read whole (test data is small).
"""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Seen:
    method: str
    path: str  # with the query
    auth: str | None


class BulkProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.seen: list[Seen] = []
        self.hold = threading.Event()  # set: every status poll answers 202 without asking HAPI
        self.files_origin: str | None = None  # rewrite manifest file URLs to this origin
        self.extra_errors: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base(self) -> str:
        return f"{self.origin}/fhir"

    @property
    def kick_offs(self) -> int:
        return sum(
            1 for s in self.seen if s.method in ("GET", "POST") and urlsplit(s.path).path.endswith("$export")
        )

    @property
    def polls(self) -> int:
        return sum(1 for s in self.seen if s.method == "GET" and "$export-poll-status" in s.path)

    def start(self) -> BulkProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> BulkProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def _any(self) -> None:
                with proxy._lock:
                    proxy.seen.append(Seen(self.command, self.path, self.headers.get("Authorization")))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.hold.is_set() and self.command == "GET" and "$export-poll-status" in self.path:
                    return self._reply(202, {"Retry-After": "1", "X-Progress": "held by the test"}, b"")
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                out = {
                    k: v
                    for k, v in resp.getheaders()
                    if k.lower() not in _HOP and k.lower() != "content-length"
                }
                conn.close()
                if self.command == "GET" and "$export-poll-status" in self.path and resp.status == 200:
                    data = self._rewrite(data)
                self._reply(resp.status, out, data)

            def _rewrite(self, data: bytes) -> bytes:
                manifest = json.loads(data)
                if proxy.files_origin:
                    for item in manifest.get("output", []):
                        parts = urlsplit(item["url"])
                        item["url"] = (
                            proxy.files_origin + parts.path + (f"?{parts.query}" if parts.query else "")
                        )
                manifest.setdefault("error", []).extend(proxy.extra_errors)
                return json.dumps(manifest).encode()

            def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        return Handler
