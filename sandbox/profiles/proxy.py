#!/usr/bin/env python3
"""A loopback proxy that makes the one HAPI sandbox behave like a production EHR FHIR API.

    python3 sandbox/profiles/proxy.py --profile bulk-only --port 8091 --upstream-port 8089
    python3 sandbox/profiles/proxy.py --profile throttled --port 8093 --upstream-port 8089 --rate 10

Profiles (what each one offers is the table PROFILES below; sandbox/hapi/README.md explains them):

- ``full``         everything HAPI offers, passed through unchanged (``sandbox.sh`` serves ``full``
                   from HAPI directly; the proxy profile exists for experiments);
- ``bulk-only``    no ``$everything``, no type- or system-level ``_history``, no ``_lastUpdated``,
                   Group-level ``$export`` with ``_outputFormat``, ``_type`` and ``_since`` only,
                   search pages capped at 100 entries;
- ``search-only``  no ``$everything``, no ``_history`` listings, no ``$export``; ``_lastUpdated`` works;
- ``throttled``    ``full`` behind a rate limit: over ``--rate`` requests in any one second the
                   proxy answers 429 with ``Retry-After: <seconds>``.

What a profile lacks is refused the way a production server refuses it, with an OperationOutcome
(``Content-Type: application/fhir+json``): an operation or interaction the server does not have is
404 ``not-supported``; a search or ``$export`` parameter it does not support is 400 ``not-supported``;
over the rate limit is 429 ``throttled``. ``GET metadata`` is rewritten so the CapabilityStatement
lists exactly what the profile offers. Batch/transaction bundles (JSON) are checked entry by entry.
Everything else is forwarded to HAPI with the client's ``Host`` header, so the links HAPI builds
(``next``, ``Location``, ``Content-Location``, the bulk manifest's file URLs) point at the proxy.

Python standard library only. Binds 127.0.0.1 and nothing else. Bodies are streamed in both
directions (except the few the proxy must read: metadata, ``_search`` forms, batch bundles and
``$export`` Parameters).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import http.server
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

LOOPBACK = "127.0.0.1"
FHIR_JSON = "application/fhir+json;charset=utf-8"
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
CHUNK = 64 * 1024
MAX_INSPECTED_BODY = 64 * 1024 * 1024  # bodies the proxy must parse (batch bundles, forms)


@dataclass(frozen=True)
class Profile:
    name: str
    everything: bool = True
    # _history listings offered: "instance" (Type/id/_history), "type" (Type/_history),
    # "system" (/_history). vread (Type/id/_history/N) is always offered.
    history: frozenset[str] = frozenset({"instance", "type", "system"})
    last_updated: bool = True
    # $export levels offered: "system" ($export), "patient" (Patient/$export, Patient/id/$export),
    # "group" (Group/id/$export). Empty: no bulk data at all (no $export-poll-status either).
    export_levels: frozenset[str] = frozenset({"system", "patient", "group"})
    # None: every parameter HAPI knows; else only these kick-off parameters are accepted.
    export_params: frozenset[str] | None = None
    max_count: int | None = None
    rate_limited: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def restricts(self) -> bool:
        """Whether the profile refuses anything HAPI offers (then batch bundles are checked)."""
        return not (
            self.everything
            and self.history == {"instance", "type", "system"}
            and self.last_updated
            and self.export_levels == {"system", "patient", "group"}
            and self.export_params is None
            and self.max_count is None
        )


PROFILES: dict[str, Profile] = {
    "full": Profile("full"),
    "bulk-only": Profile(
        "bulk-only",
        everything=False,
        history=frozenset({"instance"}),
        last_updated=False,
        export_levels=frozenset({"group"}),
        export_params=frozenset({"_outputFormat", "_type", "_since"}),
        max_count=100,
        notes=(
            "Profile bulk-only: Group-level $export (_outputFormat, _type, _since) and searches;"
            " no $everything, no type- or system-level _history, no _lastUpdated;"
            " search pages hold at most 100 entries (_count is capped at 100).",
        ),
    ),
    "search-only": Profile(
        "search-only",
        everything=False,
        history=frozenset(),
        last_updated=True,
        export_levels=frozenset(),
        notes=(
            "Profile search-only: searches (with _lastUpdated) and reads;"
            " no $everything, no _history listings (vread works), no Bulk Data $export.",
        ),
    ),
    "throttled": Profile("throttled", rate_limited=True),
}


class Refusal(Exception):
    """A request the profile does not offer: answered with an OperationOutcome, never forwarded."""

    def __init__(self, status: int, code: str, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status, self.code, self.text, self.headers = status, code, text, headers or {}


def outcome(code: str, text: str) -> bytes:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }
    return json.dumps(body).encode()


# -- what a request is -------------------------------------------------------------------------------


def param_names(params: list[tuple[str, str]]) -> set[str]:
    return {name for name, _ in params}


def mentions_last_updated(params: list[tuple[str, str]]) -> bool:
    """_lastUpdated as a parameter, inside a chain or _has, with a modifier, or as a _sort key."""
    for name, value in params:
        if "_lastUpdated" in re.split(r"[.:]", name):
            return True
        if name == "_sort" and any(key.strip().lstrip("-") == "_lastUpdated" for key in value.split(",")):
            return True
    return False


def check(
    profile: Profile,
    method: str,
    segments: list[str],
    params: list[tuple[str, str]],
    body_params: list[tuple[str, str]] | None = None,
) -> None:
    """Raise Refusal when ``method`` on ``segments`` (the path below the FHIR base) with ``params``
    is something the profile does not offer."""
    method = method.upper()
    all_params = params + (body_params or [])
    op_index = next((i for i, s in enumerate(segments) if s.startswith("$")), None)
    if op_index is not None:
        op = segments[op_index][1:]
        where = "/".join(segments)
        if op == "everything" and not profile.everything:
            raise Refusal(404, "not-supported", f"This server does not support the operation {where}")
        if op == "export":
            level = None  # Group/$export (no id), Observation/$export ...: no such export
            if op_index == 0:
                level = "system"
            elif segments[0] == "Patient" and op_index in (1, 2):
                level = "patient"
            elif segments[0] == "Group" and op_index == 2:
                level = "group"
            if level not in profile.export_levels:
                offered = ", ".join(sorted(profile.export_levels)) or "none"
                raise Refusal(
                    404,
                    "not-supported",
                    f"This server does not support {where} (Bulk Data export levels offered: {offered})",
                )
            if profile.export_params is not None:
                extra = sorted(param_names(all_params) - profile.export_params - {"_format", "_pretty"})
                if extra:
                    raise Refusal(
                        400,
                        "not-supported",
                        f"$export parameter(s) not supported by this server: {', '.join(extra)}"
                        f" (supported: {', '.join(sorted(profile.export_params))})",
                    )
        if op == "export-poll-status" and not profile.export_levels:
            raise Refusal(404, "not-supported", "This server does not support Bulk Data export")
        return
    if "_history" in segments:
        i = segments.index("_history")
        level = {0: "system", 1: "type", 2: "instance"}.get(i)
        vread = i == 2 and len(segments) > 3
        if not vread and level not in profile.history:
            raise Refusal(
                404, "not-supported", f"This server does not support the {level}-level _history interaction"
            )
        return
    if segments[:1] == ["metadata"] or segments[:1] == ["Binary"]:
        return
    # a search: Type, Type/_search, Patient/id/Observation (compartment), base with params / _search
    is_search = (
        (method == "GET" and len(segments) in (0, 1, 3))
        or (method == "POST" and segments[-1:] == ["_search"])
        or (method == "GET" and len(segments) == 2 and segments[1] == "_search")
    )
    if len(segments) == 0 and method == "GET" and not params:
        is_search = False
    if is_search and not profile.last_updated and mentions_last_updated(all_params):
        raise Refusal(400, "not-supported", "This server does not support the search parameter _lastUpdated")


def capped(params: list[tuple[str, str]], limit: int | None) -> list[tuple[str, str]]:
    if limit is None:
        return params
    out = []
    for name, value in params:
        if name == "_count":
            try:
                if int(value) > limit:
                    value = str(limit)
            except ValueError:
                pass
        out.append((name, value))
    return out


def check_bundle(profile: Profile, body: bytes) -> None:
    """Batch/transaction: every entry's request must be something the profile offers."""
    try:
        bundle = json.loads(body)
    except ValueError:
        return  # not JSON (XML, or broken): HAPI answers it
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return
    for n, entry in enumerate(bundle.get("entry") or []):
        request = (entry or {}).get("request") or {}
        url = request.get("url")
        if not isinstance(url, str):
            continue
        parts = urllib.parse.urlsplit(url)
        segments = [urllib.parse.unquote(s) for s in parts.path.split("/") if s]
        try:
            check(profile, str(request.get("method", "GET")), segments, urllib.parse.parse_qsl(parts.query))
        except Refusal as refusal:
            raise Refusal(
                refusal.status if refusal.status != 404 else 400,
                refusal.code,
                f"Bundle.entry[{n}] ({request.get('method')} {url}): {refusal.text}",
            ) from None


