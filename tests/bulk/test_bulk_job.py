"""One export end to end against a loopback server: the persisted job (resume, gone, failed, stale), the
error and deleted files, DELETE only after every file is in."""

from __future__ import annotations

import datetime as dt
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from bulkfake import FakeBulk, FileSpec, manifest, ndjson, patients

from fhir_adapter.client.bulk import BulkClient, ExportFailed, ExportRequest, ExportTimedOut, Manifest
from fhir_adapter.client.bulk_download import Downloaded, Downloader, Downloads
from fhir_adapter.client.bulk_files import deleted_refs, error_problems
from fhir_adapter.client.bulk_job import ExportResult, JobState, job_path, load_job, run_export, save_job
from fhir_adapter.client.http import FhirClient
from fhir_adapter.settings import BulkSettings

REQUEST = ExportRequest(types=("Patient",))
SETTINGS = BulkSettings(poll_initial_wait=0.01, poll_max_wait=0.01, export_timeout=5)


@pytest.fixture
def fake() -> Iterator[FakeBulk]:
    with FakeBulk() as server:
        server.files["p"] = FileSpec(ndjson(list(patients(3))))
        server.manifest = manifest(server, [("Patient", server.file_url("p"), 3)])
        yield server


def bulk_for(fake: FakeBulk, settings: BulkSettings = SETTINGS) -> BulkClient:
    return BulkClient(FhirClient(fake.base, max_retries=0), settings)


def export(
    fake: FakeBulk, tmp_path: Path, settings: BulkSettings = SETTINGS, request: ExportRequest = REQUEST
) -> ExportResult:
    bulk = bulk_for(fake, settings)
    return run_export(
        bulk,
        request,
        tmp_path / "out",
        tmp_path / "state",
        downloader=Downloader(bulk.client, settings, sleep=lambda s: None),
    )


def test_an_export_kicks_off_polls_downloads_and_deletes_the_job(fake: FakeBulk, tmp_path: Path) -> None:
    fake.script = [(202, {"X-Progress": "queued: 0/2 files", "Retry-After": "120"}, None)]

    result = export(fake, tmp_path)

    assert len(fake.kick_offs) == 1
    assert result.output_paths() == [tmp_path / "out" / "Patient.001.ndjson"]
    assert result.transaction_time == dt.datetime(2026, 6, 1, 10, 0, 0, 123000, tzinfo=dt.UTC)
    assert fake.deleted_jobs == ["job1"]
    assert result.progress == ("0/2",)  # the figure, not the server's words
    assert not list((tmp_path / "state").glob("bulk-job-*.json"))  # done: nothing to resume


def test_the_job_file_is_written_0600_before_the_first_poll(fake: FakeBulk, tmp_path: Path) -> None:
    fake.script = [(202, {}, None)] * 1000  # never finishes within the timeout
    settings = BulkSettings(poll_initial_wait=0.01, poll_max_wait=0.01, export_timeout=0.2)

    with pytest.raises(ExportTimedOut):
        export(fake, tmp_path, settings)

    path = job_path(tmp_path / "state", REQUEST, FhirClient(fake.base).base_url)
    state = load_job(path)
    assert state is not None and state.status_url == f"{fake.base}/status/job1"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert fake.deleted_jobs == []  # kept for the next run


def test_a_second_run_resumes_the_job_of_a_run_that_stopped(fake: FakeBulk, tmp_path: Path) -> None:
    fake.script = [(202, {}, None)] * 30
    with pytest.raises(ExportTimedOut):
        export(fake, tmp_path, BulkSettings(poll_initial_wait=0.01, poll_max_wait=0.01, export_timeout=0.05))
    fake.script = []

    result = export(fake, tmp_path)

    assert len(fake.kick_offs) == 1  # the server saw one kick-off
    assert result.resumed and result.kick_offs == 0
    assert result.output_paths()[0].exists()


def test_a_job_file_for_other_parameters_is_not_resumed(fake: FakeBulk, tmp_path: Path) -> None:
    other = ExportRequest(types=("Observation",))
    base = FhirClient(fake.base).base_url
    path = job_path(tmp_path / "state", other, base)
    save_job(
        path,
        JobState(
            base, other.key(base), f"{fake.base}/status/old", "2026-06-01T00:00:00+00:00", other.to_json()
        ),
    )

    result = export(fake, tmp_path)

    assert not result.resumed and len(fake.kick_offs) == 1


def test_a_gone_job_is_started_again_once(
    fake: FakeBulk, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = FhirClient(fake.base).base_url
    save_job(
        job_path(tmp_path / "state", REQUEST, base),
        JobState(
            base,
            REQUEST.key(base),
            f"{fake.base}/status/expired",
            "2026-06-01T00:00:00+00:00",
            REQUEST.to_json(),
        ),
    )
    fake.gone_jobs.add("expired")

    result = export(fake, tmp_path)

    assert len(fake.kick_offs) == 1 and not result.resumed
    assert any("gone" in r.getMessage() for r in caplog.records)


def test_a_failed_job_drops_its_job_file(fake: FakeBulk, tmp_path: Path) -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}
    fake.script = [(500, {"Content-Type": "application/fhir+json"}, outcome)]

    with pytest.raises(ExportFailed):
        export(fake, tmp_path)

    assert not list((tmp_path / "state").glob("bulk-job-*.json"))


