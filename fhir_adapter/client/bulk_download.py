"""Download the files of a Bulk Data manifest: streamed to disk, a few at a time, resumable, counted.

Each file is streamed to ``NAME.part`` (0600) and renamed when complete, so a file under its final name
is whole; a later attempt (or run) continues a ``.part`` with ``Range: bytes=N-`` when the server answers
206, and starts the file again when it answers 200 (HAPI ignores ``Range``). Lines are counted and checked
against the manifest's ``count`` when it gives one. Nothing is held in memory beyond one chunk.

The access token (IG: ``requiresAccessToken``) goes with a file request only when the manifest asks for
it AND the URL is on the FHIR server's origin or on a storage origin the operator allowed
(``BulkSettings.storage_origins``). A file that needs the token on any other origin is not requested at
all: it becomes a failure of that file. Redirects are followed by hand (at most 5), each hop judged the
same way; a hop to another origin gets no token unless that origin is allowed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urljoin

import requests

from fhir_adapter.client.bulk import Manifest, ManifestFile, retry_after
from fhir_adapter.client.http import FhirClient
from fhir_adapter.client.retry import TRANSPORT_ERRORS, backoff, describe_transport_error
from fhir_adapter.client.transport import DeadlinePassed, Stalled, paced_chunks, watched_session
from fhir_adapter.client.urls import no_query, origin_of
from fhir_adapter.errors import ConfigError, ServerError
from fhir_adapter.output.private import open_private, private_dir
from fhir_adapter.settings import BulkSettings

log = logging.getLogger(__name__)

Kind = Literal["output", "error", "deleted"]
Origin = tuple[str, str, int]

# What a broken transfer loses at most (a partly received chunk is not handed over by urllib3).
CHUNK: Final = 64 * 1024
MAX_REDIRECTS: Final = 5
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_RETRY: Final = frozenset({429, 500, 502, 503, 504})
_SUBFOLDER: Final = {"output": "", "error": "error", "deleted": "deleted"}
# What this module names its files: Type.NNN.ndjson, with .part while incomplete.
OWN_FILE: Final = re.compile(r"[A-Z][A-Za-z]{1,63}\.\d{3,}\.ndjson(\.part)?")


@dataclass(frozen=True, slots=True)
class Planned:
    kind: Kind
    type: str
    url: str
    count: int | None
    path: Path


@dataclass(frozen=True, slots=True)
class Downloaded:
    kind: Kind
    type: str
    path: Path
    lines: int
    resumed: bool = False  # found complete from an earlier attempt or run
    # Its lines are not the manifest's count, even fetched twice: kept and read (what the server has),
    # and reported with this reason.
    miscount: str | None = None


@dataclass(frozen=True, slots=True)
class FileFailure:
    kind: Kind
    type: str
    url: str  # without its query (signed URLs carry credentials there)
    reason: str
    gone: bool = False  # 404/410: the server no longer has it (expired)


@dataclass(frozen=True, slots=True)
class Downloads:
    files: tuple[Downloaded, ...]
    failures: tuple[FileFailure, ...]

    def of(self, kind: Kind) -> tuple[Downloaded, ...]:
        return tuple(f for f in self.files if f.kind == kind)


def parse_origin(value: str) -> Origin:
    """``https://host[:port]`` as an origin; anything with a path, query or credentials is refused."""
    try:
        origin = origin_of(value)
    except ValueError:
        origin = ("", "", 0)
    rest = value.split("://", 1)[1] if "://" in value else ""
    if origin[0] not in ("http", "https") or not origin[1] or "/" in rest.rstrip("/") or "@" in rest:
        raise ConfigError(f"--bulk-storage-origin: {value!r} is not an origin (https://host[:port])")
    return origin


def plan(manifest: Manifest, dest: Path) -> list[Planned]:
    """Where each manifest file goes: ``DEST/Type.NNN.ndjson``, errors in ``error/``, deletions in
    ``deleted/``; numbered per type in manifest order, so a resumed job names its files the same."""
    out: list[Planned] = []
    groups: tuple[tuple[Kind, tuple[ManifestFile, ...]], ...] = (
        ("output", manifest.output),
        ("error", manifest.error),
        ("deleted", manifest.deleted),
    )
    for kind, files in groups:
        seen: dict[str, int] = {}
        folder = dest / _SUBFOLDER[kind] if _SUBFOLDER[kind] else dest
        for f in files:
            n = seen[f.type] = seen.get(f.type, 0) + 1
            out.append(Planned(kind, f.type, f.url, f.count, folder / f"{f.type}.{n:03d}.ndjson"))
    return out


