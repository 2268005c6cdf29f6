"""A scriptable loopback FHIR server for fault injection: real sockets, real HTTP, real misbehaviour.

``responses`` replaces the transport, so it cannot show what a trickling body, a silent server, a reset
connection or a foreign redirect does to the client. This server can. It listens on 127.0.0.1 on a
random port (``server.base`` is ``http://127.0.0.1:<port>/fhir``), records every request it receives
(method, path, query, headers, body), answers from a small in-memory FHIR store, and lets a test script
faults per method and path:

    with FaultServer() as server, FaultServer() as elsewhere:
        server.store.put(*resources)                       # Patient, Condition, Observation...
        server.on("GET", r"Patient/p1/\\$everything", Reply(503, headers={"Retry-After": "1"}), Reply(200, json=...))
        server.on("GET", r"Patient", Redirect(elsewhere.url("Patient")))
        server.on("POST", r"ResearchSubject", Stored(then=Reply(500)))   # stored, then answered 500
        ...run the adapter against server.base...
        assert elsewhere.requests == []                    # nothing reached the other origin

``on`` queues replies for the requests that match (a regular expression over the path below the base,
without the query); each request takes the next one, and when the queue is empty the store answers
again (``repeat=True`` keeps answering the last reply instead). Replies:

- ``Reply(status, json=..., body=b"...", headers={...})``: a plain answer;
- ``Redirect(location, status=302)``;
- ``Trickle(reply, interval=0.2, chunk=1)``: headers at once, then the body ``chunk`` bytes at a time;
- ``TrickleHeaders(interval=0.2)``: the status line and headers one byte at a time, for ever;
- ``Silence(seconds=None)``: read the request, never answer (until the server stops);
- ``Reset()``: close the connection with a TCP reset, no answer;
- ``Huge(size)``: a 200 whose JSON body is ``size`` bytes, streamed;
- ``Stored(then=...)``: let the store perform the write first, then answer ``then`` (a 500, a ``Silence``
  or a ``Reset``): the "it was stored but you will never know" write.

``FaultServer(upstream="http://127.0.0.1:8089/fhir")`` is a fault-injecting proxy instead: what no
script claims is forwarded to that real server (with this server's Host, so HAPI writes links and
Locations for the proxy), and ``Stored`` forwards the write before answering its fault.

The store (``server.store``) keeps versions (``meta.versionId``, ``meta.lastUpdated``), answers ``read``,
``vread``, ``create`` (honouring ``If-None-Exist`` unless ``store.honour_if_none_exist = False``),
``update`` (``If-Match``), type searches (``identifier``, ``_tag``, ``_id``, ``patient``/``subject``,
``code``, ``code:text``, ``target``, ``study``, ``_revinclude=Provenance:target``, ``_include`` of medications,
``_count`` with ``next`` links), ``Patient/<id>/$everything``, type ``_history?_since=`` and
``metadata``. It is not a FHIR server; it is enough of one for the adapter's screen, sync and write-back.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import itertools
import json
import re
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

Res = dict[str, Any]
FHIR_JSON = "application/fhir+json"


# -- replies -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    reason: str | None = None  # the status line's reason phrase (servers may put anything there)

    def payload(self) -> bytes:
        return json.dumps(self.json).encode() if self.json is not None else self.body


@dataclass(frozen=True)
class Redirect:
    location: str
    status: int = 302


@dataclass(frozen=True)
class Trickle:
    reply: Reply
    interval: float = 0.2
    chunk: int = 1


@dataclass(frozen=True)
class TrickleHeaders:
    interval: float = 0.2


@dataclass(frozen=True)
class Silence:
    seconds: float | None = None


@dataclass(frozen=True)
class Reset:
    pass


@dataclass(frozen=True)
class Huge:
    size: int
    content_length: bool = True


@dataclass(frozen=True)
class Stored:
    then: Any = field(default_factory=lambda: Reply(500))


Handler = Callable[["Request"], Any]
_REPLIES = (Reply, Redirect, Trickle, TrickleHeaders, Silence, Reset, Huge, Stored)


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # below the base, e.g. "Patient/p1/$everything"
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    received: float = 0.0  # time.monotonic() when it arrived: the order of events across threads

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


def outcome(code: str = "processing", diagnostics: str | None = None, severity: str = "error") -> Res:
    issue: Res = {"severity": severity, "code": code}
    if diagnostics is not None:
        issue["diagnostics"] = diagnostics
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def searchset(resources: list[Res], next_url: str | None = None, *, include: int = 0) -> Res:
    """A searchset Bundle; the last ``include`` resources are marked as included."""
    entries = [
        {"resource": r, "search": {"mode": "include" if i >= len(resources) - include else "match"}}
        for i, r in enumerate(resources)
    ]
    links = [{"relation": "self", "url": "(self)"}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries}


TYPES = (
    "Patient", "Condition", "Observation", "MedicationRequest", "MedicationStatement",
    "MedicationAdministration", "Medication", "Encounter", "AllergyIntolerance", "Procedure", "Group",
    "ResearchStudy", "ResearchSubject", "Device", "Provenance",
)  # fmt: skip
INTERACTIONS = ("read", "vread", "search-type", "create", "update", "history-type", "history-instance")
SEARCH_PARAMS = ("_id", "_lastUpdated", "_tag", "identifier", "patient", "subject", "code", "target", "study")


def capability(everything: bool = True, fhir_version: str = "4.0.1") -> Res:
    """What the store serves: every type read, searched, written and with a history; $everything
    listed on Patient unless ``everything=False``."""
    resources = []
    for rtype in TYPES:
        resource: Res = {
            "type": rtype,
            "interaction": [{"code": c} for c in INTERACTIONS],
            "searchParam": [{"name": n, "type": "token"} for n in SEARCH_PARAMS],
        }
        if rtype == "Patient" and everything:
            resource["operation"] = [
                {
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                }
            ]
        resources.append(resource)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "kind": "instance",
        "fhirVersion": fhir_version,
        "format": ["json"],
        "rest": [{"mode": "server", "resource": resources}],
    }


# -- the in-memory store -----------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _tokens(value: str) -> list[tuple[str | None, str]]:
    """``system|code`` tokens, comma-separated, with FHIR search escaping (``\\,`` ``\\|`` ``\\$`` ``\\\\``)."""
    out: list[tuple[str | None, str]] = []
    for part in re.split(r"(?<!\\),", value):
        bar = re.search(r"(?<!\\)\|", part)
        if bar:
            system, code = part[: bar.start()], part[bar.end() :]
            out.append((_unescape(system) or None, _unescape(code)))
        else:
            out.append((None, _unescape(part)))
    return out


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _codings(node: Any) -> list[Res]:
    if isinstance(node, dict):
        return [c for c in node.get("coding") or [] if isinstance(c, dict)]
    return []


def _references(resource: Res) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str):
                found.append(ref)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(resource)
    return found


class Store:
    """Resources by type and id, every version kept; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._versions: dict[tuple[str, str], list[Res | None]] = {}  # None: a deletion
        self._ids = itertools.count(1)
        self.honour_if_none_exist = True
        self.honour_last_updated = True  # False: a lenient server that answers as if it were not given
        self.keep_tags = True

    # -- what tests use ------------------------------------------------------------------------------
    def put(self, *resources: Res) -> None:
        for resource in resources:
            self._write(copy.deepcopy(resource))

    def all(self, rtype: str) -> list[Res]:
        with self._lock:
            return [
                copy.deepcopy(v[-1]) for (t, _), v in sorted(self._versions.items()) if t == rtype and v[-1]
            ]

    def versions(self, rtype: str, rid: str) -> list[Res]:
        with self._lock:
            return [copy.deepcopy(v) for v in self._versions.get((rtype, rid), []) if v is not None]

    # -- FHIR interactions ---------------------------------------------------------------------------
    def read(self, rtype: str, rid: str) -> Res | None:
        with self._lock:
            versions = self._versions.get((rtype, rid))
            return copy.deepcopy(versions[-1]) if versions and versions[-1] is not None else None

    def create(self, resource: Res, if_none_exist: str | None) -> tuple[int, Res]:
        with self._lock:
            rtype = resource["resourceType"]
            if if_none_exist and self.honour_if_none_exist:
                matches = self.search(rtype, parse_qs(if_none_exist))
                if len(matches) == 1:
                    return 200, matches[0]
                if len(matches) > 1:
                    return 412, outcome("duplicate", "more than one match")
            resource = copy.deepcopy(resource)
            resource["id"] = f"{rtype.lower()}-{next(self._ids)}"
            return 201, self._write(resource)

    def update(self, resource: Res, rid: str, if_match: str | None) -> tuple[int, Res]:
        with self._lock:
            rtype = resource["resourceType"]
            current = self.read(rtype, rid)
            if if_match and current is not None:
                version = if_match.removeprefix("W/").strip('"')
                if version != current["meta"]["versionId"]:
                    return 409, outcome("conflict", "version mismatch")
            resource = {**copy.deepcopy(resource), "id": rid}
            return (200 if current else 201), self._write(resource)

    def search(self, rtype: str, query: dict[str, list[str]]) -> list[Res]:
        with self._lock:
            results = [r for r in self.all(rtype) if self._matches(r, query)]
            return sorted(results, key=lambda r: r["id"])

    def includes(self, rtype: str, found: list[Res], query: dict[str, list[str]]) -> list[Res]:
        extra: list[Res] = []
        for value in query.get("_revinclude", []):
            if value == "Provenance:target":
                targets = {f"{r['resourceType']}/{r['id']}" for r in found}
                for provenance in self.all("Provenance"):
                    refs = {
                        re.sub(r"/_history/.*$", "", t.get("reference", ""))
                        for t in provenance.get("target") or []
                    }
                    if refs & targets:
                        extra.append(provenance)
        for value in query.get("_include", []):
            if value.endswith(":medication"):
                for r in found:
                    ref = (r.get("medicationReference") or {}).get("reference", "")
                    med = self.read("Medication", ref.removeprefix("Medication/")) if ref else None
                    if med is not None and med not in extra:
                        extra.append(med)
        return extra

    def everything(self, pid: str) -> list[Res] | None:
        with self._lock:
            patient = self.read("Patient", pid)
            if patient is None:
                return None
            out = [patient]
            for (rtype, _), versions in sorted(self._versions.items()):
                current = versions[-1]
                if current is None or rtype == "Patient":
                    continue
                if f"Patient/{pid}" in _references(current):
                    out.append(copy.deepcopy(current))
                    for ref in _references(current):
                        if ref.startswith("Medication/"):
                            med = self.read("Medication", ref.removeprefix("Medication/"))
                            if med is not None and med not in out:
                                out.append(med)
            return out

    def history(self, rtype: str, since: str | None) -> list[Res]:
        with self._lock:
            entries: list[Res] = []
            for (t, rid), versions in sorted(self._versions.items()):
                if t != rtype:
                    continue
                for number, version in enumerate(versions, start=1):
                    if version is None:
                        entries.append(
                            {"request": {"method": "DELETE", "url": f"{t}/{rid}/_history/{number}"}}
                        )
                    elif since is None or version["meta"]["lastUpdated"] >= since:
                        entries.append({"resource": copy.deepcopy(version)})
            return entries

    # -- internals -----------------------------------------------------------------------------------
    def _write(self, resource: Res) -> Res:
        with self._lock:
            key = (resource["resourceType"], resource["id"])
            versions = self._versions.setdefault(key, [])
            meta = dict(resource.get("meta") or {})
            if not self.keep_tags:
                meta.pop("tag", None)
            meta.update(versionId=str(len(versions) + 1), lastUpdated=_now())
            resource["meta"] = meta
            versions.append(resource)
            time.sleep(0.002)  # distinct lastUpdated stamps
            return copy.deepcopy(resource)

    def _matches(self, resource: Res, query: dict[str, list[str]]) -> bool:
        for name, values in query.items():
            for value in values:
                if not self._match_one(resource, name, value):
                    return False
        return True

    def _match_one(self, resource: Res, name: str, value: str) -> bool:
        if name in (
            "_count",
            "_elements",
            "_revinclude",
            "_include",
            "_sort",
            "_total",
            "_offset",
            "_summary",
        ):
            return True
        if name == "_id":
            return resource["id"] in value.split(",")
        if name == "identifier":
            return any(
                (system is None or i.get("system") == system) and i.get("value") == code
                for system, code in _tokens(value)
                for i in resource.get("identifier") or []
            )
        if name == "_tag":
            return any(
                (system is None or t.get("system") == system) and t.get("code") == code
                for system, code in _tokens(value)
                for t in (resource.get("meta") or {}).get("tag") or []
            )
        if name in ("patient", "subject"):
            pid = value.removeprefix("Patient/")
            return f"Patient/{pid}" in _references(resource)
        if name == "study":
            study = resource.get("study")
            return isinstance(study, dict) and study.get("reference") == value
        if name == "target":
            wanted = re.sub(r"/_history/.*$", "", value)
            return any(re.sub(r"/_history/.*$", "", r) == wanted for r in _references(resource))
        if name == "code":
            return any(
                (system is None or c.get("system") == system) and c.get("code") == code
                for system, code in _tokens(value)
                for c in _codings(resource.get("code"))
            )
        if name == "code:text":
            code = resource.get("code") or {}
            texts = [code.get("text")] + [c.get("display") for c in _codings(code)]
            return any(isinstance(t, str) and t.lower().startswith(value.lower()) for t in texts)
        if name == "_lastUpdated":
            return not self.honour_last_updated or _updated_matches(resource, value)
        return True  # an unknown parameter is ignored, as lenient servers do


