"""A loopback Bulk Data server for unit tests: scripted status answers, files with faults, a request log.

``FakeBulk`` serves ``/fhir/$export`` (and ``Patient/$export``, ``Group/<id>/$export``), the status URL
``/fhir/status/<job>``, files at ``/files/<name>``, and any other GET path given in ``routes`` (a JSON
body, e.g. ``/fhir/metadata`` or ``/fhir/Group/g1``, for tests that run a whole sync against it). It records every request (method, path, whether
an Authorization header came), so tests can assert what the client sent where. Two instances make two
origins (a FHIR server and a storage host).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    auth: str | None
    headers: dict[str, str]
    body: bytes = b""

    def params(self) -> list[tuple[str, str]]:
        """The kick-off's parameters, from the query or a POSTed Parameters body (references as text)."""
        pairs = list(self.query)
        if self.body:
            for p in json.loads(self.body).get("parameter", []):
                value = (
                    p.get("valueString")
                    or p.get("valueInstant")
                    or (p.get("valueReference") or {}).get("reference")
                )
                pairs.append((p["name"], value))
        return pairs


@dataclass
class FileSpec:
    body: bytes
    ranges: bool = False  # answer Range requests with 206
    cut_after: list[int] = field(
        default_factory=list
    )  # per attempt: bytes sent before dropping the connection
    statuses: list[int] = field(
        default_factory=list
    )  # per attempt: a status to answer instead (429, 503, 404)
    redirect_to: str | None = None
    # per attempt: bytes sent at once, then one byte every 0.2 s until the client hangs up (a trickle)
    trickle_after: list[int] = field(default_factory=list)
    gzip: bool = False  # sent with Content-Encoding: gzip


class FakeBulk:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.files: dict[str, FileSpec] = {}
        # per job: answers before the manifest, each (status, headers, body or None)
        self.script: list[tuple[int, dict[str, str], Any]] = []
        self.manifest: dict[str, Any] = {}
        self.kickoff_status = 202
        self.kickoff_body: Any = None
        # per kick-off, in order: a status to refuse it with (400: an unsupported parameter); then 202s
        self.kickoff_refusals: list[int] = []
        # per job, in order: its manifest (default: ``manifest``)
        self.manifests: list[dict[str, Any]] = []
        self.jobs = 0
        # GET path -> JSON body (served as application/fhir+json; checked before the built-in answers)
        self.routes: dict[str, Any] = {}
        self.deleted_jobs: list[str] = []
        self.gone_jobs: set[str] = set()
        self._polls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base(self) -> str:
        return f"{self.origin}/fhir"

    def file_url(self, name: str) -> str:
        return f"{self.origin}/files/{name}"

    def start(self) -> FakeBulk:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeBulk:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests_to(self, prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith(prefix)]

    @property
    def kick_offs(self) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith("$export")]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def _record(self) -> Seen:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    parts.path,
                    parse_qsl(parts.query, keep_blank_values=True),
                    self.headers.get("Authorization"),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with fake._lock:
                    fake.seen.append(seen)
                return seen

            def _send(self, status: int, headers: dict[str, str] | None = None, body: Any = None) -> None:
                data = (
                    b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
                )
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if body is not None and not (headers or {}).get("Content-Type"):
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                seen = self._record()
                if seen.path in fake.routes:
                    return self._send(200, {"Content-Type": "application/fhir+json"}, fake.routes[seen.path])
                if seen.path.endswith("$export"):
                    return self._kick_off()
                if seen.path.startswith("/fhir/status/"):
                    return self._status(seen.path.rsplit("/", 1)[1])
                if seen.path.startswith("/files/"):
                    return self._file(seen.path.removeprefix("/files/"))
                if seen.path.startswith("/fhir/Medication/"):
                    mid = seen.path.rsplit("/", 1)[1]
                    return self._send(
                        200,
                        {"Content-Type": "application/fhir+json"},
                        {"resourceType": "Medication", "id": mid},
                    )
                return self._send(404, body={"resourceType": "OperationOutcome", "issue": []})

            def do_POST(self) -> None:
                seen = self._record()
                if seen.path.endswith("$export"):
                    return self._kick_off()
                return self._send(404)

            def do_DELETE(self) -> None:
                seen = self._record()
                job = seen.path.rsplit("/", 1)[1]
                with fake._lock:
                    fake.deleted_jobs.append(job)
                    fake.gone_jobs.add(job)
                return self._send(202, body={"resourceType": "OperationOutcome", "issue": []})

            def _kick_off(self) -> None:
                status = fake.kickoff_refusals.pop(0) if fake.kickoff_refusals else 0
                if status:  # 0: accepted
                    outcome = {
                        "resourceType": "OperationOutcome",
                        "issue": [{"severity": "error", "code": "not-supported"}],
                    }
                    return self._send(status, {"Content-Type": "application/fhir+json"}, outcome)
                if fake.kickoff_status != 202:
                    return self._send(
                        fake.kickoff_status, {"Content-Type": "application/fhir+json"}, fake.kickoff_body
                    )
                with fake._lock:
                    fake.jobs += 1
                    job = f"job{fake.jobs}"
                self._send(202, {"Content-Location": f"{fake.base}/status/{job}"})

            def _status(self, job: str) -> None:
                if job in fake.gone_jobs:
                    return self._send(404, body={"resourceType": "OperationOutcome", "issue": []})
                with fake._lock:
                    n = fake._polls.get(job, 0)
                    fake._polls[job] = n + 1
                if n < len(fake.script):
                    status, headers, body = fake.script[n]
                    return self._send(status, headers, body)
                number = int(job.removeprefix("job")) if job.removeprefix("job").isdigit() else 0
                body = fake.manifests[number - 1] if 0 < number <= len(fake.manifests) else fake.manifest
                self._send(200, {"Content-Type": "application/json"}, body)

            def _file(self, name: str) -> None:
                spec = fake.files.get(name)
                if spec is None:
                    return self._send(404)
                if spec.statuses:
                    status = spec.statuses.pop(0)
                    return self._send(status, {"Retry-After": "0"} if status in (429, 503) else None)
                if spec.redirect_to:
                    return self._send(302, {"Location": spec.redirect_to})
                body, start = spec.body, 0
                rng = self.headers.get("Range")
                if spec.ranges and rng and rng.startswith("bytes="):
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    part = body[start:]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    part = body
                    self.send_response(200)
                if spec.gzip:
                    part = gzip.compress(part)
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Type", "application/fhir+ndjson")
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if spec.trickle_after:
                    sent = spec.trickle_after.pop(0)
                    self.wfile.write(part[:sent])
                    self.close_connection = True
                    for at in range(sent, min(len(part), sent + 300)):
                        try:
                            self.wfile.write(part[at : at + 1])
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(0.2)
                    return
                if spec.cut_after:
                    cut = spec.cut_after.pop(0)
                    self.wfile.write(part[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(part)

        return Handler


def ndjson(resources: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in resources)


def manifest(fake: FakeBulk, output: list[tuple[str, str, int | None]], **extra: Any) -> dict[str, Any]:
    """A manifest whose output files are (type, url, count)."""
    body: dict[str, Any] = {
        "transactionTime": "2026-06-01T10:00:00.123Z",
        "request": f"{fake.base}/$export",
        "requiresAccessToken": True,
        "output": [{"type": t, "url": u, **({"count": c} if c is not None else {})} for t, u, c in output],
        "error": [],
    }
    body.update(extra)
    return body


def patients(n: int, prefix: str = "p") -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"resourceType": "Patient", "id": f"{prefix}{i}"}
