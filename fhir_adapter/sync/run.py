"""One scheduled sync run: lock, find what changed, screen those patients, write back, record.

Order matters for crash safety. The work queue (``pending``) is written to the state file *before* the
watermark advances, and a patient leaves the queue only after its write-back and state row are done; so a
run killed at any point leaves a queue the next run finishes, and conditional creates make a repeated
write harmless.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sqlite3
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TextIO

from fhir_adapter import __version__
from fhir_adapter.client.factory import open_client
from fhir_adapter.client.http import FhirClient
from fhir_adapter.client.urls import is_valid_id
from fhir_adapter.config.loader import load_trials
from fhir_adapter.config.types import Mappings
from fhir_adapter.errors import AdapterError, ConfigError, ExitCode, UsageError
from fhir_adapter.model import InputProblem
from fhir_adapter.output.result_file import ResultWriter
from fhir_adapter.pipeline import run as run_pipeline
from fhir_adapter.screen import render_report
from fhir_adapter.screening import Screener
from fhir_adapter.source.candidates import Candidates, find_candidates, group_members
from fhir_adapter.source.strategies import Capabilities, Strategies, choose_sync, read_capabilities
from fhir_adapter.sync.bulk_changes import BulkSync, bulk_folder, records_source
from fhir_adapter.sync.changes import Changes, changed_by_last_updated, changed_patients, server_now
from fhir_adapter.sync.config import SiteConfig
from fhir_adapter.sync.lock import RunLock
from fhir_adapter.sync.manifest import Counts, render_manifest, write_manifest
from fhir_adapter.sync.state import LAST_FULL, WATERMARK, State, unusable
from fhir_adapter.sync.worker import SyncSink
from fhir_adapter.writeback.references import referencing
from fhir_adapter.writeback.resources import release_of
from fhir_adapter.writeback.sink import WriteBackSink
from fhir_adapter.writeback.subjects import WriteBack

log = logging.getLogger(__name__)


def _full_due(config: SiteConfig, state: State, as_of: dt.date) -> bool:
    """``limits.full_reconciliation_days``: re-screen everyone when the last full run is that old."""
    if not config.full_every_days:
        return False
    last = state.get(LAST_FULL)
    try:
        return last is None or (as_of - dt.date.fromisoformat(last)).days >= config.full_every_days
    except ValueError:  # a damaged date: the full run it stood for is due, and rewrites it
        log.warning("%s: the last full reconciliation's date is damaged: one is due", config.state_path)
        return True


def _watermark(before: str | None, now: dt.datetime) -> tuple[dt.datetime | None, str | None]:
    """The stored watermark, or why it cannot be used: then the run re-screens everyone."""
    if before is None:
        return None, None
    try:
        mark = dt.datetime.fromisoformat(before)
    except ValueError:
        return None, f"the stored watermark {before[:40]!r} is not a time: this run re-screens everyone"
    if mark.tzinfo is None:
        mark = mark.replace(tzinfo=dt.UTC)  # written by an older release without its offset
    if mark > now:
        # A feed read since a moment that has not come yet would miss what changes until then.
        return None, (
            f"the stored watermark {mark.isoformat()} is later than the server's time now "
            f"({now.isoformat()}): the server's clock went back, and what changed since may be missing "
            "from the change feed: this run re-screens everyone"
        )
    return mark, None


def client_for(config: SiteConfig, table: str = "server") -> FhirClient:
    """The client of ``[server]``, or of ``[writeback]`` (``table="writeback"``)."""
    settings = config.server
    if table == "writeback":
        assert config.write_target is not None
        settings = config.write_target.server
    try:
        return open_client(settings)
    except ConfigError as exc:
        # The settings speak in site.toml keys; the operator also needs the file.
        message = str(exc)
        if f"{table}." not in message:
            message = f"{table}.auth: {message}"
        raise ConfigError(f"{config.path}: {message}") from exc


def write_client_for(config: SiteConfig, client: FhirClient) -> AbstractContextManager[FhirClient]:
    """Where write-back goes: ``[writeback]``'s own client (own session, auth and token), else ``client``."""
    if config.write_target is None or not config.write_back:
        return contextlib.nullcontext(client)
    return client_for(config, "writeback")


def sync(
    config: SiteConfig,
    *,
    dry_run: bool = False,
    full: bool = False,
    as_of: dt.date | None = None,
    out: TextIO | None = None,
    report: Path | None = None,
) -> int:
    """One run; ``report`` overrides report.html (one study only)."""
    out = out or sys.stdout  # stderr carries only log lines (JSON when not on a terminal)
    day = as_of or config.as_of or dt.date.today()
    rules = config.rules
    screener = Screener(load_trials(rules.trials, rules.overlays, rules.mappings_dir), day)
    if report is not None and len(screener.trials) > 1:
        raise UsageError("--report names one page; with several studies, set report.dir in site.toml")
    if report is not None and config.result_path is None and config.report_dir is None:
        raise UsageError(f"{config.path}: report.result: a report needs the run's result file")
    with RunLock(config.lock_path):
        state = State(config.state_path)
        try:
            return _run(config, state, screener, dry_run=dry_run, full=full, out=out, report=report)
        except sqlite3.DatabaseError as exc:  # damaged, or its disk full, in the middle of the run
            raise unusable(config.state_path, exc) from None
        finally:
            state.close()


