"""The sync on a server whose change feed is a Bulk Data export (``changes = "bulk"``), and the records and
candidates read from exports (``records``/``candidates = "bulk"``).

- **Changes**: one export with ``_since`` = the watermark, at the level the site can use (``Group/ID``
  with ``[server] group``, else system, else Patient). The patients the changed resources are about are
  queued. The manifest's ``deleted`` entries are applied: a deleted Patient is queued, and its record
  read finds it gone (``Absent``: removed from the state, as a deletion in the history feed is); another
  deleted resource is traced to its patient by that resource's own history (``Type/id/_history``, where
  the server offers it), who is then re-screened. The next watermark is the export's
  ``transactionTime``, the server's clock. An export with files missing keeps the watermark where it
  was and the job for the next run. A server that lists no deletions (HAPI 8.8 lists none) leaves them
  to the scheduled full reconciliation.
- **Records**: the queued patients' records from an export's files (:mod:`fhir_adapter.sync.bulk_records`,
  the file path). A full run exports everything at the feed's level once, and takes its candidates
  (``bulk``) and its watermark from that export; an incremental run exports the queued patients only
  (``Patient/$export`` with ``patient=``) where the server offers a Patient-level export, else
  everything at the feed's level again (a Group-only server cannot export given patients).
- **Crash**: every job is persisted under the state file's folder (``<state>.bulk/``, 0700): a killed
  run's next run polls the same job. The change feed and the records have separate folders, so one never
  cancels the other's job as stale. Downloads are removed after a complete run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fhir_adapter.client.bulk import BulkClient, ExportRequest, Level
from fhir_adapter.client.bulk_download import Downloader
from fhir_adapter.client.bulk_job import ExportResult, cancel_stale_jobs, job_path, run_export
from fhir_adapter.client.http import FhirClient
from fhir_adapter.errors import AuthError, ServerError
from fhir_adapter.facts.fhirjson import patient_of
from fhir_adapter.model import InputProblem
from fhir_adapter.output.private import private_dir
from fhir_adapter.screening import Screener
from fhir_adapter.settings import BulkSettings
from fhir_adapter.source.base import Source
from fhir_adapter.source.bulk import export_changes, refused
from fhir_adapter.source.bulk_plan import MEDICATION_FILE, admitted_patients, export_types, fetch_medications
from fhir_adapter.source.candidates import Candidates
from fhir_adapter.source.server import ServerSource
from fhir_adapter.source.strategies import Capabilities, RecordsStrategy, bulk_level
from fhir_adapter.sync.bulk_records import ExportRecords
from fhir_adapter.sync.changes import Changes, warn_untraced

log = logging.getLogger(__name__)

# Instance-history entries read to find the patient of a deleted resource (the deletion, then its body).
_HISTORY_ENTRIES = 5


@contextlib.contextmanager
def records_source(
    client: FhirClient,
    screener: Screener,
    strategy: RecordsStrategy,
    patients: Sequence[str],
    bulk: BulkSync | None,
    concurrency: int = 1,
) -> Iterator[Source]:
    """The source of the queued patients' records: the server, ``concurrency`` patients at a time, or an
    export."""
    if strategy != "bulk":
        yield ServerSource(
            client, screener, patients=patients, missing="absent", strategy=strategy, concurrency=concurrency
        )
        return
    if bulk is None:
        raise ValueError("the bulk records strategy needs the run's BulkSync")
    with bulk.records(patients) as source:
        yield source
    bulk.problems.extend(source.problems)


def bulk_folder(state_path: Path) -> Path:
    """Where the sync keeps its export jobs and downloads: beside its state file, one folder per state."""
    return state_path.with_name(f"{state_path.stem}.bulk")


@dataclass(frozen=True, slots=True)
class _Export:
    """One logical export (maybe several jobs): its files, whether all arrived, the server's clock."""

    paths: tuple[Path, ...]
    complete: bool
    transaction_time: dt.datetime
    description: str


