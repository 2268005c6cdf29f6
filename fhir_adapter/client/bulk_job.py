"""One export from kick-off to files on disk, surviving a crash: the job's status URL is persisted.

A kicked-off job is written to ``STATE_DIR/bulk-job-<key>.json`` (0600) before the first poll, where
``key`` identifies the server and every kick-off parameter. A later run with the same request finds
the file and polls the same job instead of starting a second export (servers such as Oracle Health run
one export per client at a time, and a second kick-off would wait behind the first or be refused).
A 404/410 on the status URL means the job is gone (cancelled, expired): the run logs it and starts over,
once. The file is removed when the files are downloaded and the job deleted, or when the server says the
job failed; it stays when the run is killed, times out, or some files could not be fetched (the next run
resumes the job and downloads only what is missing).

:func:`run_export` is the one entry point: ``export``, ``screen --bulk`` and the sync call it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from fhir_adapter.client.bulk import BulkClient, ExportFailed, ExportRequest, JobGone, Manifest, PollStats
from fhir_adapter.client.bulk_download import Downloaded, Downloader, Downloads, FileFailure, clear_own_files
from fhir_adapter.client.bulk_files import deleted_refs, error_problems
from fhir_adapter.client.urls import no_query
from fhir_adapter.model import InputProblem
from fhir_adapter.output.private import atomic_writer, private_dir

log = logging.getLogger(__name__)

JOB_PREFIX: Final = "bulk-job-"
FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class JobState:
    base_url: str
    key: str
    status_url: str
    kicked_off: str  # ISO instant, our clock (for the operator; the server's clock is transactionTime)
    request: dict[str, object]

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "baseUrl": self.base_url,
            "key": self.key,
            "statusUrl": self.status_url,
            "kickedOff": self.kicked_off,
            "request": self.request,
        }


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What one export produced. ``problems``: the error files' entries and the files that failed."""

    request: ExportRequest
    manifest: Manifest
    downloads: Downloads
    problems: tuple[InputProblem, ...]
    deleted: tuple[str, ...]  # "Type/id" the server reports deleted since ``_since``
    resumed: bool  # polled a job an earlier run had kicked off
    kick_offs: int
    polls: int
    progress: tuple[str, ...] = field(default=())

    @property
    def transaction_time(self) -> dt.datetime:
        """The server's clock when the export ran: the next ``_since``."""
        return self.manifest.transaction_time

    @property
    def complete(self) -> bool:
        return not self.downloads.failures

    def output_paths(self) -> list[Path]:
        return [f.path for f in self.downloads.of("output")]


def job_path(state_dir: Path, request: ExportRequest, base_url: str) -> Path:
    return state_dir / f"{JOB_PREFIX}{request.key(base_url)[:24]}.json"