def _run(
    config: SiteConfig,
    state: State,
    screener: Screener,
    *,
    dry_run: bool,
    full: bool,
    out: TextIO,
    report: Path | None = None,
) -> int:
    as_of = screener.as_of
    started = dt.datetime.now(dt.UTC)
    run_id = 0 if dry_run else state.start_run()
    counts = Counts()
    problems: list[InputProblem] = []
    before = state.get(WATERMARK)
    after = before
    outcome = "fatal"
    strategies: Strategies | None = None
    bulk: BulkSync | None = None
    try:
        with client_for(config) as client, write_client_for(config, client) as writer:
            now = server_now(client)
            mark, unusable_mark = _watermark(before, now)
            if unusable_mark is not None:
                problems.append(InputProblem(str(config.state_path), unusable_mark))
                counts.errors += 1
                full = True
            queue: dict[str, str] = dict(state.pending())
            caps = read_capabilities(client.capabilities())
            strategies = _strategies(config, caps, screener)
            log.info("strategies: %s", strategies.describe())
            if strategies.uses_bulk:
                bulk = BulkSync(
                    client, caps, screener, config.bulk, bulk_folder(config.state_path), config.group
                )
            full = full or _full_due(config, state, as_of) or strategies.changes == "full-only"
            next_mark: dt.datetime | None = now  # None: the feed is incomplete, the watermark stays
            if before is None or full:
                if bulk is not None and strategies.records == "bulk":
                    # One export of everything: every record, maybe the candidates, and the watermark.
                    next_mark = bulk.full_export()
                found = _candidates(client, config, screener, strategies, bulk)
                counts.candidates = len(found.patient_ids)
                for pid in found.patient_ids:
                    queue.setdefault(pid, "full" if before is not None else "first run")
                for pid in state.known_patients():
                    queue.setdefault(pid, "full")
            else:
                assert mark is not None
                changes = _changes(client, strategies, mark, screener, bulk)
                counts.deleted_resources = changes.deleted
                counts.deletions_not_traced = changes.untraced
                for pid in sorted(changes.patients):
                    queue.setdefault(pid, "changed")
                next_mark = None if changes.hold_watermark else (changes.next_watermark or now)
            for pid in state.due_for_recheck(as_of):
                queue.setdefault(pid, "window")
            # An id no server read can take (a malformed reference, a damaged queue row) would refuse
            # the whole batch: it leaves the queue, counted, and everyone else is screened.
            invalid = sorted(pid for pid in queue if not is_valid_id(pid))
            for pid in invalid:
                del queue[pid]
                if not dry_run:
                    state.done(pid)
            if invalid:
                problems.append(
                    InputProblem(
                        config.server_url,
                        f"{len(invalid)} patient reference(s) from the server or the queue are not valid "
                        "FHIR ids (not shown): not screened",
                    )
                )
                counts.errors += 1
            counts.queued = len(queue)
            counts.reasons.update(queue.values())
            if not dry_run:
                # Persist the work, then mark the full run done and advance the watermark: a crash from
                # here on loses nothing (before the queue is stored, the next run does it all again).
                state.enqueue(list(queue), "queued")
                if before is None or full:
                    state.put(LAST_FULL, as_of.isoformat())
                if next_mark is not None:
                    after = next_mark.isoformat()
                    state.put(WATERMARK, after)
            try:
                problems += _process(
                    client, writer, config, state, screener, strategies, queue, counts, dry_run, out, bulk
                )
            finally:
                counts.requests = client.request_count + (writer.request_count if writer is not client else 0)
            if bulk is not None:
                problems.extend(bulk.problems)  # the server's export errors, files it could not serve
                counts.errors += len(bulk.problems)
                bulk.finish(ok=True)
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
            "studies": list(screener.studies),
            "strategies": strategies.to_json() if strategies else None,
            **({"bulk": bulk.to_json()} if bulk is not None else {}),
            "watermarkBefore": before,
            "watermarkAfter": after,
            "counts": counts.to_json(),
            "rulesVersion": {m.trial.study: m.fingerprint for m in screener.trials},
            "adapterVersion": __version__,
            "server": config.server_url,
            "writeServer": config.write_target.server.url if config.write_target else None,
            "errors": [p.to_json() for p in problems[:50]],
        }
        if not dry_run:
            state.finish_run(run_id, outcome, manifest)
            write_manifest(config.manifests, run_id, manifest)
            _write_latest(config, state, screener, report)
        print(render_manifest(manifest), file=out)
    return ExitCode.PARTIAL if counts.errors else ExitCode.OK


