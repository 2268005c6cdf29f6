"""One scheduled sync run: lock, find what changed, screen those patients, write back, record.

Order matters for crash safety. The work queue (``pending``) is written to the state file *before* the
watermark advances, and a patient leaves the queue only after its write-back and state row are done; so a
run killed at any point leaves a queue the next run finishes, and conditional creates make a repeated
write harmless.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from typing import TextIO

from fhir_adapter import __version__
from fhir_adapter.client.http import FhirClient
from fhir_adapter.config.loader import load_mappings
from fhir_adapter.config.types import Mappings
from fhir_adapter.errors import AdapterError, ConfigError, ExitCode, UsageError
from fhir_adapter.model import InputProblem
from fhir_adapter.output.result_file import ResultWriter
from fhir_adapter.server.screen import client_from_args
from fhir_adapter.source.candidates import find_candidates
from fhir_adapter.sync.changes import changed_patients, server_now
from fhir_adapter.sync.config import SiteConfig
from fhir_adapter.sync.lock import RunLock
from fhir_adapter.sync.manifest import Counts, render_manifest, write_manifest
from fhir_adapter.sync.state import LAST_FULL, WATERMARK, State
from fhir_adapter.sync.worker import Worker
from fhir_adapter.writeback.subjects import WriteBack, release_of

log = logging.getLogger(__name__)


def _full_due(config: SiteConfig, state: State, as_of: dt.date) -> bool:
    """``limits.full_reconciliation_days``: re-screen everyone when the last full run is that old."""
    if not config.full_every_days:
        return False
    last = state.get(LAST_FULL)
    return last is None or (as_of - dt.date.fromisoformat(last)).days >= config.full_every_days


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
            write_manifest(config.manifests, run_id, manifest)
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
    worker = Worker(client, state, mappings, as_of, counts, dry_run, out, writeback, recovered)
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


def _result_writer(
    config: SiteConfig, mappings: Mappings, as_of: dt.date, dry_run: bool
) -> ResultWriter | None:
    if config.result_path is None or dry_run:
        return None
    return ResultWriter(config.result_path, mappings.trial.study, as_of, mappings.fingerprint)