def export_parameters(body: bytes) -> list[tuple[str, str]]:
    """The parameter names of a POSTed $export Parameters resource (JSON)."""
    try:
        resource = json.loads(body)
    except ValueError:
        return []
    if not isinstance(resource, dict) or resource.get("resourceType") != "Parameters":
        return []
    return [(str(p.get("name")), "") for p in resource.get("parameter") or [] if isinstance(p, dict)]


# -- the CapabilityStatement -------------------------------------------------------------------------


def rewrite_capabilities(profile: Profile, cap: dict[str, Any], rate: float | None) -> dict[str, Any]:
    if cap.get("resourceType") != "CapabilityStatement":
        return cap

    def keep_op(name: str, level: str) -> bool:
        if name == "everything":
            return profile.everything
        if name == "export":
            return level in profile.export_levels
        if name == "export-poll-status":
            return bool(profile.export_levels)
        return True

    for rest in cap.get("rest") or []:
        rest["operation"] = [o for o in rest.get("operation") or [] if keep_op(o.get("name", ""), "system")]
        if "system" not in profile.history:
            rest["interaction"] = [
                i for i in rest.get("interaction") or [] if i.get("code") != "history-system"
            ]
        if not profile.last_updated and rest.get("searchParam"):
            rest["searchParam"] = [p for p in rest["searchParam"] if p.get("name") != "_lastUpdated"]
        for resource in rest.get("resource") or []:
            rtype = resource.get("type")
            level = {"Patient": "patient", "Group": "group"}.get(rtype, "none")
            ops = [o for o in resource.get("operation") or [] if keep_op(o.get("name", ""), level)]
            if profile.export_params is not None:
                for o in ops:
                    if o.get("name") == "export":
                        o["documentation"] = "Parameters: " + ", ".join(sorted(profile.export_params))
            resource["operation"] = ops
            drop = set()
            if "type" not in profile.history:
                drop.add("history-type")
            if "instance" not in profile.history:
                drop.add("history-instance")
            resource["interaction"] = [
                i for i in resource.get("interaction") or [] if i.get("code") not in drop
            ]
            if not profile.last_updated:
                resource["searchParam"] = [
                    p for p in resource.get("searchParam") or [] if p.get("name") != "_lastUpdated"
                ]
            for key in ("operation", "searchParam"):
                if key in resource and not resource[key]:
                    del resource[key]
        for key in ("operation", "interaction", "searchParam"):
            if key in rest and not rest[key]:
                del rest[key]
        notes = list(profile.notes)
        if profile.rate_limited and rate is not None:
            notes.append(
                f"Profile throttled: at most {rate:g} requests per second;"
                " over that the server answers 429 Too Many Requests with Retry-After (seconds)."
            )
        if notes:
            rest["documentation"] = " ".join(notes)
    bulk = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
    if profile.export_levels:
        if bulk not in (cap.get("instantiates") or []):
            cap["instantiates"] = [*(cap.get("instantiates") or []), bulk]
    elif cap.get("instantiates"):
        cap["instantiates"] = [u for u in cap["instantiates"] if u != bulk]
        if not cap["instantiates"]:
            del cap["instantiates"]
    impl = cap.setdefault("implementation", {})
    impl["description"] = f"{impl.get('description', 'FHIR server')} - profile {profile.name}"
    return cap