class Downloader:
    def __init__(
        self,
        client: FhirClient,
        settings: BulkSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        # Watched (the request deadline can cut a file request off before its headers) and blind to
        # ~/.netrc (a storage host gets the credentials the settings allow it, never a file's).
        session_factory: Callable[[], requests.Session] = watched_session,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.storage: frozenset[Origin] = frozenset(parse_origin(o) for o in settings.storage_origins)
        self._sleep = sleep
        self._sessions = session_factory
        self._rng = rng or random.Random()
        self._server = origin_of(client.base_url)

    def token_origins(self) -> frozenset[Origin]:
        return self.storage | {self._server}

    def download(self, manifest: Manifest, dest: Path) -> Downloads:
        planned = plan(manifest, dest)
        for folder in {p.path.parent for p in planned} | {dest}:
            _private_dir(folder)
        workers = max(1, min(self.settings.downloads, len(planned) or 1))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bulk-download") as pool:
            results = list(pool.map(lambda p: self._one(p, manifest.requires_access_token), planned))
        files = tuple(r for r in results if isinstance(r, Downloaded))
        failures = tuple(r for r in results if isinstance(r, FileFailure))
        for failure in failures:
            log.warning(
                "bulk download of a %s %s file failed: %s", failure.type, failure.kind, failure.reason
            )
        log.info(
            "bulk download: %d file(s), %d line(s), %d failed",
            len(files),
            sum(f.lines for f in files),
            len(failures),
        )
        return Downloads(files, failures)

    def _one(self, item: Planned, requires_token: bool) -> Downloaded | FileFailure:
        if item.path.exists():
            lines = count_lines(item.path)
            if item.count is None or lines == item.count:
                return Downloaded(item.kind, item.type, item.path, lines, resumed=True)
            item.path.unlink()
        session = self._sessions()
        try:
            return self._fetch(item, requires_token, session)
        finally:
            session.close()

    def _fetch(
        self, item: Planned, requires_token: bool, session: requests.Session
    ) -> Downloaded | FileFailure:
        part = item.path.with_name(item.path.name + ".part")
        attempts = max(1, self.settings.download_attempts)
        last = "no attempt"
        count_retry_used = False
        attempt = 0
        while attempt < attempts:
            attempt += 1
            outcome = self._attempt(item, part, requires_token, session)
            if isinstance(outcome, FileFailure):
                return outcome
            if isinstance(outcome, str):  # transient: wait, then continue where the part ends
                last = outcome
                if attempt < attempts:
                    self._sleep(self._delay(attempt - 1, None))
                continue
            if isinstance(outcome, float):  # the server asked us to wait
                last = "the server asked to retry later"
                if attempt < attempts:
                    self._sleep(outcome)
                continue
            os.replace(part, item.path)
            lines = count_lines(item.path)
            if item.count is not None and lines != item.count:
                if not count_retry_used and attempt < attempts:
                    count_retry_used = True
                    log.warning(
                        "bulk download: %d line(s), the manifest says %d; fetching the file again",
                        lines,
                        item.count,
                    )
                    item.path.unlink()
                    continue
                miscount = f"{lines} line(s) downloaded, the manifest says {item.count}"
                return Downloaded(item.kind, item.type, item.path, lines, miscount=miscount)
            return Downloaded(item.kind, item.type, item.path, lines)
        return FileFailure(
            item.kind, item.type, no_query(item.url), f"gave up after {attempts} attempt(s): {last}"
        )

    def _attempt(
        self, item: Planned, part: Path, requires_token: bool, session: requests.Session
    ) -> FileFailure | str | float | None:
        """One GET (and its redirects): None when the part is complete, a str (reason) or float (wait)
        for a retry, a FileFailure when retrying cannot help."""
        url = item.url
        offset = part.stat().st_size if part.exists() else 0
        for _ in range(MAX_REDIRECTS + 1):
            origin = _origin(url)
            if origin is None:
                return FileFailure(item.kind, item.type, no_query(url), "malformed file URL")
            send_auth = requires_token and origin in self.token_origins()
            if requires_token and not send_auth and url == item.url:
                return FileFailure(
                    item.kind,
                    item.type,
                    no_query(url),
                    f"needs the access token but {origin[0]}://{origin[1]}:{origin[2]} is neither the FHIR "
                    "server's origin nor an allowed storage origin (--bulk-storage-origin): not requested",
                )
            headers = {"Accept": "application/fhir+ndjson"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            try:
                resp = self.client.open_stream(
                    url, send_auth=send_auth, allowed_origins=self.storage, headers=headers, session=session
                )
            except TRANSPORT_ERRORS as exc:
                return describe_transport_error(exc)
            except DeadlinePassed:
                return "no answer within the request deadline"
            except ServerError as exc:
                return FileFailure(item.kind, item.type, no_query(url), str(exc))
            with contextlib.closing(resp):
                status = resp.status_code
                if status in _REDIRECTS:
                    location = resp.headers.get("Location")
                    if not location:
                        return FileFailure(
                            item.kind, item.type, no_query(url), f"HTTP {status} without a Location"
                        )
                    url = urljoin(url, location)
                    continue
                if status == 206 and offset and _range_start(resp) == offset:
                    return self._write(item, resp, part, append=True)
                if status in (200, 206):
                    return self._write(
                        item, resp, part, append=False
                    )  # a 206 from elsewhere than asked: start over
                if status == 416:
                    part.unlink(missing_ok=True)
                    return "HTTP 416 (the partial file is not what the server has)"
                if status in _RETRY:
                    asked = retry_after(resp)
                    return self._delay(0, asked) if asked is not None else f"HTTP {status}"
                gone = status in (404, 410)
                reason = f"HTTP {status}" + (" (the file is gone: expired?)" if gone else "")
                return FileFailure(item.kind, item.type, no_query(item.url), reason, gone=gone)
        return FileFailure(item.kind, item.type, no_query(item.url), f"more than {MAX_REDIRECTS} redirects")

    def _write(
        self, item: Planned, resp: requests.Response, part: Path, *, append: bool
    ) -> FileFailure | str | None:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        fd = open_private(part, flags)
        stall = self.settings.stall_seconds
        ratio = self.settings.max_compression_ratio
        written = 0
        try:
            with os.fdopen(fd, "ab" if append else "wb") as fh:
                for chunk in paced_chunks(resp, stall):
                    fh.write(chunk)
                    written += len(chunk)
                    # Content-Encoding: what the wire carried, against what it became.
                    if written > _BOMB_FROM and written > ratio * max(_wire_bytes(resp), 1):
                        part.unlink(missing_ok=True)
                        return FileFailure(
                            item.kind,
                            item.type,
                            no_query(item.url),
                            f"decompresses to more than {ratio} times what was sent (max_compression_ratio): "
                            "not kept",
                        )
        except Stalled:
            # The part keeps what arrived; the next attempt resumes from there.
            return f"less than 64 KiB arrived in {stall:g} s: the download stalled"
        except requests.exceptions.RequestException as exc:
            return describe_transport_error(exc)
        return None

    def _delay(self, retries: int, asked: float | None) -> float:
        cap = self.settings.poll_max_wait
        if asked is not None:
            return min(max(asked, 0.0), cap)
        return backoff(retries, 0.5, cap, self._rng)


# A body smaller than this is never a bomb, whatever its ratio (a few highly repetitive lines).
_BOMB_FROM = 16 * 1024 * 1024


def _wire_bytes(resp: requests.Response) -> int:
    """Bytes read from the connection so far (before decoding)."""
    try:
        return int(resp.raw.tell())
    except (AttributeError, TypeError, ValueError):
        return 0


def count_lines(path: Path) -> int:
    """Non-blank lines, streamed in chunks (a line may be longer than memory should hold): what the
    manifest's ``count`` counts, one resource per line."""
    lines = 0
    content = False
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            segments = chunk.split(b"\n")
            for i, segment in enumerate(segments):
                content = content or bool(segment.strip())
                if i < len(segments) - 1:  # a newline ended this line
                    lines += content
                    content = False
    return lines + content


def clear_own_files(dest: Path) -> int:
    """Remove the files this module wrote under ``dest`` (a fresh job must not find an old job's files)."""
    removed = 0
    for folder in (dest, dest / "error", dest / "deleted"):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.is_file() and OWN_FILE.fullmatch(entry.name):
                entry.unlink()
                removed += 1
    return removed


def _origin(url: str) -> Origin | None:
    try:
        origin = origin_of(url)
    except ValueError:
        return None
    return origin if origin[0] in ("http", "https") and origin[1] else None


def _range_start(resp: requests.Response) -> int | None:
    match = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range") or "")
    return int(match.group(1)) if match else None


def _private_dir(folder: Path) -> None:
    private_dir(folder)  # 0700, missing parents too, whatever the umask
