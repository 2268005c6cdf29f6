"""A Bulk Data export as a source: export into a private folder, then screen the files exactly as
``screen DIR`` does (:class:`FileSource`, the same two streaming passes), so the verdicts are those of
screening the same data as files.

The plan (``BulkSettings.two_pass``, on by default):

1. **Gate first**: export only the resources a trial's gate can admit (``_type=Condition`` with the
   gate's ``_typeFilter``); their patients are the candidates.
2. **Candidates' data**: export the types the criteria read for those patients only: ``Patient/$export``
   with ``patient=`` in a POSTed kick-off, ``BulkSettings.patients_per_job`` per job (Patient level for a
   Group plan too: HAPI 8.8 ignores ``patient`` at Group level and exports the whole Group).

A server that refuses ``_typeFilter`` (or ``patient``, or has no ``Patient/$export``) gets the fallback, one export of every
type the criteria read (the bulk-only profile; most production servers today). A gate every patient can
pass, or ``_since``, also uses the single export. The two-pass plan lists the candidates only (like the
server search); the single export lists every patient of the export (like files).

Everything lands in ``work_dir`` (0700): the job files (a killed run resumes the same jobs), after the
first pass a plan file with its candidates, the downloads. After a complete run the downloads and the
plan are removed (``keep_files`` keeps them); after a partial one they stay for the next run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from fhir_adapter.client.bulk import BulkClient, ExportRequest, Level, instant
from fhir_adapter.client.bulk_download import Downloader
from fhir_adapter.client.bulk_files import ndjson_lines
from fhir_adapter.client.bulk_job import ExportResult, cancel_stale_jobs, job_path, run_export
from fhir_adapter.client.http import FhirClient
from fhir_adapter.errors import AuthError, ServerError
from fhir_adapter.facts.fhirjson import patient_of
from fhir_adapter.model import InputProblem
from fhir_adapter.output.private import atomic_writer, private_dir
from fhir_adapter.screening import Screener
from fhir_adapter.settings import BulkSettings
from fhir_adapter.source.base import SourceItem
from fhir_adapter.source.bulk_plan import (
    MEDICATION_FILE,
    admitted_patients,
    export_types,
    fetch_medications,
    gate_filters,
)
from fhir_adapter.source.files import FileSource

log = logging.getLogger(__name__)

# How a server says it does not support a kick-off parameter (IG: an error, unless handling=lenient)
# or an export level (404/405: no Patient/$export on a Group-only server).
REFUSED: Final = frozenset({400, 404, 405, 422, 501})
PLAN_MAX_AGE: Final = dt.timedelta(hours=24)
PLAN_PREFIX: Final = "bulk-plan-"


def level_of(settings: BulkSettings) -> Level:
    return "group" if settings.group else settings.level


def refused(exc: ServerError) -> bool:
    return not isinstance(exc, AuthError) and exc.status in REFUSED


@dataclass(frozen=True, slots=True)
class BulkChanges:
    """What an incremental export gives the sync: the files, who was deleted, and the next ``_since``."""

    folder: Path
    files: tuple[Path, ...]
    deleted: tuple[str, ...]  # "Type/id"
    transaction_time: dt.datetime
    problems: tuple[InputProblem, ...]
    complete: bool  # every file downloaded (else the job is kept for the next run)

    def patients(self) -> set[str]:
        """Ids of the patients the changed resources are about (streamed over the files). A deleted
        resource names no patient: the caller finds it (a vread of the version before) or re-screens."""
        found: set[str] = set()
        for path in self.files:
            for _, resource in ndjson_lines(path):
                pid = patient_of(resource) if isinstance(resource, dict) else None
                if pid:
                    found.add(pid)
        return found


def export_changes(
    client: FhirClient,
    since: dt.datetime | None,
    group: str | None,
    types: frozenset[str],
    state_dir: Path,
    *,
    settings: BulkSettings | None = None,
    dest: Path | None = None,
) -> BulkChanges:
    """One export of ``types`` changed since ``since`` (all with None), system level or ``Group/group``,
    into ``dest`` (default ``state_dir/changes``); the job resumes from ``state_dir`` after a crash.
    The caller applies ``deleted`` and stores ``transaction_time`` as its next ``since`` once it has
    used the files (and removes them)."""
    base = settings or BulkSettings()
    level: Level = "group" if group else ("system" if base.level == "group" else base.level)
    request = ExportRequest(level=level, group=group, types=export_types(types, level), since=since)
    bulk = BulkClient(client, base)
    folder = dest or state_dir / "changes"
    cancel_stale_jobs(bulk, state_dir, {job_path(state_dir, request, client.base_url)})
    result = run_export(bulk, request, folder, state_dir, label="bulk export")
    return BulkChanges(
        folder=folder,
        files=tuple(result.output_paths()),
        deleted=result.deleted,
        transaction_time=result.transaction_time,
        problems=result.problems,
        complete=result.complete,
    )


class BulkSource:
    """Use as a context manager; ``prepare()`` runs the export (once), ``records()`` screens the files."""

    def __init__(
        self,
        client: FhirClient,
        screener: Screener,
        settings: BulkSettings,
        work_dir: Path,
        *,
        keep_files: bool = False,
        bulk: BulkClient | None = None,
        readers: int | None = 1,
    ) -> None:
        """``readers``: processes reading the downloaded files (as ``FileSource``'s)."""
        self.client = client
        self.screener = screener
        self.settings = settings
        self.work_dir = work_dir
        self.keep_files = keep_files
        self.bulk = bulk or BulkClient(client, settings)
        self.level = level_of(settings)
        self.results: list[ExportResult] = []
        self.problems: list[InputProblem] = []
        self.notes: list[str] = []
        self.plan_used = ""
        self.candidates: int | None = None
        self.medication_requests = 0
        self._files: FileSource | None = None
        self._plan_file: Path | None = None
        self._readers = readers

    # -- Source ----------------------------------------------------------------------------

    @property
    def description(self) -> str:
        where = f"Group/{self.settings.group}" if self.level == "group" else f"{self.level}-level"
        when = ""
        if self.results:
            stamp = max(r.transaction_time for r in self.results)
            when = f", transactionTime {instant(stamp)}"
        return f"bulk: {self.client.base_url} ({where} $export{when})"

    def expected(self) -> int | None:
        return self._source().expected()

    def records(self) -> Iterator[SourceItem]:
        files = self._source()
        yield from self.problems
        yield from files.records()

    def summary(self) -> list[str]:
        self._source()
        files = sum(len(r.downloads.files) for r in self.results)
        lines_read = sum(f.lines for r in self.results for f in r.downloads.of("output"))
        kicked = sum(r.kick_offs for r in self.results)
        resumed = sum(1 for r in self.results if r.resumed)
        head = (
            f"Bulk Data export ({self.plan_used}): {len(self.results)} job(s), {kicked} kick-off(s)"
            + (f", {resumed} resumed" if resumed else "")
            + f", {files} file(s), {lines_read} line(s)"
        )
        if self.candidates is not None:
            head += f"; first pass: {self.candidates} candidate(s)"
        if self.medication_requests:
            head += f"; {self.medication_requests} Medication read(s)"
        errors = sum(len(r.downloads.of("error")) for r in self.results)
        out = [head]
        if errors:
            out.append(f"The server's export error files: {errors} (entries listed under errors)")
        out.extend(self.notes)
        assert self._files is not None
        return [*out, *self._files.summary()]

    # -- lifetime ----------------------------------------------------------------------------

    def __enter__(self) -> BulkSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._files is not None:
            self._files.__exit__(exc_type, exc, tb)
        complete = exc_type is None and self.results and all(r.complete for r in self.results)
        if complete and not self.keep_files:
            self._remove_downloads()

    def prepare(self) -> None:
        self._source()

    @property
    def files(self) -> FileSource:
        """The file source over the downloads (exports first)."""
        return self._source()

    # -- the plan ----------------------------------------------------------------------------

    def _source(self) -> FileSource:
        if self._files is None:
            _private_dir(self.work_dir)
            paths = self._export()
            self._files = FileSource(paths, self.screener, readers=self._readers)
        return self._files

    def _export(self) -> list[Path]:
        gate = self.screener.gate
        single = self._single_request()
        first = None
        if self.settings.two_pass and not gate.everyone and self.settings.since is None:
            first = ExportRequest(
                level=self.level,
                group=self.settings.group,
                types=tuple(sorted(gate.types)),
                type_filters=gate_filters(gate),
            )
        keep = {job_path(self.work_dir, single, self.client.base_url)}
        planned = self._load_plan(first) if first is not None else None
        if first is not None:
            keep.add(job_path(self.work_dir, first, self.client.base_url))
            if planned is not None:
                keep.update(job_path(self.work_dir, r, self.client.base_url) for r in self._second(planned))
        cancel_stale_jobs(self.bulk, self.work_dir, keep)
        if first is None:
            return self._run_single(single)
        if planned is None:
            try:
                result = self._run(first)
            except ServerError as exc:
                if not refused(exc):
                    raise
                self.notes.append(
                    f"The server refused the gate's _typeFilter (HTTP {exc.status}): one export of every type "
                    "the criteria read instead"
                )
                return self._run_single(single)
            found, bad = admitted_patients(result.output_paths(), gate)
            if bad:
                self.problems.append(
                    InputProblem(
                        "bulk export (first pass)",
                        f"{bad} line(s) of the gate's files are not JSON objects or name an invalid patient id",
                    )
                )
            planned = sorted(found)
            self._save_plan(first, planned)
        self.candidates = len(planned)
        log.info("bulk export: first pass found %d candidate(s)", len(planned))
        self.plan_used = "two passes: the gate's resources, then the candidates' data"
        paths: list[Path] = []
        for n, request in enumerate(self._second(planned)):
            try:
                result = self._run(request)
            except ServerError as exc:
                if n > 0 or not refused(exc):
                    raise
                self.notes.append(
                    f"The server refused an export of given patients (HTTP {exc.status}): one export of every "
                    "type the criteria read instead"
                )
                return self._run_single(single)
            paths.extend(result.output_paths())
        return self._with_medications(paths, "patient")

    def _single_request(self) -> ExportRequest:
        types = self.settings.types or export_types(self.screener.needed_types, self.level)
        return ExportRequest(
            level=self.level, group=self.settings.group, types=tuple(types), since=self.settings.since
        )

    def _run_single(self, request: ExportRequest) -> list[Path]:
        self.plan_used = "one export of every type the criteria read"
        result = self._run(request)
        return self._with_medications(result.output_paths(), self.level)

    def _second(self, candidates: list[str]) -> list[ExportRequest]:
        # Patient level even for a Group plan: the candidates are the Group's members already, and
        # HAPI 8.8 ignores `patient` at Group level (it exports the whole Group), honours it here.
        types = export_types(self.screener.needed_types, "patient")
        size = max(1, self.settings.patients_per_job)
        return [
            ExportRequest(level="patient", types=types, patients=tuple(candidates[i : i + size]))
            for i in range(0, len(candidates), size)
        ]

    def _run(self, request: ExportRequest) -> ExportResult:
        key = request.key(self.client.base_url)[:12]
        result = run_export(
            self.bulk,
            request,
            self.work_dir / f"files-{key}",
            self.work_dir,
            downloader=Downloader(self.client, self.settings),
        )
        self.results.append(result)
        self.problems.extend(result.problems)
        return result

    def _with_medications(self, paths: list[Path], level: Level) -> list[Path]:
        if level == "system" or "Medication" not in self.screener.needed_types:
            return paths
        dest = self.work_dir / "medications" / MEDICATION_FILE
        found, problems, requests = fetch_medications(self.client, paths, dest)
        self.problems.extend(problems)
        self.medication_requests = requests
        return [*paths, found] if found is not None else paths

    # -- the first pass's candidates, kept until the plan is done ---------------------------------

    def _plan_path(self, first: ExportRequest) -> Path:
        return self.work_dir / f"{PLAN_PREFIX}{first.key(self.client.base_url)[:24]}.json"

    def _load_plan(self, first: ExportRequest) -> list[str] | None:
        path = self._plan_path(first)
        self._plan_file = path
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            made = dt.datetime.fromisoformat(body["made"])
            candidates = body["candidates"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            log.warning(
                "bulk export: the plan file %s is not readable; running the first pass again", path.name
            )
            return None
        if dt.datetime.now(dt.UTC) - made > PLAN_MAX_AGE or not isinstance(candidates, list):
            return None
        log.info("bulk export: the first pass of an earlier run is reused (%d candidate(s))", len(candidates))
        return [str(c) for c in candidates]

    def _save_plan(self, first: ExportRequest, candidates: list[str]) -> None:
        path = self._plan_path(first)
        self._plan_file = path
        body = {"made": dt.datetime.now(dt.UTC).isoformat(), "candidates": candidates}
        with atomic_writer(path) as fh:
            json.dump(body, fh)

    def _remove_downloads(self) -> None:
        for folder in self.work_dir.glob("files-*"):
            shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(self.work_dir / "medications", ignore_errors=True)
        if self._plan_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self._plan_file.unlink()
        with contextlib.suppress(OSError):
            self.work_dir.rmdir()  # only when nothing else is left in it


def _private_dir(folder: Path) -> None:
    private_dir(folder)  # 0700, missing parents too, whatever the umask