def _process(
    client: FhirClient,
    writer: FhirClient,
    config: SiteConfig,
    state: State,
    screener: Screener,
    strategies: Strategies,
    queue: dict[str, str],
    counts: Counts,
    dry_run: bool,
    out: TextIO,
    bulk: BulkSync | None = None,
) -> list[InputProblem]:
    writeback = None
    if config.write_back:
        release = release_of(writer.fhir_version())
        refs = referencing(client.base_url, writer.base_url, config.write_target)
        writeback = WriteBackSink(
            [
                WriteBack(writer, m.trial, m.fingerprint, release, dry_run=dry_run, refs=refs)
                for m in screener.trials
            ],
            out,
        )
        writeback.prepare()
    chosen = sorted(queue)
    limit = config.max_patients or len(chosen)
    if len(chosen) > limit:
        log.info("limit of %d patients reached; %d stay queued", limit, len(chosen) - limit)
    sink = SyncSink(state, screener.trials, screener.as_of, counts, dry_run, writeback)
    with records_source(
        client, screener, strategies.records, chosen[:limit], bulk, config.server.concurrency
    ) as source:
        found = run_pipeline(
            source, screener, [sink], max_consecutive_failures=config.max_consecutive_failures
        )
    # The sink counted what it saw fail; a record's own problems (an unusable resource) and an exception
    # the sink raised (a state row it could not write: the patient stays queued) reach only the
    # pipeline's list, and would otherwise leave a run that failed someone reading "ok, errors 0".
    seen = {id(p) for p in sink.problems}
    counts.errors += sum(1 for p in found if id(p) not in seen)
    return found


def _strategies(config: SiteConfig, caps: Capabilities, screener: Screener) -> Strategies:
    try:
        return choose_sync(
            caps,
            screener.needed_types,
            gate_types=screener.gate.types or ("Condition",),
            group=config.group is not None,
            overrides=config.strategies,
        )
    except UsageError as exc:
        raise ConfigError(f"{config.path}: {exc}") from exc


def _candidates(
    client: FhirClient,
    config: SiteConfig,
    screener: Screener,
    strategies: Strategies,
    bulk: BulkSync | None = None,
) -> Candidates:
    if strategies.candidates == "bulk" and bulk is not None:
        return bulk.candidates()
    if strategies.candidates == "group":
        if config.group is None:
            raise ConfigError(f"{config.path}: server.group: the group strategy needs a Group id")
        return group_members(client, config.group)
    if strategies.candidates == "search":
        return find_candidates(client, screener.gate, config.server.concurrency)
    raise ConfigError(
        f"{config.path}: strategies.candidates: {strategies.candidates} is not available to sync"
    )


def _changes(
    client: FhirClient,
    strategies: Strategies,
    since: dt.datetime,
    screener: Screener,
    bulk: BulkSync | None = None,
) -> Changes:
    if strategies.changes == "bulk" and bulk is not None:
        return bulk.changes(since)
    if strategies.changes == "history":
        return changed_patients(client, since, screener.needed_types)
    if strategies.changes == "last-updated":
        return changed_by_last_updated(client, since, screener.needed_types)
    raise ConfigError(f"strategies.changes: {strategies.changes} is not available yet")


def latest_paths(config: SiteConfig, study: str, several: bool) -> tuple[Path | None, Path | None]:
    """Where the current state of a study's candidates is written: (result JSON, report HTML)."""
    if config.report_dir is not None:
        return config.report_dir / f"{study}.json", config.report_dir / f"{study}.html"
    if several:
        return None, None
    return config.result_path, config.report_html


def _write_latest(config: SiteConfig, state: State, screener: Screener, report: Path | None) -> None:
    """Every candidate's current result from the state file, not only this run's patients: a night with
    no changes still leaves a complete worklist. Then its report page, where one is configured."""
    several = len(screener.trials) > 1
    for m in screener.trials:
        path, html = latest_paths(config, m.trial.study, several)
        html = report or html
        if path is None:
            continue
        try:
            _write_study(config, state, screener, m, path, html)
        except OSError as exc:  # a folder where the file goes, a full disk: the operator's to mend
            raise ConfigError(f"{config.path}: report: cannot write {path} ({exc.strerror or exc})") from None


def _write_study(
    config: SiteConfig, state: State, screener: Screener, m: Mappings, path: Path, html: Path | None
) -> None:
    writer = ResultWriter(
        path,
        m.trial.study,
        screener.as_of,
        m.fingerprint,
        source=f"sync: {config.server_url} (current state of every candidate)",
        title=m.trial.title,
    )
    try:
        for stored in state.results(m.trial.study):
            writer.subject_json(stored.body)
        writer.close([])
    except BaseException:
        writer.abort()
        raise
    if html is not None:
        render_report(path, html, None)