_COMPARE: dict[str, Callable[[str, str], bool]] = {
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


def _updated_matches(resource: Res, value: str) -> bool:
    """``_lastUpdated=gtT`` and its kin, on the store's own stamps (UTC, milliseconds, "Z"): compared as
    text, which orders them as times."""
    prefix, stamp = (value[:2], value[2:]) if value[:2] in _COMPARE else ("ge", value)
    mine = (resource.get("meta") or {}).get("lastUpdated", "")
    return _COMPARE[prefix](mine, stamp.replace("+00:00", "Z"))


# -- the HTTP server ---------------------------------------------------------------------------------


class FaultServer:
    """A loopback FHIR server: ``with FaultServer() as server: ... server.base``."""

    def __init__(
        self,
        *,
        everything: bool = True,
        fhir_version: str = "4.0.1",
        page_size: int = 50,
        upstream: str | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/") if upstream else None
        self.store = Store()
        self.requests: list[Request] = []
        self.page_size = page_size
        self.capability = capability(everything, fhir_version)
        self._script: list[tuple[str, re.Pattern[str], list[Any], bool]] = []
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler, self)
        self.port = self._httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.base = f"{self.origin}/fhir"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def url(self, path: str = "") -> str:
        return f"{self.base}/{path.lstrip('/')}" if path else self.base

    def on(self, method: str, path: str, *replies: Any, repeat: bool = False) -> None:
        """Queue ``replies`` (or a handler ``f(request) -> reply or None``) for matching requests."""
        with self._lock:
            self._script.append((method.upper(), re.compile(path), list(replies), repeat))

    def clear(self) -> None:
        with self._lock:
            self._script.clear()

    def requests_to(self, method: str, path: str) -> list[Request]:
        pattern = re.compile(path)
        return [r for r in self.requests if r.method == method and pattern.fullmatch(r.path)]

    # -- dispatch ------------------------------------------------------------------------------------
    def scripted(self, request: Request) -> Any:
        """The next scripted reply for ``request``, or None (then the store answers)."""
        for method, pattern, replies, repeat in self._script:
            if method != request.method or not pattern.fullmatch(request.path):
                continue
            with self._lock:
                if not replies:
                    continue
                reply = replies[0] if repeat and len(replies) == 1 else replies.pop(0)
            if isinstance(reply, _REPLIES):
                return reply
            answer = reply(request)  # a handler: None lets the next script (or the store) answer
            if answer is not None:
                return answer
        return None

    def answer(self, request: Request) -> Reply:
        """What the store (or the upstream server) answers: the default for every request no script claims."""
        if self.upstream is not None:
            return self._forward(request)
        path, method, store = request.path, request.method, self.store
        parts = [p for p in path.split("/") if p]
        if method == "GET" and path == "metadata":
            return Reply(json=self.capability)
        if method == "POST" and not parts:
            return Reply(400, json=outcome("not-supported", "transactions are not supported here"))
        if method == "POST" and len(parts) == 1:
            body = request.json()
            status, resource = store.create(body, request.headers.get("if-none-exist"))
            return _written(self, status, resource)
        if method == "PUT" and len(parts) == 2:
            status, resource = store.update(request.json(), parts[1], request.headers.get("if-match"))
            return _written(self, status, resource)
        if method != "GET":
            return Reply(405, json=outcome("not-supported"))
        if len(parts) == 3 and parts[0] == "Patient" and parts[2] == "$everything":
            found = store.everything(parts[1])
            if found is None:
                return Reply(404, json=outcome("not-found", f"Patient/{parts[1]} is not known"))
            return self._page(found, request, 0)
        if len(parts) == 2 and parts[1] == "_history":
            return Reply(
                json={
                    "resourceType": "Bundle",
                    "type": "history",
                    "entry": store.history(parts[0], request.param("_since")),
                }
            )
        if len(parts) == 2:
            resource = store.read(parts[0], parts[1])
            if resource is None:
                return Reply(404, json=outcome("not-found", f"{parts[0]}/{parts[1]} is not known"))
            return Reply(json=resource, headers={"ETag": f'W/"{resource["meta"]["versionId"]}"'})
        if len(parts) == 4 and parts[2] == "_history":
            versions = store.versions(parts[0], parts[1])
            index = int(parts[3]) - 1 if parts[3].isdigit() else -1
            if 0 <= index < len(versions):
                return Reply(json=versions[index])
            return Reply(404, json=outcome("not-found"))
        if len(parts) == 1:
            query = {k: v for k, v in request.query.items() if k != "_offset"}
            if request.param("_count") == "0":
                return Reply(
                    json={
                        "resourceType": "Bundle",
                        "type": "searchset",
                        "meta": {"lastUpdated": _now()},
                        "total": 0,
                    }
                )
            found = store.search(parts[0], query)
            extra = store.includes(parts[0], found, query)
            return self._page(found, request, len(extra), extra)
        return Reply(404, json=outcome("not-found"))

    def _forward(self, request: Request) -> Reply:
        import requests

        headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
        headers["Host"] = f"127.0.0.1:{self.port}"
        upstream = requests.request(
            request.method,
            f"{self.upstream}/{request.path}",
            params=[(k, v) for k, values in request.query.items() for v in values],
            data=request.body or None,
            headers=headers,
            allow_redirects=False,
            timeout=120,
        )
        kept = {k: v for k, v in upstream.headers.items() if k.lower() in _KEPT}
        return Reply(upstream.status_code, body=upstream.content, headers=kept)

    def _page(
        self, found: list[Res], request: Request, n_include: int, extra: list[Res] | None = None
    ) -> Reply:
        size = int(request.param("_count") or self.page_size)
        size = max(1, min(size, self.page_size))
        offset = int(request.param("_offset") or 0)
        page = found[offset : offset + size]
        next_url = None
        if offset + size < len(found):
            query = {k: v for k, v in request.query.items() if k != "_offset"}
            query["_offset"] = [str(offset + size)]
            next_url = f"{self.base}/{request.path}?{urlencode(query, doseq=True)}"
        bundle = searchset(page + (extra or []), next_url, include=n_include)
        bundle["total"] = len(found)
        return Reply(json=bundle)


_HOP_BY_HOP = frozenset({"host", "content-length", "connection", "accept-encoding", "transfer-encoding"})
_KEPT = frozenset(
    {"content-type", "etag", "location", "content-location", "last-modified", "date", "retry-after"}
)


def _written(server: FaultServer, status: int, resource: Res) -> Reply:
    if status >= 400:
        return Reply(status, json=resource)
    version = resource["meta"]["versionId"]
    location = f"{server.base}/{resource['resourceType']}/{resource['id']}/_history/{version}"
    return Reply(status, json=resource, headers={"ETag": f'W/"{version}"', "Location": location})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], owner: FaultServer
    ) -> None:
        self.owner = owner
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # resets and closed sockets are the point of this server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        path = parts.path
        if path.startswith("/fhir"):
            path = path[len("/fhir") :]
        request = Request(
            self.command,
            path.strip("/"),
            parse_qs(parts.query, keep_blank_values=True),
            {k.lower(): v for k, v in self.headers.items()},
            body,
            time.monotonic(),
        )
        with owner._lock:
            owner.requests.append(request)
        try:
            reply = owner.scripted(request)
            if reply is None:
                reply = owner.answer(request)
        except Exception:  # a bug in a test's script or in this server: say so instead of hanging up
            trace = traceback.format_exc()
            print(f"faultserver: {trace}", file=sys.stderr)
            reply = Reply(599, body=trace.encode(), reason="Fault server bug")
        try:
            self._send(reply, request)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _send(self, reply: Any, request: Request) -> None:
        owner = self.server.owner
        if isinstance(reply, Stored):
            owner.answer(request)  # the write happens...
            self._send(reply.then, request)  # ...and the answer is lost or an error
            return
        if isinstance(reply, Redirect):
            self._plain(Reply(reply.status, headers={"Location": reply.location}))
            return
        if isinstance(reply, Silence):
            owner.stopping.wait(reply.seconds)
            self.close_connection = True
            return
        if isinstance(reply, Reset):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if isinstance(reply, TrickleHeaders):
            head = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 10_000_000
            for byte in head:
                if owner.stopping.wait(reply.interval):
                    break
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            self.close_connection = True
            return
        if isinstance(reply, Trickle):
            payload = reply.reply.payload()
            self._head(reply.reply, len(payload))
            for start in range(0, len(payload), reply.chunk):
                if owner.stopping.wait(reply.interval):
                    break
                self.wfile.write(payload[start : start + reply.chunk])
                self.wfile.flush()
            self.close_connection = True
            return
        if isinstance(reply, Huge):
            self._huge(reply)
            return
        self._plain(reply)

    def _head(self, reply: Reply, length: int | None) -> None:
        self.send_response(reply.status, reply.reason)
        headers = {"Content-Type": FHIR_JSON, **reply.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        if length is not None:
            self.send_header("Content-Length", str(length))
        else:
            self.send_header("Connection", "close")
        self.end_headers()

    def _plain(self, reply: Reply) -> None:
        payload = reply.payload()
        self._head(reply, len(payload))
        self.wfile.write(payload)

    def _huge(self, reply: Huge) -> None:
        opening = b'{"resourceType": "Bundle", "type": "searchset", "entry": [], "padding": "'
        closing = b'"}'
        filler = reply.size - len(opening) - len(closing)
        self._head(Reply(), reply.size if reply.content_length else None)
        self.wfile.write(opening)
        block = b"x" * 65536
        sent = 0
        while sent < filler and not self.server.owner.stopping.is_set():
            piece = block[: min(len(block), filler - sent)]
            self.wfile.write(piece)
            sent += len(piece)
        self.wfile.write(closing)
        if not reply.content_length:
            self.close_connection = True


@contextlib.contextmanager
def fault_servers(n: int = 2, **kwargs: Any) -> Iterator[list[FaultServer]]:
    """``n`` servers at once (the FHIR server and "the other origin")."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(FaultServer(**kwargs)) for _ in range(n)]