def test_an_unusable_manifest_cancels_the_job_so_the_next_run_starts_a_new_one(
    fake: FakeBulk, tmp_path: Path
) -> None:
    fake.manifest = {**fake.manifest, "output": [{"type": "../../escaped", "url": fake.file_url("p")}]}

    with pytest.raises(ExportFailed, match="not a resource type"):
        export(fake, tmp_path)

    assert not list((tmp_path / "state").glob("bulk-job-*.json"))  # not resumed into the same failure
    assert fake.deleted_jobs == ["job1"]  # the server's one export slot is freed
    assert not list(tmp_path.rglob("*escaped*"))


def test_a_missing_file_keeps_the_job_and_the_next_run_fetches_only_it(
    fake: FakeBulk, tmp_path: Path
) -> None:
    fake.files["o"] = FileSpec(
        ndjson([{"resourceType": "Observation", "id": "o1"}]), statuses=[503, 503]
    )  # the first run's two attempts
    fake.manifest = manifest(
        fake, [("Patient", fake.file_url("p"), 3), ("Observation", fake.file_url("o"), 1)]
    )
    settings = BulkSettings(poll_initial_wait=0.01, poll_max_wait=0.01, download_attempts=2)

    first = export(fake, tmp_path, settings)

    assert not first.complete and fake.deleted_jobs == []
    assert [p.file for p in first.problems] == [f"bulk export output file (Observation) {fake.file_url('o')}"]

    second = export(fake, tmp_path, settings)

    assert second.complete and second.resumed and len(fake.kick_offs) == 1
    assert [s.path for s in fake.requests_to("/files/")].count("/files/p") == 1  # not fetched twice
    assert fake.deleted_jobs == ["job1"]


def test_expired_files_of_a_resumed_job_start_a_new_job(fake: FakeBulk, tmp_path: Path) -> None:
    base = FhirClient(fake.base).base_url
    save_job(
        job_path(tmp_path / "state", REQUEST, base),
        JobState(
            base, REQUEST.key(base), f"{fake.base}/status/old", "2026-06-01T00:00:00+00:00", REQUEST.to_json()
        ),
    )
    # The old job's manifest names a file that is gone; once it has been tried, the server's manifest
    # (the new job's) names one that exists.
    fresh = fake.manifest
    fake.manifest = manifest(fake, [("Patient", fake.file_url("expired"), 3)])
    bulk = bulk_for(fake)
    downloader = Downloader(bulk.client, SETTINGS, sleep=lambda s: None)
    real_download = downloader.download

    def download(m: Manifest, dest: Path) -> Downloads:
        out = real_download(m, dest)
        fake.manifest = fresh
        return out

    downloader.download = download  # type: ignore[method-assign]

    result = run_export(bulk, REQUEST, tmp_path / "out", tmp_path / "state", downloader=downloader)

    assert result.complete and len(fake.kick_offs) == 1 and not result.resumed
    assert "old" in fake.deleted_jobs  # the expired job was let go


def test_error_file_entries_become_problems_with_code_severity_and_type_only(
    fake: FakeBulk, tmp_path: Path
) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "processing",
                "diagnostics": "Patient Jane Doe MRN 12345 failed",
                "expression": ["Observation.valueQuantity"],
            },
            {"severity": "warning", "code": "incomplete"},
        ],
    }
    fake.files["e"] = FileSpec(ndjson([outcome]) + b"not json\n")
    fake.manifest = manifest(
        fake,
        [("Patient", fake.file_url("p"), 3)],
        error=[{"type": "OperationOutcome", "url": fake.file_url("e")}],
    )

    result = export(fake, tmp_path)

    reasons = [(p.reason, p.line) for p in result.problems]
    assert reasons == [
        ("export error error/processing for a Observation", 1),
        ("export error warning/incomplete", 1),
        ("not an OperationOutcome", 2),
    ]
    assert all("Jane" not in json.dumps(p.to_json()) for p in result.problems)
    assert result.downloads.of("error")[0].path == tmp_path / "out" / "error" / "OperationOutcome.001.ndjson"


def test_deleted_files_give_the_deleted_references(fake: FakeBulk, tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "DELETE", "url": "Observation/o1"}},
            {"request": {"method": "DELETE", "url": "https://x.example.org/fhir/Condition/c2/_history/3"}},
            {"request": {"method": "PUT", "url": "Observation/o9"}},
        ],
    }
    fake.files["d"] = FileSpec(ndjson([bundle]))
    fake.manifest = manifest(fake, [], deleted=[{"type": "Bundle", "url": fake.file_url("d")}])

    result = export(fake, tmp_path)

    assert result.deleted == ("Condition/c2", "Observation/o1")


def test_error_problems_and_deleted_refs_ignore_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "e.ndjson"
    path.write_text(
        '\n{"resourceType":"OperationOutcome","issue":[{"severity":"fatal","code":"too-costly"}]}\n\n'
    )
    problems = error_problems([Downloaded("error", "OperationOutcome", path, 1)], "x")
    assert [(p.reason, p.line) for p in problems] == [("export error fatal/too-costly", 2)]
    assert deleted_refs([]) == []
