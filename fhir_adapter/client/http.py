"""FHIR REST client: one ``requests.Session``, budgeted retries, bounded exchanges, readable errors.

PHI rule for this module: query strings carry patient identifiers (MRNs, names, birth dates), and
bodies carry clinical data. Logs and exception messages therefore hold only the method, the path
without its query, query parameter *names*, status codes and OperationOutcome issue codes; the
OperationOutcome's free text rides on the exception as ``server_text`` for the result file only.
Transport exceptions are re-raised ``from None`` because their text embeds the full URL with its query.

Credentials go only to the base's origin: every URL the server hands us (next links, redirects,
Location headers) is checked with urllib3's parser, the one that opens the connection
(:mod:`fhir_adapter.client.urls`), and redirects are followed by this client, never by ``requests``.

Limits on what a server controls: a deadline over each whole exchange and a cap on the body size
(:mod:`fhir_adapter.client.transport`), a cap on the pages of one search, the retry budget of one
request (a ``Retry-After`` beyond it gives up at once), and a throttling budget for the whole run.

Thread-safe, so a pool of threads can fetch patient records through one client: the session's
connection pool is sized for them, the counters are locked (and also kept per thread, for what one
patient's record cost), and one :class:`~fhir_adapter.client.pacing.Pacer` spaces every thread's
requests under ``max_rps`` and makes a 429 pause them all.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Final, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urljoin, urlsplit

import requests
import requests.auth

from fhir_adapter import __version__
from fhir_adapter.client.http_errors import http_error, issue_codes, json_body, json_or_none
from fhir_adapter.client.pacing import Pacer
from fhir_adapter.client.retry import (
    POST_RETRY_STATUSES,
    REDIRECT_STATUSES,
    RETRY_STATUSES,
    THROTTLE_STATUSES,
    TRANSPORT_ERRORS,
    backoff,
    describe_transport_error,
    failed_before_sending,
    http_date,
    retry_after_seconds,
)
from fhir_adapter.client.transport import (
    BodyTooLarge,
    DeadlinePassed,
    exchange,
    headers_within,
    watched_session,
)
from fhir_adapter.client.urls import (
    LOOPBACK,
    check_id,
    check_server_url,
    check_type,
    fhir_version_of,
    no_query,
    no_query_path,
    normalise_base,
    origin_of,
)
from fhir_adapter.errors import (
    ConfigError,
    DeadlineExceeded,
    OutcomeUnknown,
    ResponseTooLarge,
    ServerError,
    ServerUnreachable,
    ThrottleBudgetExhausted,
    UnsafeUrl,
)
from fhir_adapter.model import Resource

logger = logging.getLogger(__name__)

FHIR_JSON: Final = "application/fhir+json"

ParamValue = str | int | float
Params = Mapping[str, ParamValue | Sequence[ParamValue]] | Sequence[tuple[str, ParamValue]]
"""Search parameters; a sequence of pairs (or a list value) repeats a name, e.g. two ``date`` bounds."""

# A deleted resource answers 410 Gone; for a reader that is the same as absent.
_ABSENT: Final = frozenset({404, 410})


USER_AGENT: Final = f"fhir-adapter/{__version__}"

# Defaults of the limits (ServerSettings, site.toml [server], CLI flags; docs/security.md).
DEFAULT_DEADLINE_S: Final = 120.0
DEFAULT_MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024
DEFAULT_MAX_PAGES: Final = 1000
DEFAULT_THROTTLE_BUDGET_S: Final = 900.0
MAX_REDIRECTS: Final = 5


@runtime_checkable
class InvalidatableAuth(Protocol):
    """Auth whose credentials can be dropped and fetched anew (e.g. an OAuth access token).

    On a 401 the client calls ``invalidate()`` and resends once. This lives in the client rather
    than in a response hook so the resend goes through the same counting, logging and error
    mapping as every other request, and a second 401 surfaces as ``AuthError`` instead of looping.
    """

    def invalidate(self) -> None: ...


@dataclass(frozen=True, slots=True)
class FhirResponse:
    """What read/create/update/delete callers need beyond the body: version and location."""

    status: int
    body: Resource | None
    etag: str | None
    location: str | None
    last_modified: datetime | None
    date: datetime | None

    @property
    def version_id(self) -> str | None:
        """The resource version from the ETag (``W/"3"`` -> ``"3"``), else from ``meta.versionId``."""
        if self.etag:
            tag = self.etag.removeprefix("W/").strip('"')
            if tag:
                return tag
        meta = self.body.get("meta") if self.body else None
        version = meta.get("versionId") if isinstance(meta, dict) else None
        return version if isinstance(version, str) else None


class FhirClient:
    """Talks FHIR REST (R4/R5 JSON) to one server base URL."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: requests.auth.AuthBase | None = None,
        timeout: tuple[float, float] = (10, 60),
        verify: bool | str = True,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30,
        retry_budget_seconds: float = 300,
        deadline_seconds: float = DEFAULT_DEADLINE_S,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_pages: int = DEFAULT_MAX_PAGES,
        throttle_budget_seconds: float = DEFAULT_THROTTLE_BUDGET_S,
        allow_plain_http: bool = False,
        max_rps: float | None = None,
        connections: int = 10,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """``verify`` is True, False (explicit opt-out, logged) or the path of a CA bundle.

        ``deadline_seconds`` bounds each whole exchange (connect to last body byte), ``max_response_bytes``
        each body, ``max_pages`` each search, ``throttle_budget_seconds`` the time this client may spend
        waiting on 429/503 answers in total. Plain ``http://`` to a host that is not loopback is refused
        unless ``allow_plain_http``. ``max_rps`` limits request starts per second over all threads;
        ``connections`` is the size of the connection pool (at least the threads that share the client).

        ``sleep``, ``monotonic`` and ``rng`` exist so tests can drive retries without waiting.
        """
        self.base_url = normalise_base(base_url, allow_plain_http=allow_plain_http)
        if max_retries < 0 or backoff_base < 0 or backoff_max < 0 or retry_budget_seconds < 0:
            raise ValueError("max_retries, backoff_base, backoff_max and retry_budget_seconds must be >= 0")
        if deadline_seconds <= 0 or max_response_bytes <= 0 or max_pages <= 0 or throttle_budget_seconds < 0:
            raise ValueError(
                "deadline, max response size and max pages must be > 0, the throttle budget >= 0"
            )
        if verify is False:
            logger.warning(
                "TLS certificate verification is DISABLED for %s (verify=False); "
                "use a CA bundle path instead of this in production",
                self.base_url,
            )
        elif isinstance(verify, str) and not os.path.exists(verify):
            raise ConfigError(f"verify: CA bundle {verify} does not exist")
        if self.base_url.startswith("http:") and allow_plain_http:
            logger.warning(
                "FHIR base %s is plain http (allowed by allow_plain_http): patient data travels unencrypted",
                self.base_url,
            )

        self._auth = auth
        self._timeout = timeout
        self._verify = verify
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._budget = retry_budget_seconds
        self._deadline = deadline_seconds
        self._max_bytes = max_response_bytes
        self._max_pages = max_pages
        self._throttle_budget = throttle_budget_seconds
        self._owns_session = session is None
        self._session = session if session is not None else watched_session(connections)
        self._session.verify = verify
        self._sleep = sleep
        self._monotonic = monotonic
        self._rng = rng if rng is not None else random.Random()
        self._pacer = Pacer(max_rps, sleep=sleep, monotonic=monotonic)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._origin = origin_of(self.base_url)
        self._capabilities: Resource | None = None
        self._request_count = 0
        self._retry_count = 0
        self._last_server_date: datetime | None = None

    # -- bookkeeping -------------------------------------------------------------------------

    @property
    def auth(self) -> requests.auth.AuthBase | None:
        return self._auth

    @property
    def request_count(self) -> int:
        """HTTP requests sent, retries and 401 re-sends included (all threads)."""
        return self._request_count

    @property
    def thread_request_count(self) -> int:
        """HTTP requests sent from the calling thread: what one patient's fetch cost, in a pool."""
        return int(getattr(self._local, "requests", 0))

    @property
    def retry_count(self) -> int:
        """How many of ``request_count`` were re-sends."""
        return self._retry_count

    @property
    def throttled_seconds(self) -> float:
        """Wall seconds this client's threads were paused because the server answered 429 or 503."""
        return self._pacer.paused_seconds

    @property
    def rate_wait_seconds(self) -> float:
        """Seconds requests waited for their slot under ``max_rps`` (all threads, summed)."""
        return self._pacer.waited_for_rate

    @property
    def origin(self) -> tuple[str, str, int]:
        return self._origin

    @property
    def last_server_date(self) -> datetime | None:
        """The latest response's ``Date`` header, tz-aware: the sync watermark uses the server's clock."""
        return self._last_server_date

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- FHIR interactions -------------------------------------------------------------------

    def capabilities(self) -> Resource:
        """The server's CapabilityStatement (``GET metadata``), fetched once per client."""
        if self._capabilities is None:
            body = self.get("metadata")
            if body.get("resourceType") != "CapabilityStatement":
                raise ServerError(
                    f"GET metadata returned {body.get('resourceType')!r}, not a CapabilityStatement",
                    url=self.base_url + "metadata",
                )
            self._capabilities = body
        return self._capabilities

    def fhir_version(self) -> str:
        """``CapabilityStatement.fhirVersion``, e.g. ``"4.0.1"`` or ``"5.0.0"``."""
        version = fhir_version_of(self.capabilities().get("fhirVersion"))
        if not version:
            raise ServerError("the CapabilityStatement has no fhirVersion", url=self.base_url + "metadata")
        return version

    def read(self, resource_type: str, resource_id: str) -> FhirResponse | None:
        """``GET Type/id``; None when the resource does not exist (404) or was deleted (410)."""
        path = f"{check_type(resource_type)}/{check_id(resource_id)}"
        resp = self._request("GET", self._resolve(path), allow=_ABSENT)
        return None if resp.status_code in _ABSENT else self._fhir_response(resp, "GET", path)

    def vread(self, resource_type: str, resource_id: str, version_id: str) -> FhirResponse | None:
        """``GET Type/id/_history/vid``; None when that version does not exist or was a deletion."""
        path = f"{check_type(resource_type)}/{check_id(resource_id)}/_history/{check_id(version_id)}"
        resp = self._request("GET", self._resolve(path), allow=_ABSENT)
        return None if resp.status_code in _ABSENT else self._fhir_response(resp, "GET", path)

    def get(self, path_or_url: str, params: Params | None = None) -> Resource:
        """GET a path relative to the base, or an absolute URL on the same origin as the base."""
        url = self._resolve(path_or_url)
        resp = self._request("GET", url, params=params)
        body = self._json(resp, "GET", url)
        if body is None:
            raise ServerError(f"empty response to GET {self._display(url)}", resp.status_code, no_query(url))
        return body

    def search_pages(self, type_or_path: str, params: Params | None = None) -> Iterator[Resource]:
        """Yield each searchset Bundle, following ``link[relation=next]`` exactly as the server gave it.

        Servers encode paging state in their own way (HAPI ``_getpages``, cursors); a hand-made
        offset would skip or repeat entries when the result set changes during paging.
        """
        return self._pages(self._resolve(type_or_path), params)

    def search(self, type_or_path: str, params: Params | None = None) -> Iterator[Resource]:
        """Yield the resources of every page (matches and ``_include``-d resources).

        Entries with ``search.mode = outcome`` are server warnings, not results; they are logged
        by issue code and skipped so callers can count what they get.
        """
        for bundle in self.search_pages(type_or_path, params):
            for entry in _entries(bundle):
                resource = entry.get("resource")
                if resource is None:
                    continue
                if not isinstance(resource, dict):
                    raise ServerError(
                        f"malformed Bundle from GET {no_query_path(type_or_path)}: an entry's resource is "
                        "not an object"
                    )
                search = entry.get("search")
                if isinstance(search, dict) and search.get("mode") == "outcome":
                    logger.warning(
                        "search %s: server outcome %s", no_query_path(type_or_path), issue_codes(resource)
                    )
                    continue
                yield resource

    def history(
        self, resource_type: str, resource_id: str, params: Params | None = None
    ) -> Iterator[Resource]:
        """Yield the entries (not just resources) of ``Type/id/_history``, newest first.

        Whole entries because a deletion has no ``resource``, only ``request``/``response``.
        """
        path = f"{check_type(resource_type)}/{check_id(resource_id)}/_history"
        for bundle in self._pages(self._resolve(path), params):
            yield from _entries(bundle)

    def history_type(self, resource_type: str, params: Params | None = None) -> Iterator[Resource]:
        """Yield the entries of ``Type/_history`` (every version of every resource of a type, deletions
        included), following ``next`` links; the sync job reads changes with ``_since``."""
        path = f"{check_type(resource_type)}/_history"
        for bundle in self._pages(self._resolve(path), params):
            yield from _entries(bundle)

    def create(self, resource: Resource, if_none_exist: str | None = None) -> FhirResponse:
        """``POST Type``; ``if_none_exist`` (a query without ``?``) makes it a conditional create."""
        path = check_type(_str_field(resource, "resourceType"))
        headers = {"If-None-Exist": if_none_exist.lstrip("?")} if if_none_exist else None
        resp = self._request("POST", self._resolve(path), body=resource, headers=headers)
        return self._fhir_response(resp, "POST", path)

    def update(self, resource: Resource, if_match: str | None = None) -> FhirResponse:
        """``PUT Type/id``; ``if_match`` (an ETag such as ``W/"3"``) makes it a version-aware update."""
        rtype = check_type(_str_field(resource, "resourceType"))
        path = f"{rtype}/{check_id(_str_field(resource, 'id'))}"
        headers = {"If-Match": if_match} if if_match else None
        resp = self._request("PUT", self._resolve(path), body=resource, headers=headers)
        return self._fhir_response(resp, "PUT", path)

    def conditional_update(self, resource: Resource, query: str | Params) -> FhirResponse:
        """``PUT Type?query``: the server updates the single match, or creates when none matches."""
        path = check_type(_str_field(resource, "resourceType"))
        if isinstance(query, str):
            url, params = f"{self._resolve(path)}?{query.lstrip('?')}", None
        else:
            url, params = self._resolve(path), query
        resp = self._request("PUT", url, params=params, body=resource)
        return self._fhir_response(resp, "PUT", path)

    def delete(self, resource_type: str, resource_id: str) -> FhirResponse:
        """``DELETE Type/id``. A 404/410 is returned, not raised: the resource is gone either way,
        and a retried delete whose first response was lost legitimately sees it."""
        path = f"{check_type(resource_type)}/{check_id(resource_id)}"
        resp = self._request("DELETE", self._resolve(path), allow=_ABSENT)
        return self._fhir_response(resp, "DELETE", path)

    def transaction(self, bundle: Resource) -> Resource:
        """POST a ``transaction`` or ``batch`` Bundle to the base; returns the response Bundle.

        Retried like a PUT when every entry is a PUT, GET or DELETE (resending changes nothing), else
        like a create (only when the server cannot have processed it).
        """
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") not in ("transaction", "batch"):
            raise ValueError("transaction() needs a Bundle of type 'transaction' or 'batch'")
        methods = {
            str((e.get("request") or {}).get("method", "")).upper()
            for e in bundle.get("entry") or []
            if isinstance(e, dict)
        }
        idempotent = bool(methods) and methods <= {"PUT", "GET", "DELETE", "HEAD"}
        resp = self._request("POST", self.base_url, body=bundle, idempotent=idempotent)
        body = self._json(resp, "POST", self.base_url)
        if body is None or body.get("resourceType") != "Bundle":
            raise ServerError(
                f"HTTP {resp.status_code} on POST [base]: the transaction response is not a Bundle",
                resp.status_code,
                self.base_url,
            )
        return body

    def check_url(self, url: str) -> str:
        """A URL the server handed us (relative to the base, or absolute), resolved and checked: on the
        base's origin and unambiguous, else ``UnsafeUrl``. For callers that fetch server-given URLs
        (bulk export status and file URLs)."""
        return self._resolve_link(url, self.base_url)

    # -- raw exchanges (Bulk Data: status and headers matter, files are streamed) -------------

    def send(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Params | None = None,
        body: Resource | None = None,
        headers: Mapping[str, str] | None = None,
        allow: frozenset[int] = frozenset(),
    ) -> requests.Response:
        """One request with the client's retries, auth, logging and error mapping, returning the response
        itself: for operations whose status and headers are the answer (a Bulk Data kick-off's 202 and
        ``Content-Location``, a status poll's ``Retry-After`` and ``X-Progress``)."""
        url = self._resolve(path_or_url)
        return self._request(method, url, params=params, body=body, headers=headers, allow=allow)

    def open_stream(
        self,
        url: str,
        *,
        send_auth: bool,
        allowed_origins: frozenset[tuple[str, str, int]] = frozenset(),
        headers: Mapping[str, str] | None = None,
        session: requests.Session | None = None,
    ) -> requests.Response:
        """``GET url`` with the body left unread (``stream=True``) for a caller that writes it to disk.

        No retries and no redirects (the caller resumes a file from where it broke, and judges each hop).
        Credentials go only when ``send_auth``, and then only to the base's origin or one of
        ``allowed_origins``; without them any https (or loopback) origin may be fetched (signed storage
        URLs). A 401 with renewable credentials is resent once. ``session`` lets a thread use a session
        of its own. Close the response when done.
        """
        try:
            origin = origin_of(url)
        except ValueError:
            raise ServerError("malformed file URL from the server", url=no_query(url)) from None
        if send_auth and origin != self._origin and origin not in allowed_origins:
            raise ServerError(
                f"refusing to send credentials to {origin[0]}://{origin[1]}:{origin[2]}: not the FHIR "
                "server's origin and not an allowed storage origin",
                url=no_query(url),
            )
        if origin[0] != "https" and origin[1] not in LOOPBACK and origin != self._origin:
            raise ServerError("refusing a plain http file URL on another host", url=no_query(url))
        send_headers = {"User-Agent": USER_AGENT, **(headers or {})}
        renewed = False
        while True:
            sent_at = self._monotonic()
            # The deadline bounds the exchange up to the headers; the body's pace is the caller's
            # (``transport.paced_chunks``): a file may rightly take longer than any one deadline.
            try:
                resp = headers_within(
                    session or self._session,
                    "GET",
                    url,
                    deadline=self._deadline,
                    headers=send_headers,
                    auth=self._auth if send_auth else None,
                    timeout=self._timeout,
                    verify=self._verify,
                )
            except requests.exceptions.SSLError:
                raise ServerUnreachable(
                    "TLS error on a file download: check the certificate and the verify setting",
                    url=no_query(url),
                ) from None
            logger.info(
                "GET %s -> %d (%.0f ms, streamed)",
                self._display(url),
                resp.status_code,
                (self._monotonic() - sent_at) * 1000,
            )
            if (
                resp.status_code == 401
                and send_auth
                and not renewed
                and isinstance(self._auth, InvalidatableAuth)
            ):
                resp.close()
                self._auth.invalidate()
                renewed = True
                continue
            return resp

    # -- internals ---------------------------------------------------------------------------

    def _pages(self, url: str, params: Params | None) -> Iterator[Resource]:
        seen = {url}
        next_url: str | None = url
        pages = 0
        while next_url is not None:
            pages += 1
            if pages > self._max_pages:
                raise ServerError(
                    f"search {self._display(url)} has more than {self._max_pages} pages (max_pages); stopped",
                    url=no_query(url),
                )
            resp = self._request("GET", next_url, params=params)
            bundle = self._json(resp, "GET", next_url)
            if bundle is None or bundle.get("resourceType") != "Bundle":
                raise ServerError(
                    f"HTTP {resp.status_code} on GET {self._display(next_url)}: expected a Bundle",
                    resp.status_code,
                    no_query(next_url),
                )
            _check_bundle(bundle, self._display(next_url))
            yield bundle
            link = _next_link(bundle, self._display(next_url))
            if link is None:
                return
            next_url = self._resolve_link(link, self.base_url)
            if next_url in seen:
                raise ServerError(
                    f"paging loop: the next link of {self._display(url)} repeats an earlier page",
                    url=no_query(next_url),
                )
            seen.add(next_url)
            params = None  # the next link already carries the full query

    def _request(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        body: Resource | None = None,
        headers: Mapping[str, str] | None = None,
        allow: frozenset[int] = frozenset(),
        idempotent: bool | None = None,
    ) -> requests.Response:
        """Send with retries; return a 2xx (or an ``allow``-ed status) response, else raise.

        GET follows redirects on the base's origin (at most ``MAX_REDIRECTS``); other methods never do
        (a redirected PUT/POST would silently turn into a GET or lose its body).
        """
        display = self._display(url)
        send_headers = {"Accept": FHIR_JSON, "User-Agent": USER_AGENT}
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            send_headers["Content-Type"] = FHIR_JSON
        if headers:
            send_headers.update(headers)
        if logger.isEnabledFor(logging.DEBUG):
            names = _param_names(url, params)
            if names:
                logger.debug("%s %s query parameters: %s", method, display, ", ".join(names))

        safe_to_resend = method != "POST" if idempotent is None else idempotent
        retry_statuses = RETRY_STATUSES if safe_to_resend else POST_RETRY_STATUSES
        started = self._monotonic()
        retries = 0
        redirects = 0
        reauthenticated = False
        while True:
            self._pacer.wait_turn()
            self._count_request()
            sent_at = self._monotonic()
            try:
                resp = self._exchange(method, url, params, data, send_headers)
            except requests.exceptions.SSLError:
                raise ServerUnreachable(
                    f"TLS error on {method} {display}: check the server certificate and the verify setting",
                    url=no_query(url),
                ) from None
            except DeadlinePassed:
                message = (
                    f"no complete answer to {method} {display} within the {self._deadline:.0f} s deadline"
                )
                if not safe_to_resend:
                    raise OutcomeUnknown(
                        message + "; the server may have processed it", url=no_query(url)
                    ) from None
                # Not retried: a server that trickles its answer will trickle the next one too.
                raise DeadlineExceeded(message, url=no_query(url)) from None
            except BodyTooLarge:
                raise ResponseTooLarge(
                    f"the answer to {method} {display} is larger than {self._max_bytes} bytes "
                    "(max_response_bytes); not read further",
                    url=no_query(url),
                ) from None
            except TRANSPORT_ERRORS as exc:
                reason = describe_transport_error(exc)
                if not safe_to_resend and not failed_before_sending(exc):
                    raise OutcomeUnknown(
                        f"{reason} on {method} {display}; not retried because the server may have processed it",
                        url=no_query(url),
                    ) from None
                delay = self._backoff(retries)
                if not self._may_retry(retries, started, delay):
                    raise ServerUnreachable(
                        f"{reason} on {method} {display}; gave up after {retries + 1} attempt(s)",
                        url=no_query(url),
                    ) from None
                logger.warning(
                    "%s %s failed (%s); retry %d/%d in %.1fs",
                    method,
                    display,
                    reason,
                    retries + 1,
                    self._max_retries,
                    delay,
                )
                self._wait(delay)
                retries += 1
                continue

            self._note_response(resp, method, display, sent_at)
            status = resp.status_code
            if method == "GET" and status in REDIRECT_STATUSES:
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise ServerError(
                        f"more than {MAX_REDIRECTS} redirects on GET {display}", status, no_query(url)
                    )
                location = resp.headers.get("Location")
                if not location:
                    raise ServerError(
                        f"HTTP {status} on GET {display} without a Location", status, no_query(url)
                    )
                url = self._resolve_link(location, url)
                display = self._display(url)
                params = None  # the Location is the whole URL
                continue
            if 200 <= status < 300 or status in allow:
                return resp
            if status == 401 and not reauthenticated and isinstance(self._auth, InvalidatableAuth):
                logger.info("%s %s -> 401; renewing credentials and resending once", method, display)
                self._auth.invalidate()
                reauthenticated = True
                self._count_retry()
                continue
            note = None
            if status in retry_statuses:
                retry_after = retry_after_seconds(resp)
                left = self._budget - (self._monotonic() - started)
                if retry_after is not None and retry_after > left:
                    note = (
                        f"the server asked to wait {_seconds(retry_after)}, more than the {left:.0f} s left "
                        "of the retry budget"
                    )
                else:
                    delay = self._backoff(retries) if retry_after is None else retry_after
                    if self._may_retry(retries, started, delay):
                        logger.warning(
                            "%s %s -> %d; retry %d/%d in %.1fs",
                            method,
                            display,
                            status,
                            retries + 1,
                            self._max_retries,
                            delay,
                        )
                        if status in THROTTLE_STATUSES:
                            # "Slow down" is said to the client, not to one request: every thread
                            # waits (the next wait_turn sleeps it off).
                            self._throttle(status, delay)
                            self._count_retry()
                        else:
                            self._wait(delay)
                        retries += 1
                        continue
            raise http_error(
                resp, method, display, url, attempts=retries + 1, renewed=reauthenticated, note=note
            )

    def _exchange(
        self,
        method: str,
        url: str,
        params: Params | None,
        data: bytes | None,
        headers: Mapping[str, str],
    ) -> requests.Response:
        """One HTTP exchange under the deadline, its body read (at most ``max_response_bytes``)."""
        connect, read = self._timeout
        try:
            return exchange(
                self._session,
                method,
                url,
                deadline=self._deadline,
                max_bytes=self._max_bytes,
                params=params,
                data=data,
                headers=headers,
                auth=self._auth,
                timeout=(connect, min(read, self._deadline)),
                verify=self._verify,
            )
        except requests.exceptions.ContentDecodingError:
            raise ServerError(
                f"the answer to {method} {self._display(url)} cannot be decoded (Content-Encoding)",
                url=no_query(url),
            ) from None

    def _count_request(self) -> None:
        with self._lock:
            self._request_count += 1
        self._local.requests = getattr(self._local, "requests", 0) + 1

    def _count_retry(self) -> None:
        with self._lock:
            self._retry_count += 1

    def _throttle(self, status: int, delay: float) -> None:
        waited = self._pacer.paused_seconds
        if waited + self._pacer.extension(delay) > self._throttle_budget:
            raise ThrottleBudgetExhausted(
                f"the server keeps throttling (HTTP {status}): {waited:.0f} s waited on 429/503 "
                f"answers this run and the next wait ({_seconds(delay)}) would pass the throttling budget "
                f"of {self._throttle_budget:.0f} s; stopping. Run again later, or raise "
                "throttle_budget_seconds (--throttle-budget)"
            )
        self._pacer.pause(delay)

    def _may_retry(self, retries: int, started: float, delay: float) -> bool:
        # The budget bounds the whole call, so a delay that would end past it is not worth taking.
        return retries < self._max_retries and (self._monotonic() - started) + delay <= self._budget

    def _wait(self, delay: float) -> None:
        self._count_retry()
        self._sleep(delay)

    def _backoff(self, retries: int) -> float:
        return backoff(retries, self._backoff_base, self._backoff_max, self._rng)

    def _note_response(self, resp: requests.Response, method: str, display: str, sent_at: float) -> None:
        server_date = http_date(resp.headers.get("Date"))
        if server_date is not None:
            self._last_server_date = server_date
        elapsed_ms = (self._monotonic() - sent_at) * 1000
        logger.info("%s %s -> %d (%.0f ms)", method, display, resp.status_code, elapsed_ms)

    def _json(self, resp: requests.Response, method: str, url: str) -> Resource | None:
        if not resp.content:
            return None
        # Strict UTF-8 (json_body). orjson, not json: the parse was a sixth of the client's CPU per
        # request (nesting past 1,024 levels is its error, not a RecursionError).
        body = json_body(resp.content)
        if not isinstance(body, dict):
            raise ServerError(
                f"HTTP {resp.status_code} on {method} {self._display(url)}: "
                "the body is not a UTF-8 JSON object",
                resp.status_code,
                no_query(url),
            )
        return body

    def _fhir_response(self, resp: requests.Response, method: str, path: str) -> FhirResponse:
        headers = resp.headers
        if 200 <= resp.status_code < 300:
            body = self._json(resp, method, self._resolve(path))
        else:
            # An allowed 404/410 may carry an OperationOutcome, an HTML page or nothing at all.
            parsed = json_or_none(resp)
            body = parsed if isinstance(parsed, dict) else None
        location = headers.get("Location") or headers.get("Content-Location")
        return FhirResponse(
            status=resp.status_code,
            body=body,
            etag=headers.get("ETag"),
            # A Location elsewhere is never used, not even to read an id from.
            location=self._resolve_link(location, self.base_url) if location else None,
            last_modified=http_date(headers.get("Last-Modified")),
            date=http_date(headers.get("Date")),
        )

    def _resolve(self, path_or_url: str) -> str:
        """Caller paths are base-relative even with a leading ``/``; absolute URLs must share its origin."""
        if "://" in path_or_url:
            return check_server_url(path_or_url, self._origin)
        return self.base_url + path_or_url.lstrip("/")

    def _resolve_link(self, link: str, against: str) -> str:
        """A URL from the server, relative ones joined with ``against`` (RFC 3986: a leading ``/`` means
        the host root), then checked with urllib3's parser on the joined string we will request.

        The raw link is checked first: a backslash or a control character is refused before any
        joining can normalise it away.
        """
        problem = _raw_problem(link)
        if problem is not None:
            raise UnsafeUrl(f"refusing a URL from the server: {problem}")
        return check_server_url(urljoin(against, link), self._origin)

    def _display(self, url: str) -> str:
        path = urlsplit(url).path
        base_path = urlsplit(self.base_url).path
        if path + "/" == base_path:
            return "[base]"
        if path.startswith(base_path):
            path = path[len(base_path) :]
        return path or "[base]"