def load_job(path: Path) -> JobState | None:
    """The persisted job, or None when there is none or it cannot be read (logged; a new job starts)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning(
            "bulk export: cannot read the job file %s (%s); starting a new job", path.name, type(exc).__name__
        )
        return None
    try:
        body = json.loads(raw)
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ValueError("format")
        request = body["request"]
        if not isinstance(request, dict):
            raise ValueError("request")
        return JobState(
            base_url=str(body["baseUrl"]),
            key=str(body["key"]),
            status_url=str(body["statusUrl"]),
            kicked_off=str(body["kickedOff"]),
            request=request,
        )
    except (ValueError, KeyError, TypeError):
        log.warning("bulk export: the job file %s is not readable; starting a new job", path.name)
        return None


def save_job(path: Path, state: JobState) -> None:
    """Atomically, 0600 (the status URL is a capability to the export's files on some servers)."""
    _private_dir(path.parent)
    with atomic_writer(path) as fh:
        json.dump(state.to_json(), fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())  # on disk before the rename: a crash right after must still find the job


def clear_job(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def stale_jobs(state_dir: Path, keep: set[Path]) -> list[Path]:
    """Job files in ``state_dir`` other than ``keep`` (an earlier run's job for other parameters)."""
    if not state_dir.is_dir():
        return []
    return sorted(p for p in state_dir.glob(f"{JOB_PREFIX}*.json") if p not in keep)


def cancel_stale_jobs(bulk: BulkClient, state_dir: Path, keep: set[Path]) -> int:
    """DELETE the jobs of other job files on this server and drop the files: a server that runs one
    export at a time would otherwise refuse ours while an abandoned one runs."""
    cancelled = 0
    for path in stale_jobs(state_dir, keep):
        state = load_job(path)
        if state is not None and state.base_url == bulk.client.base_url:
            log.info("bulk export: cancelling the job of an earlier run for other parameters (%s)", path.name)
            bulk.delete(state.status_url)
            cancelled += 1
        clear_job(path)
    return cancelled


def run_export(
    bulk: BulkClient,
    request: ExportRequest,
    dest: Path,
    state_dir: Path,
    *,
    downloader: Downloader | None = None,
    label: str = "bulk export",
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> ExportResult:
    """Kick off (or resume) ``request``, poll it, download its files to ``dest``, delete the job.

    Raises ``ExportFailed`` (the server says the job failed), ``ExportTimedOut`` (kept for the next run),
    ``ServerError``/``AuthError`` from the client. File failures do not raise: they are ``problems``,
    and the job is kept so the next run fetches what is missing.
    """
    client = bulk.client
    downloader = downloader or Downloader(client, bulk.settings)
    path = job_path(state_dir, request, client.base_url)
    key = request.key(client.base_url)
    kick_offs_before = bulk.kick_offs
    stats = PollStats()
    restarted = False
    state = load_job(path)
    resumed = state is not None and state.key == key and state.base_url == client.base_url
    while True:
        if state is not None and state.key == key and state.base_url == client.base_url:
            log.info(
                "bulk export: resuming the job kicked off at %s (%s)", state.kicked_off, request.describe()
            )
        else:
            removed = clear_own_files(dest)
            if removed:
                log.info("bulk export: removed %d file(s) of an earlier job from the output folder", removed)
            status_url = bulk.kick_off(request)
            state = JobState(
                client.base_url, key, status_url, now().isoformat(timespec="seconds"), request.to_json()
            )
            save_job(path, state)
        try:
            manifest = bulk.poll(state.status_url, stats=stats)
        except JobGone:
            clear_job(path)
            if restarted:
                raise
            log.warning("bulk export: the job is gone from the server (HTTP 404/410); starting a new one")
            state, restarted = None, True
            continue
        except ExportFailed:
            # A failed job does not come back, nor does an unusable manifest change: the next run starts
            # a new job (and the server may hold only one per client: this one is cancelled).
            bulk.delete(state.status_url)
            clear_job(path)
            raise
        downloads = downloader.download(manifest, dest)
        if any(f.gone for f in downloads.failures) and not restarted:
            # A job resumed long after it finished: its files expired. One new job, not a loop.
            log.warning("bulk export: files of the job are gone from the server; starting a new job")
            bulk.delete(state.status_url)
            clear_job(path)
            state, restarted = None, True
            continue
        break
    problems = [
        *_failure_problems(downloads.failures, label),
        *_miscount_problems(downloads.files, label),
        *error_problems(downloads.of("error"), label),
    ]
    deleted = deleted_refs(downloads.of("deleted"))
    if not downloads.failures:
        bulk.delete(state.status_url)
        clear_job(path)
    else:
        log.warning(
            "bulk export: %d file(s) missing; the job is kept for the next run", len(downloads.failures)
        )
    if manifest.has_message:
        log.info("bulk export: the manifest carries a message (see the server)")
    return ExportResult(
        request=request,
        manifest=manifest,
        downloads=downloads,
        problems=tuple(problems),
        deleted=tuple(deleted),
        resumed=resumed and not restarted,
        kick_offs=bulk.kick_offs - kick_offs_before,
        polls=stats.polls,
        progress=tuple(stats.progress),
    )


def _failure_problems(failures: tuple[FileFailure, ...], label: str) -> list[InputProblem]:
    return [
        InputProblem(f"{label} {f.kind} file ({f.type}) {no_query(f.url)}", f"download failed: {f.reason}")
        for f in failures
    ]


def _miscount_problems(files: tuple[Downloaded, ...], label: str) -> list[InputProblem]:
    return [
        InputProblem(f"{label} {f.kind} file ({f.type})", f"{f.miscount}: its lines are read as they are")
        for f in files
        if f.miscount
    ]


def _private_dir(folder: Path) -> None:
    private_dir(folder)  # 0700, missing parents too, whatever the umask
