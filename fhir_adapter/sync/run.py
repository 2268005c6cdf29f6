"""One scheduled sync run: lock, find what changed, screen those patients, write back, record.

Order matters for crash safety. The work queue (``pending``) is written to the state file *before* the
watermark advances, and a patient leaves the queue only after its write-back and state row are done; so a
run killed at any point leaves a queue the next run finishes, and conditional creates make a repeated
write harmless.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fhir_adapter import __version__, logs
from fhir_adapter.config.loader import load_mappings
from fhir_adapter.config.types import Mappings
from fhir_adapter.errors import AdapterError, AuthError, ConfigError, ExitCode, ServerError, UsageError
from fhir_adapter.model import InputProblem, SubjectResult
from fhir_adapter.output.result_file import ResultWriter
from fhir_adapter.pipeline import screen_record
from fhir_adapter.server.candidates import find_candidates
from fhir_adapter.server.fetch import Strategy, choose_strategy, fetch_record
from fhir_adapter.server.http import FhirClient
from fhir_adapter.server.screen import client_from_args
from fhir_adapter.server.writeback import Action, WriteBack, release_of, subject_reason
from fhir_adapter.sync.changes import changed_patients, server_now
from fhir_adapter.sync.config import SiteConfig
from fhir_adapter.sync.lock import RunLock
from fhir_adapter.sync.recheck import next_recheck
from fhir_adapter.sync.state import State

log = logging.getLogger(__name__)
WATERMARK = "watermark"
LAST_FULL = "last_full_reconciliation"


def _full_due(config: SiteConfig, state: State, as_of: dt.date) -> bool:
    """``limits.full_reconciliation_days``: re-screen everyone when the last full run is that old."""
    if not config.full_every_days:
        return False
    last = state.get(LAST_FULL)
    return last is None or (as_of - dt.date.fromisoformat(last)).days >= config.full_every_days


@dataclass
class Counts:
    candidates: int = 0
    queued: int = 0
    evaluated: int = 0
    unchanged: int = 0
    written: int = 0
    staff_managed: int = 0
    not_dm: int = 0
    errors: int = 0
    deleted_resources: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "queued": self.queued,
            "evaluated": self.evaluated,
            "unchanged": self.unchanged,
            "written": self.written,
            "skippedStaffManaged": self.staff_managed,
            "notDermatomyositis": self.not_dm,
            "errors": self.errors,
            "deletedResourcesSeen": self.deleted_resources,
            "queuedBecause": dict(self.reasons),
        }


def client_for(config: SiteConfig) -> FhirClient:
    auth = config.auth
    args = argparse.Namespace(
        server=config.server_url,
        auth=auth.get("type", "none"),
        token=auth.get("token", "env:FHIR_TOKEN"),
        basic_user=auth.get("username"),
        basic_password=auth.get("password", "env:FHIR_PASSWORD"),
        smart_client_id=auth.get("client_id"),
        smart_key=auth.get("private_key"),
        smart_alg=auth.get("algorithm", "RS384"),
        smart_kid=auth.get("kid"),
        smart_token_url=auth.get("token_url"),
        smart_scope=auth.get("scope"),
        ca_bundle=str(config.ca_bundle) if config.ca_bundle else None,
        timeout=config.timeout,
    )
    try:
        return client_from_args(args)
    except (ConfigError, UsageError) as exc:
        # The client speaks in command-line flags; the operator edits site.toml keys.
        message = str(exc)
        for flag, key in _FLAG_KEYS.items():
            message = message.replace(flag, f"server.auth.{key}")
        if "server.auth." not in message:
            message = f"server.auth: {message}"
        raise ConfigError(f"{config.path}: {message}") from exc


_FLAG_KEYS = {
    "--token": "token",
    "--basic-user": "username",
    "--basic-password": "password",
    "--smart-client-id": "client_id",
    "--smart-key": "private_key",
    "--smart-token-url": "token_url",
}


def result_hash(subject: SubjectResult) -> str:
    """What the write-back depends on: the status and the reason naming failing and unknown criteria."""
    body = json.dumps([subject.status.value, subject_reason(subject)], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def sync(
    config: SiteConfig,
    *,
    dry_run: bool = False,
    full: bool = False,
    as_of: dt.date | None = None,
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout  # stderr carries only log lines (JSON when not on a terminal)
    mappings = load_mappings(overlays=config.overlays)
    day = as_of or config.as_of or dt.date.today()
    with RunLock(config.lock_path):
        state = State(config.state_path)
        try:
            return _run(config, state, mappings, day, dry_run=dry_run, full=full, out=out)
        finally:
            state.close()


def _run(
    config: SiteConfig,
    state: State,
    mappings: Mappings,
    as_of: dt.date,
    *,
    dry_run: bool,
    full: bool,
    out: TextIO,
) -> int:
    started = dt.datetime.now(dt.UTC)
    run_id = 0 if dry_run else state.start_run()
    counts = Counts()
    problems: list[InputProblem] = []
    before = state.get(WATERMARK)
    after = before
    outcome = "fatal"
    try:
        with client_for(config) as client:
            now = server_now(client)
            queue: dict[str, str] = dict(state.pending())
            recovered = set(queue)  # left by a run that did not finish
            full = full or _full_due(config, state, as_of)
            if before is None or full:
                found = find_candidates(client, mappings)
                counts.candidates = len(found.patient_ids)
                for pid in found.patient_ids:
                    queue.setdefault(pid, "full" if before is not None else "first run")
                for pid in state.known_patients():
                    queue.setdefault(pid, "full")
            else:
                changes = changed_patients(client, dt.datetime.fromisoformat(before))
                counts.deleted_resources = changes.deleted
                for pid in sorted(changes.patients):
                    queue.setdefault(pid, "changed")
            for pid in state.due_for_recheck(as_of):
                queue.setdefault(pid, "window")
            counts.queued = len(queue)
            counts.reasons.update(queue.values())
            if not dry_run and (before is None or full):
                state.put(LAST_FULL, as_of.isoformat())
            if not dry_run:
                # Persist the work, then advance the watermark: a crash from here on loses nothing.
                state.enqueue(list(queue), "queued")
                after = now.isoformat()
                state.put(WATERMARK, after)
            problems = _process(
                client, config, state, mappings, as_of, queue, counts, dry_run, out, recovered
            )
        outcome = "partial" if counts.errors else "ok"
    except AdapterError as exc:
        problems.append(InputProblem(config.server_url, str(exc)))
        raise
    finally:
        manifest = {
            "run": run_id,
            "started": started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "outcome": outcome if not dry_run else f"dry-run ({outcome})",
            "asOf": as_of.isoformat(),
            "watermarkBefore": before,
            "watermarkAfter": after,
            "counts": counts.to_json(),
            "rulesVersion": mappings.fingerprint,
            "adapterVersion": __version__,
            "server": config.server_url,
            "errors": [p.to_json() for p in problems[:50]],
        }
        if not dry_run:
            state.finish_run(run_id, outcome, manifest)
            _write_manifest(config.manifests, run_id, manifest)
        print(render_manifest(manifest), file=out)
    return ExitCode.PARTIAL if counts.errors else ExitCode.OK


def _process(
    client: FhirClient,
    config: SiteConfig,
    state: State,
    mappings: Mappings,
    as_of: dt.date,
    queue: dict[str, str],
    counts: Counts,
    dry_run: bool,
    out: TextIO,
    recovered: set[str],
) -> list[InputProblem]:
    writeback = None
    if config.write_back:
        release = release_of(client.fhir_version())
        writeback = WriteBack(client, mappings.trial, mappings.fingerprint, release, dry_run=dry_run)
        writeback.prepare()
    worker = _Worker(client, state, mappings, as_of, counts, dry_run, out, writeback, recovered)
    worker.writer = _result_writer(config, mappings, as_of, dry_run)
    try:
        limit = config.max_patients or len(queue)
        for n, pid in enumerate(sorted(queue)):
            if n >= limit:
                log.info("limit of %d patients reached; %d stay queued", limit, len(queue) - n)
                break
            worker.guarded(pid)
    except BaseException:
        if worker.writer is not None:
            worker.writer.abort()  # a fatal error: never leave half a result where the report reads it
        raise
    if worker.writer is not None:
        worker.writer.close(worker.problems)
    return worker.problems


@dataclass
class _Worker:
    """Screens and writes back one queued patient at a time; a patient leaves the queue only when done."""

    client: FhirClient
    state: State
    mappings: Mappings
    as_of: dt.date
    counts: Counts
    dry_run: bool
    out: TextIO
    writeback: WriteBack | None
    recovered: set[str]
    writer: ResultWriter | None = None
    problems: list[InputProblem] = field(default_factory=list)
    strategy: Strategy | None = None

    def guarded(self, pid: str) -> None:
        try:
            self.patient(pid)
        except AuthError:
            raise  # every later patient would fail the same way
        except ServerError as exc:
            if exc.status is None:
                raise  # the server is unreachable after retries: stop, the queue keeps the rest
            self.failed(pid, str(exc))
        except Exception as exc:  # one failing patient never stops the run; it stays queued
            log.debug("patient %s failed: %s", pid, logs.where(exc))
            self.failed(
                pid, str(exc) if isinstance(exc, AdapterError) else f"internal error ({type(exc).__name__})"
            )

    def patient(self, pid: str) -> None:
        if self.strategy is None:
            self.strategy = choose_strategy(self.client.capabilities())
        fetched = fetch_record(self.client, pid, self.strategy)
        if fetched is None:
            self.done(pid)  # gone from the server: nothing to screen, nothing to write
            return
        known = self.state.patient(pid)
        subject = screen_record(fetched.record, self.mappings, self.as_of)
        if len(subject.criteria) == 1 and known is None:
            self.counts.not_dm += 1  # never a candidate: no ResearchSubject, nothing to remember
            self.done(pid)
            return
        self.counts.evaluated += 1
        if self.writer is not None:
            self.writer.subject(subject)
        digest = result_hash(subject)
        if self.writeback is not None:
            result = self.writeback.write(subject, fetched.versions)
            if self.dry_run:
                print(result.describe(), file=self.out)
            if result.action is Action.FAILED:
                self.failed(pid, result.detail)
                return  # stays queued: the next run tries the write again
            if result.action is Action.STAFF:
                self.counts.staff_managed += 1
            elif result.action is Action.UNCHANGED:
                self.counts.unchanged += 1
                if pid in self.recovered and self.writeback.ensure_provenance(subject, fetched.versions):
                    log.info("patient %s: wrote the Provenance an interrupted run left out", pid)
            else:
                self.counts.written += 1
        elif known is not None and known.result_hash == digest:
            self.counts.unchanged += 1
        if not self.dry_run:
            recheck = next_recheck(fetched.record, self.mappings, self.as_of)
            self.state.record_result(pid, digest, subject.status.value, recheck)
        self.done(pid)

    def done(self, pid: str) -> None:
        if not self.dry_run:
            self.state.done(pid)

    def failed(self, pid: str, detail: str) -> None:
        self.counts.errors += 1
        self.problems.append(InputProblem(f"Patient/{pid}", detail))
        if not self.dry_run:
            self.state.record_error(pid, detail)
        log.warning("patient %s: %s", pid, detail)


def _result_writer(
    config: SiteConfig, mappings: Mappings, as_of: dt.date, dry_run: bool
) -> ResultWriter | None:
    if config.result_path is None or dry_run:
        return None
    return ResultWriter(config.result_path, mappings.trial.study, as_of, mappings.fingerprint)


def _write_manifest(folder: Path, run_id: int, manifest: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = folder / f"run-{stamp}-{run_id:06d}.json"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".manifest.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2)
    os.replace(tmp, target)


def render_manifest(manifest: dict[str, Any]) -> str:
    c = manifest["counts"]
    return (
        f"sync run {manifest['run']} {manifest['outcome']}: as of {manifest['asOf']}; "
        f"queued {c['queued']} ({', '.join(f'{k}: {v}' for k, v in c['queuedBecause'].items()) or 'nothing changed'}), "
        f"evaluated {c['evaluated']}, written {c['written']}, unchanged {c['unchanged']}, "
        f"staff-managed {c['skippedStaffManaged']}, errors {c['errors']}; "
        f"watermark {manifest['watermarkBefore']} -> {manifest['watermarkAfter']}"
    )


def status(config: SiteConfig, limit: int = 10) -> str:
    if not config.state_path.exists():
        return f"no runs yet ({config.state_path} does not exist)"
    state = State(config.state_path)
    try:
        runs = state.runs(limit)
        pending = len(state.pending())
        watermark = state.get(WATERMARK)
    finally:
        state.close()
    lines = [f"watermark: {watermark}; queued patients: {pending}"]
    for run in runs:
        m = run["manifest"]
        if m:
            lines.append(
                f"  #{run['id']} {run['started']} -> {run['finished']} {run['outcome']}: "
                + render_manifest(m)
            )
        else:
            lines.append(
                f"  #{run['id']} {run['started']} {run['outcome']} (no manifest: the run did not finish)"
            )
    return "\n".join(lines)