# -- the rate limit ----------------------------------------------------------------------------------


class SlidingWindow:
    """At most ``rate`` accepted requests in any window of ``window`` seconds."""

    def __init__(self, rate: float, window: float = 1.0) -> None:
        self.limit = max(1, int(rate * window))
        self.window = window
        self.times: collections.deque[float] = collections.deque()
        self.lock = threading.Lock()

    def admit(self) -> float:
        """0 when the request may pass, else the seconds until it would."""
        now = time.monotonic()
        with self.lock:
            while self.times and self.times[0] <= now - self.window:
                self.times.popleft()
            if len(self.times) < self.limit:
                self.times.append(now)
                return 0.0
            return self.times[0] + self.window - now


# -- the HTTP side -----------------------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms delayed-ACK stall between headers and body
    timeout = 300  # an idle keep-alive client connection is closed after this
    server_version = "sandbox-profile-proxy"
    # set by serve()
    profile: Profile
    upstream: tuple[str, int]
    base_path: str
    limiter: SlidingWindow | None
    rate: float | None

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.log_date_time_string()} {self.profile.name} {format % args}\n")

    # every method goes through one place
    def do_GET(self) -> None:
        self.handle_any()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def send_outcome(self, status: int, code: str, text: str, headers: dict[str, str] | None = None) -> None:
        body = outcome(code, text)
        self.send_response(status)
        self.send_header("Content-Type", FHIR_JSON)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self) -> bytes:
        return b"".join(self.iter_body())

    def iter_body(self) -> Iterator[bytes]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            data = self.rfile.read(min(CHUNK, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data

    def handle_any(self) -> None:
        if self.limiter is not None:
            wait = self.limiter.admit()
            if wait > 0:
                self.drain()
                self.send_outcome(
                    429,
                    "throttled",
                    f"Too many requests: this server accepts at most {self.rate:g} requests per second",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )
                return
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        if not (path == self.base_path or path.startswith(self.base_path + "/")):
            self.forward(self.path, None)  # not FHIR (e.g. /): HAPI answers
            return
        segments = [urllib.parse.unquote(s) for s in path[len(self.base_path) :].split("/") if s]
        params = urllib.parse.parse_qsl(split.query, keep_blank_values=True)
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        body: bytes | None = None
        body_params: list[tuple[str, str]] | None = None
        try:
            if self.command == "POST" and segments[-1:] == ["_search"] and "form" in content_type:
                body = self.read_limited()
                body_params = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
            elif self.command == "POST" and segments and segments[-1] == "$export" and "json" in content_type:
                body = self.read_limited()
                body_params = export_parameters(body)
            elif self.command == "POST" and not segments and self.profile.restricts:
                body = self.read_limited()
                check_bundle(self.profile, body)
            check(self.profile, self.command, segments, params, body_params)
        except Refusal as refusal:
            if body is None:
                self.drain()
            self.send_outcome(refusal.status, refusal.code, refusal.text, refusal.headers)
            return
        target = self.path  # forwarded as the client wrote it, unless _count is capped
        if self.profile.max_count is not None:
            limited = capped(params, self.profile.max_count)
            if limited != params:
                target = path + "?" + urllib.parse.urlencode(limited, safe="|,:/$*")
            if body_params is not None and segments[-1:] == ["_search"]:
                body = urllib.parse.urlencode(capped(body_params, self.profile.max_count)).encode()
        if self.command == "GET" and segments == ["metadata"]:
            self.capabilities(target)
            return
        self.forward(target, body)

    def read_limited(self) -> bytes:
        size = int(self.headers.get("Content-Length") or 0)
        if size > MAX_INSPECTED_BODY:
            raise Refusal(413, "too-costly", f"request body over {MAX_INSPECTED_BODY} bytes")
        return self.read_body()

    def drain(self) -> None:
        for _ in self.iter_body():
            pass

    def upstream_request(
        self, target: str, body: bytes | None, override: dict[str, str] | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=600)
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.putrequest(self.command, target, skip_host=True, skip_accept_encoding=True)
        override = {k.lower(): v for k, v in (override or {}).items()}
        sent = set()
        for name, value in self.headers.items():
            lname = name.lower()
            if lname in HOP_BY_HOP or lname == "content-length":
                continue
            if lname in override:
                continue
            conn.putheader(name, value)
            sent.add(lname)
        for name, value in override.items():
            conn.putheader(name, value)
        if "host" not in sent and "host" not in override:
            conn.putheader("Host", f"{LOOPBACK}:{self.server.server_address[1]}")
        conn.putheader("X-Forwarded-For", self.client_address[0])
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for data in self.iter_body():
                conn.send(b"%x\r\n%s\r\n" % (len(data), data))
            conn.send(b"0\r\n\r\n")
        elif self.headers.get("Content-Length"):
            conn.putheader("Content-Length", self.headers["Content-Length"])
            conn.endheaders()
            for data in self.iter_body():
                conn.send(data)
        else:
            conn.endheaders()
        return conn, conn.getresponse()

    def forward(self, target: str, body: bytes | None) -> None:
        try:
            conn, resp = self.upstream_request(target, body)
        except OSError as exc:
            self.send_outcome(502, "transient", f"upstream FHIR server {self.upstream} unreachable: {exc}")
            return
        try:
            self.relay(resp)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-answer
        finally:
            conn.close()

    def relay(self, resp: http.client.HTTPResponse) -> None:
        self.log_request(resp.status)  # send_response_only does not log: every relayed request is a line
        self.send_response_only(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        for name, value in resp.getheaders():
            if name.lower() in HOP_BY_HOP or name.lower() == "content-length":
                continue
            self.send_header(name, value)
        if no_body:
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            return
        if length is not None:
            self.send_header("Content-Length", length)
            self.end_headers()
            while data := resp.read(CHUNK):
                self.wfile.write(data)
        else:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while data := resp.read1(CHUNK):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")

    def capabilities(self, target: str) -> None:
        split = urllib.parse.urlsplit(target)
        query = [(k, v) for k, v in urllib.parse.parse_qsl(split.query) if k != "_format"]
        target = split.path + ("?" + urllib.parse.urlencode(query) if query else "")
        try:
            conn, resp = self.upstream_request(
                target, None, {"Accept": "application/fhir+json", "Accept-Encoding": "identity"}
            )
        except OSError as exc:
            self.send_outcome(502, "transient", f"upstream FHIR server {self.upstream} unreachable: {exc}")
            return
        try:
            raw = resp.read()
            status = resp.status
        finally:
            conn.close()
        if status == 200:
            try:
                cap = rewrite_capabilities(self.profile, json.loads(raw), self.rate)
                host = self.headers.get("Host") or f"{LOOPBACK}:{self.server.server_address[1]}"
                cap.setdefault("implementation", {})["url"] = f"http://{host}{self.base_path}"
                raw = json.dumps(cap, indent=2).encode()
            except ValueError:
                pass
        self.send_response(status)
        self.send_header("Content-Type", FHIR_JSON)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def server_bind(self) -> None:
        host, _ = self.server_address[:2]
        if host != LOOPBACK:  # pragma: no cover - guarded in serve() too
            raise OSError(f"refusing to bind {host}: the sandbox proxy binds {LOOPBACK} only")
        socket.socket.setsockopt(self.socket, socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = self.server_address[:2]


def serve(profile: Profile, port: int, upstream_port: int, base_path: str, rate: float | None) -> None:
    limiter = SlidingWindow(rate) if profile.rate_limited and rate else None
    handler = type(
        "BoundHandler",
        (Handler,),
        {
            "profile": profile,
            "upstream": (LOOPBACK, upstream_port),
            "base_path": base_path.rstrip("/"),
            "limiter": limiter,
            "rate": rate if profile.rate_limited else None,
        },
    )
    httpd = Server((LOOPBACK, port), handler)

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    limit = f", at most {rate:g} requests/s" if limiter else ""
    print(
        f"profile {profile.name} on http://{LOOPBACK}:{httpd.server_port}{base_path}"
        f" -> http://{LOOPBACK}:{upstream_port}{base_path}{limit}",
        file=sys.stderr,
        flush=True,
    )
    try:
        httpd.serve_forever(poll_interval=0.5)
    finally:
        httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, choices=sorted(PROFILES))
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument(
        "--upstream-port", type=int, required=True, help="port of the HAPI sandbox (127.0.0.1)"
    )
    parser.add_argument("--base-path", default="/fhir", help="FHIR base path on both sides (default /fhir)")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="throttled: requests per second before 429 (default: $SANDBOX_THROTTLE_RPS or 10)",
    )
    args = parser.parse_args(argv)
    rate = args.rate
    if rate is None:
        rate = float(os.environ.get("SANDBOX_THROTTLE_RPS") or 10)
    if rate <= 0:
        parser.error("--rate must be > 0")
    serve(PROFILES[args.profile], args.port, args.upstream_port, args.base_path, rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
