"""``fhir-adapter export``: a Bulk Data export into a folder, nothing screened.

``OUT/Type.NNN.ndjson`` per manifest file (``screen OUT`` reads them), the server's error files in
``OUT/error/``, its deleted files in ``OUT/deleted/``, and ``OUT/export.summary``: the request, the
``transactionTime`` (pass it as ``--since`` next time), the files with their line counts, the deleted
references and every problem. A Patient- or Group-level export cannot carry Medications; the ones the
exported requests reference are read into ``OUT/Medication.000.ndjson``.

The job file lives in ``--state-dir`` (default ``OUT``): a killed run, run again with the same arguments,
resumes the same job. ``OUT`` must be new, empty, or hold an unfinished export of this command.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import TextIO

from fhir_adapter.client.bulk import BulkClient, ExportRequest, instant
from fhir_adapter.client.bulk_download import OWN_FILE
from fhir_adapter.client.bulk_job import JOB_PREFIX, ExportResult, cancel_stale_jobs, job_path, run_export
from fhir_adapter.client.factory import open_client
from fhir_adapter.config.loader import load_trials
from fhir_adapter.errors import ExitCode, UsageError
from fhir_adapter.model import InputProblem
from fhir_adapter.output.private import atomic_writer
from fhir_adapter.screening import Screener
from fhir_adapter.settings import ExportSettings
from fhir_adapter.source.bulk import level_of
from fhir_adapter.source.bulk_plan import MEDICATION_FILE, export_types, fetch_medications

SUMMARY = "export.summary"


def run_export_command(settings: ExportSettings, *, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stderr
    bulk_settings = settings.bulk
    level = level_of(bulk_settings)
    types = bulk_settings.types
    needed: frozenset[str] = frozenset(types)
    if not types:
        rules = settings.rules
        screener = Screener(load_trials(rules.trials, rules.overlays, rules.mappings_dir), dt.date.today())
        needed = screener.needed_types
        types = export_types(needed, level)
    request = ExportRequest(
        level=level, group=bulk_settings.group, types=tuple(types), since=bulk_settings.since
    )
    state_dir = settings.state_dir or settings.out
    _check_out(settings.out, state_dir)
    with open_client(settings.server) as client:
        bulk = BulkClient(client, bulk_settings)
        cancel_stale_jobs(bulk, state_dir, {job_path(state_dir, request, client.base_url)})
        result = run_export(bulk, request, settings.out, state_dir)
        problems = list(result.problems)
        medications = None
        if level != "system" and "Medication" in needed:
            medications, more, _ = fetch_medications(
                client, result.output_paths(), settings.out / MEDICATION_FILE
            )
            problems.extend(more)
        _write_summary(settings.out, client.base_url, result, problems, medications)
    files = result.downloads.of("output")
    print(
        f"Exported {len(files)} file(s), {sum(f.lines for f in files)} line(s) to {settings.out}"
        + (" (resumed job)" if result.resumed else "")
        + f"; transactionTime {instant(result.transaction_time)} (the next --since)",
        file=out,
    )
    if result.deleted:
        print(f"Deleted since --since: {len(result.deleted)} resource(s) (listed in {SUMMARY})", file=out)
    if problems:
        print(f"Problems: {len(problems)} (listed in {SUMMARY})", file=out)
    return ExitCode.PARTIAL if problems else ExitCode.OK


def _check_out(folder: Path, state_dir: Path) -> None:
    """A new or empty folder, or one holding an unfinished export of ours (its job file is there)."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise UsageError(f"--out {folder}: not a folder")
    unfinished = state_dir.is_dir() and any(state_dir.glob(f"{JOB_PREFIX}*.json"))
    for entry in folder.iterdir():
        name = entry.name
        ours = (
            OWN_FILE.fullmatch(name)
            or name.startswith(JOB_PREFIX)
            or (entry.is_dir() and name in ("error", "deleted"))
            or (name == SUMMARY and unfinished)
            or name.startswith(".")
        )
        if not ours:
            raise UsageError(
                f"--out {folder}: the folder holds other files ({name}); give a new or empty folder"
                + (" (it holds a finished export)" if name == SUMMARY else "")
            )


def _write_summary(
    folder: Path, base_url: str, result: ExportResult, problems: list[InputProblem], medications: Path | None
) -> None:
    request = result.request.to_json()
    request.pop("patients", None)
    files = [
        {"kind": f.kind, "type": f.type, "file": str(f.path.relative_to(folder)), "lines": f.lines}
        for f in result.downloads.files
        if f.path.is_relative_to(folder)
    ]
    if medications is not None:
        files.append({"kind": "supplement", "type": "Medication", "file": medications.name})
    body = {
        "server": base_url,
        "request": request,
        "transactionTime": instant(result.transaction_time),
        "requiresAccessToken": result.manifest.requires_access_token,
        "complete": result.complete,
        "resumedJob": result.resumed,
        "files": files,
        "deleted": list(result.deleted),
        "errors": [p.to_json() for p in problems],
    }
    with atomic_writer(folder / SUMMARY) as fh:  # 0600 whatever the umask
        json.dump(body, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
