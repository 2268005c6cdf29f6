"""HL7 FHIR Bulk Data Access (v2) export protocol: kick-off, status polls, the manifest, cancelling a job.

On top of :class:`FhirClient` (its auth, retries and origin checks). Downloads are in
:mod:`fhir_adapter.client.bulk_download`, the persisted job (resume after a crash) in
:mod:`fhir_adapter.client.bulk_job`.

Polling: a ``202`` carries ``X-Progress`` (logged at INFO, clipped, printable characters only) and
usually ``Retry-After`` (seconds or an HTTP-date). ``Retry-After`` is honoured but each wait is capped
(``BulkSettings.poll_max_wait``): HAPI answers a fixed 120 s however small the job, and a two-second job
should not cost two minutes. Without it the wait doubles from ``poll_initial_wait`` up to the cap.
``429`` and gateway errors without an OperationOutcome back off the same way; the whole poll gives up
after ``export_timeout`` (the job is kept, so the next run resumes it). A final ``4xx``/``5xx`` that
carries an OperationOutcome is the job's failure (IG: "the server SHALL return ... an OperationOutcome").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import urlencode, urljoin

import requests

from fhir_adapter.client.http import FhirClient
from fhir_adapter.client.http_errors import http_error, json_or_none
from fhir_adapter.client.retry import http_date
from fhir_adapter.client.urls import check_id, check_type, no_query
from fhir_adapter.errors import AccessDenied, AuthError, ServerError
from fhir_adapter.model import Resource
from fhir_adapter.settings import BulkSettings

log = logging.getLogger(__name__)

NDJSON: Final = "application/fhir+ndjson"
Level = Literal["system", "patient", "group"]

# A query string longer than this goes in a POSTed Parameters body instead (request-line limits of
# proxies in front of hospital servers are often 4-8 KB).
MAX_GET_QUERY: Final = 1800
# Status codes of a poll the loop handles itself: gone, busy, and gateway trouble.
_GONE: Final = frozenset({404, 410})
_BUSY: Final = frozenset({429, 500, 502, 503, 504})
_PROGRESS_CHARS: Final = 200  # of an X-Progress header, searched for its figure
_PROGRESS_FIGURE: Final = re.compile(r"\b\d{1,3}(?:\.\d{1,2})?\s?%|\b\d{1,9}\s?/\s?\d{1,9}\b", re.ASCII)


class JobGone(ServerError):
    """The status URL answers 404/410: the job was cancelled, expired or never existed."""


class ExportFailed(ServerError):
    """The server reports the export job failed (a final error status with an OperationOutcome)."""


class ExportTimedOut(ServerError):
    """The job did not finish within ``export_timeout``; it is kept and a later run resumes it."""


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """One kick-off: the level, what to export, and (second pass) which patients."""

    level: Level = "system"
    group: str | None = None
    types: tuple[str, ...] = ()
    since: dt.datetime | None = None
    type_filters: tuple[str, ...] = ()
    patients: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.level == "group") != (self.group is not None):
            raise ValueError("a group export needs a group id, and only it")
        if self.group is not None:
            check_id(self.group)
        for rtype in self.types:
            check_type(rtype)
        for pid in self.patients:
            check_id(pid)
        if self.since is not None and self.since.tzinfo is None:
            raise ValueError("_since needs a time zone")

    @property
    def path(self) -> str:
        if self.level == "group":
            return f"Group/{self.group}/$export"
        return "Patient/$export" if self.level == "patient" else "$export"

    def to_json(self) -> dict[str, object]:
        return {
            "level": self.level,
            "group": self.group,
            "types": list(self.types),
            "since": instant(self.since) if self.since else None,
            "typeFilters": list(self.type_filters),
            "patients": list(self.patients),
        }

    def key(self, base_url: str) -> str:
        """Identifies the request on that server: a persisted job is resumed only for the same key."""
        canonical = json.dumps({"base": base_url, **self.to_json()}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def describe(self) -> str:
        """For logs: the level and parameter names and counts, never the values of ``patient``."""
        where = f"Group/{self.group}" if self.level == "group" else self.level
        parts = [f"{where} level", f"_type {','.join(self.types) or '(all)'}"]
        if self.since:
            parts.append(f"_since {instant(self.since)}")
        if self.type_filters:
            parts.append(f"{len(self.type_filters)} _typeFilter")
        if self.patients:
            parts.append(f"{len(self.patients)} patient(s)")
        return ", ".join(parts)

    def query(self) -> list[tuple[str, str]]:
        pairs = [("_outputFormat", NDJSON)]
        if self.types:
            pairs.append(("_type", ",".join(self.types)))
        if self.since:
            pairs.append(("_since", instant(self.since)))
        pairs.extend(("_typeFilter", f) for f in self.type_filters)
        return pairs

    def parameters(self) -> Resource:
        """The same request as a ``Parameters`` body (POST kick-off; the only form ``patient`` has)."""
        params: list[Resource] = []
        for name, value in self.query():
            kind = "valueInstant" if name == "_since" else "valueString"
            params.append({"name": name, kind: value})
        params.extend(
            {"name": "patient", "valueReference": {"reference": f"Patient/{p}"}} for p in self.patients
        )
        return {"resourceType": "Parameters", "parameter": params}


@dataclass(frozen=True, slots=True)
class ManifestFile:
    type: str
    url: str
    count: int | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """The complete-status body (IG "Response - Complete Status")."""

    transaction_time: dt.datetime
    request: str
    requires_access_token: bool
    output: tuple[ManifestFile, ...] = ()
    error: tuple[ManifestFile, ...] = ()
    deleted: tuple[ManifestFile, ...] = ()
    has_message: bool = False

    def to_json(self) -> dict[str, object]:
        def files(items: Sequence[ManifestFile]) -> list[dict[str, object]]:
            return [
                {"type": f.type, "url": f.url, **({"count": f.count} if f.count is not None else {})}
                for f in items
            ]

        return {
            "transactionTime": instant(self.transaction_time),
            "request": no_query(self.request) if self.request else "",
            "requiresAccessToken": self.requires_access_token,
            "output": files(self.output),
            "error": files(self.error),
            "deleted": files(self.deleted),
        }


@dataclass
class PollStats:
    polls: int = 0
    waited: float = 0.0
    progress: list[str] = field(default_factory=list)


def parse_manifest(body: object, status_url: str) -> Manifest:
    """Check and type the manifest; relative file URLs are resolved against the status URL."""
    where = no_query(status_url)
    if not isinstance(body, dict):
        raise ServerError("the export manifest is not a JSON object", url=where)
    stamp = body.get("transactionTime")
    when = _parse_instant(stamp) if isinstance(stamp, str) else None
    if when is None:
        raise ServerError("the export manifest has no valid transactionTime", url=where)
    request = body.get("request")
    token = body.get("requiresAccessToken")
    return Manifest(
        transaction_time=when,
        request=request if isinstance(request, str) else "",
        # Missing (not IG-conformant): no token is sent anywhere, which is the safe reading.
        requires_access_token=token is True,
        output=_files(body, "output", status_url),
        error=_files(body, "error", status_url),
        deleted=_files(body, "deleted", status_url),
        has_message=isinstance(body.get("message"), str),
    )


def _files(body: dict[str, object], key: str, status_url: str) -> tuple[ManifestFile, ...]:
    items = body.get(key)
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ServerError(f"the export manifest's {key} is not a list", url=no_query(status_url))
    out = []
    for n, item in enumerate(items):
        rtype = item.get("type") if isinstance(item, dict) else None
        url = item.get("url") if isinstance(item, dict) else None
        if not isinstance(rtype, str) or not isinstance(url, str) or not url:
            raise ServerError(
                f"the export manifest's {key}[{n}] has no type or url", url=no_query(status_url)
            )
        try:
            check_type(rtype)
        except ValueError:
            raise ServerError(
                f"the export manifest's {key}[{n}].type is not a resource type", url=no_query(status_url)
            ) from None
        count = item.get("count") if isinstance(item, dict) else None
        valid_count = count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None
        out.append(ManifestFile(rtype, urljoin(status_url, url), valid_count))
    return tuple(out)


class BulkClient:
    """Kick-off, poll and cancel export jobs on one FHIR server."""

    def __init__(
        self,
        client: FhirClient,
        settings: BulkSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.settings = settings
        self._sleep = sleep
        self._monotonic = monotonic
        self.kick_offs = 0

    def kick_off(self, request: ExportRequest) -> str:
        """Start a job; returns its status URL (``Content-Location`` of the 202)."""
        headers = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
        query = request.query()
        self.kick_offs += 1
        log.info("bulk export kick-off: %s", request.describe())
        if request.patients or len(urlencode(query)) > MAX_GET_QUERY:
            resp = self.client.send("POST", request.path, body=request.parameters(), headers=headers)
        else:
            resp = self.client.send("GET", request.path, params=query, headers=headers)
        location = resp.headers.get("Content-Location")
        if resp.status_code != 202 or not location:
            raise ServerError(
                f"HTTP {resp.status_code} on {request.path}: a kick-off must answer 202 with Content-Location",
                resp.status_code,
                no_query(self.client.base_url + request.path),
            )
        # A URL the server hands us: on the base's origin and unambiguous, or UnsafeUrl (docs/security.md).
        return self.client.check_url(location)

    def poll(self, status_url: str, *, stats: PollStats | None = None) -> Manifest:
        """Poll until the job completes; the manifest, or JobGone / ExportFailed / ExportTimedOut."""
        settings = self.settings
        stats = stats if stats is not None else PollStats()
        started = self._monotonic()
        waits = 0
        while True:
            try:
                resp = self.client.send(
                    "GET", status_url, headers={"Accept": "application/json"}, allow=_GONE | _BUSY
                )
            except AuthError:
                raise
            except AccessDenied as exc:
                # 401/403 on the job's status URL closes the whole export, not one patient's record.
                raise AuthError(str(exc), exc.status, exc.url) from None
            except ServerError as exc:
                if exc.status is not None and 400 <= exc.status < 500:
                    raise ExportFailed(f"bulk export job failed: {exc}", exc.status, exc.url) from None
                raise
            stats.polls += 1
            status = resp.status_code
            if status == 200:
                try:
                    return parse_manifest(json_or_none(resp), status_url)
                except ServerError as exc:
                    # The same job answers the same manifest: resuming it next run would fail again.
                    raise ExportFailed(f"bulk export job unusable: {exc}", exc.status, exc.url) from None
            if status in _GONE:
                raise JobGone(
                    f"HTTP {status} on the export status URL: the job is gone", status, no_query(status_url)
                )
            # 429, 502-504 are the way there; a 500 with an OperationOutcome is the job's own failure.
            if status == 500 and _is_outcome(json_or_none(resp)):
                raise ExportFailed(
                    f"bulk export job failed: {http_error(resp, 'GET', 'export status', status_url, attempts=1)}",
                    status,
                    no_query(status_url),
                )
            if status not in _BUSY and status != 202:
                raise ServerError(f"HTTP {status} on the export status URL", status, no_query(status_url))
            progress = _progress(resp.headers.get("X-Progress"))
            if progress and (not stats.progress or stats.progress[-1] != progress):
                stats.progress.append(progress)
            wait = self._wait(resp, waits)
            elapsed = self._monotonic() - started
            if elapsed + wait > settings.export_timeout:
                raise ExportTimedOut(
                    f"the export job did not finish within {settings.export_timeout:.0f} s (export timeout); "
                    "it is kept: run again to resume it",
                    url=no_query(status_url),
                )
            log.info(
                "bulk export %s (HTTP %d)%s; next poll in %.1f s",
                "busy" if status in _BUSY else "in progress",
                status,
                f": {progress}" if progress else "",
                wait,
            )
            self._sleep(wait)
            stats.waited += wait
            waits += 1

    def delete(self, status_url: str) -> bool:
        """Cancel a running job, or tell the server a finished one's files may go. Never raises: a failed
        delete is logged (the server expires jobs on its own)."""
        try:
            resp = self.client.send(
                "DELETE", status_url, headers={"Accept": "application/fhir+json"}, allow=_GONE
            )
        except ServerError as exc:
            log.warning(
                "bulk export: DELETE of the job failed (HTTP %s); the server will expire it", exc.status
            )
            return False
        if resp.status_code in _GONE:
            log.info("bulk export: DELETE of the job -> %d (already gone or completed)", resp.status_code)
        return True

    def _wait(self, resp: requests.Response, waits: int) -> float:
        settings = self.settings
        asked = retry_after(resp)
        if asked is None:
            wait = settings.poll_initial_wait * 2.0 ** min(waits, 32)
        else:
            # Honour it, but neither hammer the server (a 0) nor sleep minutes on a tiny job (HAPI's 120).
            wait = max(asked, settings.poll_initial_wait)
        return min(wait, settings.poll_max_wait)


def retry_after(resp: requests.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP-date measured against the server's Date)."""
    value = (resp.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    when = http_date(value)
    if when is None:
        return None
    now = http_date(resp.headers.get("Date")) or dt.datetime.now(dt.UTC)
    return max((when - now).total_seconds(), 0.0)


def _progress(value: str | None) -> str:
    """The figure an ``X-Progress`` header gives ("50%", "3/8"), or "": the rest is server free text,
    which may name anything, a patient included, and logs carry none (docs/security.md)."""
    if not value:
        return ""
    found = _PROGRESS_FIGURE.search(value[:_PROGRESS_CHARS])
    return " ".join(found.group(0).split()) if found else ""


def _is_outcome(body: object) -> bool:
    return isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"


def instant(when: dt.datetime) -> str:
    """A FHIR instant in UTC with milliseconds (what `_since` and `--since` take)."""
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_instant(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