class BulkSync:
    """The exports of one sync run. ``problems``: what the run reports besides its patients (export error
    files, files that could not be fetched, unreadable lines); each counts as an error (exit 3)."""

    def __init__(
        self,
        client: FhirClient,
        caps: Capabilities,
        screener: Screener,
        settings: BulkSettings,
        folder: Path,
        group: str | None,
    ) -> None:
        level = bulk_level(caps, group is not None)
        if level is None:  # choose_sync refuses this; a caller that skipped it gets a clear error
            raise ValueError("the server offers no Bulk Data export this site can use")
        self.client = client
        self.caps = caps
        self.screener = screener
        self.level: Level = level
        self.group = group if level == "group" else None
        self.settings = replace(settings, level=level, group=self.group, since=None, types=())
        self.folder = folder
        self.bulk = BulkClient(client, self.settings)
        self.problems: list[InputProblem] = []
        self.notes: list[str] = []
        self.jobs = 0
        self.untraced_deletions = 0
        self._full: _Export | None = None
        self._exports: list[_Export] = []

    @property
    def where(self) -> str:
        return f"Group/{self.group}" if self.group else f"{self.level}-level"

    # -- the change feed -------------------------------------------------------------------------------

    def changes(self, since: dt.datetime) -> Changes:
        """Who changed since ``since``, with the next watermark (None: keep the old one)."""
        folder = self.folder / "changes"
        private_dir(folder)
        result = export_changes(
            self.client,
            since,
            self.group,
            self.screener.needed_types,
            folder,
            settings=self.settings,
            dest=folder / "files",
        )
        self.jobs += 1
        self.problems.extend(result.problems)
        changes = Changes(patients=result.patients())
        for path in result.files:  # counted line by line: the files are never held
            with path.open("rb") as fh:
                changes.entries += sum(1 for line in fh if line.strip())
        for ref in result.deleted:
            changes.deleted += 1
            pid = self._patient_of_deleted(ref)
            if pid is None:
                changes.untraced += 1
            else:
                changes.patients.add(pid)
        self.untraced_deletions += changes.untraced
        if result.complete:
            changes.next_watermark = result.transaction_time
            shutil.rmtree(folder / "files", ignore_errors=True)
        else:
            changes.hold_watermark = True
            self.notes.append(
                "the change export is missing files: the watermark stays, the next run resumes the job"
            )
        log.info(
            "bulk export since %s (%s): %d changed resources, %d deletions (%d not traced to a patient), "
            "%d patients",
            since.isoformat(),
            self.where,
            changes.entries,
            changes.deleted,
            changes.untraced,
            len(changes.patients),
        )
        warn_untraced(changes.untraced)
        return changes

    def _patient_of_deleted(self, ref: str) -> str | None:
        rtype, _, rid = ref.partition("/")
        if rtype == "Patient":
            return rid or None
        if not self.caps.supports(rtype, "history-instance"):
            return None
        try:
            for n, entry in enumerate(self.client.history(rtype, rid, {"_count": _HISTORY_ENTRIES})):
                resource = entry.get("resource")
                if isinstance(resource, dict):
                    return patient_of(resource)
                if n + 1 >= _HISTORY_ENTRIES:
                    break
        except AuthError:
            raise
        except (ServerError, ValueError) as exc:
            log.info("%s: its history cannot be read (%s)", ref, type(exc).__name__)
        return None

    # -- full runs: one export of everything --------------------------------------------------------------

    def full_export(self) -> dt.datetime | None:
        """Export everything at the feed's level (once per run); its ``transactionTime`` when every file
        arrived (the next watermark), else None."""
        if self._full is None:
            self._full = self._run_full()
        return self._full.transaction_time if self._full.complete else None

    def candidates(self) -> Candidates:
        """The patients the full export holds a resource of that a trial's gate admits (the file matcher)."""
        self.full_export()
        assert self._full is not None
        found, bad = admitted_patients(self._full.paths, self.screener.gate)
        warnings = (
            (f"{bad} line(s) of the export are unreadable or name an invalid patient id",) if bad else ()
        )
        return Candidates(tuple(sorted(found)), 0, warnings)

    # -- records --------------------------------------------------------------------------------------

    def records(self, patients: Sequence[str]) -> ExportRecords:
        """A source of the ``patients``' records, exporting them unless this run's full export holds them."""
        wanted = sorted(set(patients))
        export = self._full
        if export is None and not wanted:
            return ExportRecords((), self.screener, (), complete=True, description=self._describe())
        if export is None and "patient" in self.caps.export_levels:
            export = self._run_patients(wanted)
        if export is None:
            export = self._run_full()
        return ExportRecords(
            export.paths,
            self.screener,
            wanted,
            complete=export.complete,
            description=export.description,
        )

    def finish(self, ok: bool) -> None:
        """After the run: remove the downloads when everything arrived and the run went through."""
        if ok and all(e.complete for e in self._exports):
            records = self.folder / "records"
            for path in records.glob("files-*"):
                shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(records / "medications", ignore_errors=True)

    def to_json(self) -> dict[str, object]:
        """For the run's manifest."""
        return {
            "export": f"{self.where} $export",
            "jobs": self.jobs,
            "deletionsNotTraced": self.untraced_deletions,
            "notes": list(self.notes),
        }

    # -- the exports ------------------------------------------------------------------------------------

    def _describe(self) -> str:
        return f"bulk: {self.client.base_url} ({self.where} $export)"

    def _run_full(self) -> _Export:
        request = ExportRequest(
            level=self.level,
            group=self.group,
            types=export_types(self.screener.needed_types, self.level),
        )
        return self._run([request], self.level)

    def _run_patients(self, patients: list[str]) -> _Export | None:
        size = max(1, self.settings.patients_per_job)
        types = export_types(self.screener.needed_types, "patient")
        requests = [
            ExportRequest(level="patient", types=types, patients=tuple(patients[i : i + size]))
            for i in range(0, len(patients), size)
        ]
        try:
            return self._run(requests, "patient")
        except ServerError as exc:
            if not refused(exc):
                raise
            self.notes.append(
                f"the server refused an export of given patients (HTTP {exc.status}): everything at the "
                f"{self.where} level instead"
            )
            return None

    def _run(self, requests: list[ExportRequest], level: Level) -> _Export:
        folder = self.folder / "records"
        private_dir(folder)
        base = self.client.base_url
        cancel_stale_jobs(self.bulk, folder, {job_path(folder, r, base) for r in requests})
        results: list[ExportResult] = []
        for request in requests:
            result = run_export(
                self.bulk,
                request,
                folder / f"files-{request.key(base)[:12]}",
                folder,
                downloader=Downloader(self.client, self.settings),
            )
            self.jobs += 1
            self.problems.extend(result.problems)
            results.append(result)
        paths = [p for r in results for p in r.output_paths()]
        complete = all(r.complete for r in results)
        if level != "system" and "Medication" in self.screener.needed_types:
            found, problems, _ = fetch_medications(
                self.client, paths, folder / "medications" / MEDICATION_FILE
            )
            self.problems.extend(problems)
            if found is not None:
                paths.append(found)
        export = _Export(
            tuple(paths),
            complete,
            min(r.transaction_time for r in results),  # a watermark must not pass any job's snapshot
            self._describe(),
        )
        self._exports.append(export)
        return export