# -- helpers ---------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 1e9 else "for ever"


def _raw_problem(link: object) -> str | None:
    """What makes a link ambiguous before it is joined (joining could normalise it away)."""
    if not isinstance(link, str) or not link:
        return "it is not a non-empty string"
    if "\\" in link:
        return "it contains a backslash"
    if any(ord(c) <= 0x20 or ord(c) == 0x7F or c.isspace() for c in link):
        return "it contains whitespace or control characters"
    return None


def _param_names(url: str, params: Params | None) -> list[str]:
    names = [name for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)]
    if isinstance(params, Mapping):
        names.extend(params.keys())
    elif params is not None:
        names.extend(name for name, _ in params)
    return sorted(set(names))


def _check_bundle(bundle: Resource, display: str) -> None:
    """A Bundle whose ``entry`` or ``link`` is not a list of objects is an error for the request: an
    entry skipped in silence would be data dropped without a trace."""
    for key in ("entry", "link"):
        value = bundle.get(key)
        if value is None:
            continue
        if not isinstance(value, list):
            raise ServerError(f"malformed Bundle from GET {display}: {key} is not a list")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise ServerError(f"malformed Bundle from GET {display}: {key}[{index}] is not an object")


def _entries(bundle: Resource) -> Iterator[Resource]:
    entries = bundle.get("entry")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            yield entry


def _next_link(bundle: Resource, display: str) -> str | None:
    links = bundle.get("link")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if url is None or url == "":
                return None
            if not isinstance(url, str):
                raise ServerError(f"malformed Bundle from GET {display}: the next link's url is not a string")
            return url
    return None


def _str_field(resource: Resource, name: str) -> str:
    value = resource.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"resource has no {name}")
    return value
