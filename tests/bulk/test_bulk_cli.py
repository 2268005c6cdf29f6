"""``fhir-adapter export`` and ``screen --bulk`` on the command line (a loopback Bulk Data server)."""

from __future__ import annotations

import contextlib
import io
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from bulkfake import FakeBulk, FileSpec, manifest, ndjson, patients

from fhir_adapter.cli import main

FAST = ["--poll-max-wait", "0.01"]


@pytest.fixture
def fake() -> Iterator[FakeBulk]:
    with FakeBulk() as server:
        server.files["p"] = FileSpec(ndjson(list(patients(4))))
        server.manifest = manifest(server, [("Patient", server.file_url("p"), 4)])
        yield server


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(argv))
    return code, out.getvalue()


def test_export_downloads_into_the_folder_and_writes_its_summary(fake: FakeBulk, tmp_path: Path) -> None:
    out = tmp_path / "export"

    code, text = cli("export", "--server", fake.base, "--out", str(out), *FAST)

    assert code == 0, text
    assert (out / "Patient.001.ndjson").read_bytes() == fake.files["p"].body
    summary = json.loads((out / "export.summary").read_text())
    assert summary["transactionTime"] == "2026-06-01T10:00:00.123Z"
    assert summary["files"] == [
        {"kind": "output", "type": "Patient", "file": "Patient.001.ndjson", "lines": 4}
    ]
    assert summary["complete"] is True
    assert stat.S_IMODE((out / "export.summary").stat().st_mode) == 0o600
    assert "transactionTime 2026-06-01T10:00:00.123Z (the next --since)" in text


def test_export_passes_group_since_and_type(fake: FakeBulk, tmp_path: Path) -> None:
    code, text = cli(
        "export", "--server", fake.base, "--out", str(tmp_path / "e"), "--group", "g7",
        "--since", "2026-05-31T22:00:00+02:00", "--type", "Patient,Observation", *FAST,
    )  # fmt: skip

    assert code == 0, text
    kick = fake.kick_offs[0]
    assert kick.path == "/fhir/Group/g7/$export"
    assert dict(kick.query)["_since"] == "2026-05-31T20:00:00.000Z"
    assert dict(kick.query)["_type"] == "Patient,Observation"


def test_export_types_default_to_what_the_trials_criteria_read(fake: FakeBulk, tmp_path: Path) -> None:
    cli("export", "--server", fake.base, "--out", str(tmp_path / "e"), *FAST)

    types = dict(fake.kick_offs[0].query)["_type"].split(",")
    assert {"Patient", "Condition", "Observation", "MedicationRequest", "Medication"} <= set(types)


def test_export_with_an_error_file_exits_3_and_lists_the_entries(fake: FakeBulk, tmp_path: Path) -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing"}]}
    fake.files["e"] = FileSpec(ndjson([outcome]))
    fake.manifest["error"] = [{"type": "OperationOutcome", "url": fake.file_url("e")}]
    out = tmp_path / "e"

    code, text = cli("export", "--server", fake.base, "--out", str(out), *FAST)

    assert code == 3, text
    errors = json.loads((out / "export.summary").read_text())["errors"]
    assert errors[0]["reason"] == "export error error/processing" and errors[0]["line"] == 1


def test_export_refuses_a_folder_holding_other_files(fake: FakeBulk, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")

    code, text = cli("export", "--server", fake.base, "--out", str(tmp_path), *FAST)

    assert code == 2 and "notes.txt" in text
    assert fake.kick_offs == []


def test_export_refuses_a_folder_with_a_finished_export(fake: FakeBulk, tmp_path: Path) -> None:
    assert cli("export", "--server", fake.base, "--out", str(tmp_path / "e"), *FAST)[0] == 0

    code, text = cli("export", "--server", fake.base, "--out", str(tmp_path / "e"), *FAST)

    assert code == 2 and "finished export" in text


@pytest.mark.parametrize("since", ["2026-06-01T10:00:00", "yesterday"])
def test_since_needs_a_zoned_instant_or_a_date(fake: FakeBulk, tmp_path: Path, since: str) -> None:
    with pytest.raises(SystemExit) as caught:
        cli("export", "--server", fake.base, "--out", str(tmp_path / "e"), "--since", since)

    assert caught.value.code == 2


def test_a_date_since_is_utc_midnight(fake: FakeBulk, tmp_path: Path) -> None:
    cli("export", "--server", fake.base, "--out", str(tmp_path / "e"), "--since", "2026-05-01", *FAST)

    assert dict(fake.kick_offs[0].query)["_since"] == "2026-05-01T00:00:00.000Z"


def test_screen_bulk_needs_a_server(tmp_path: Path) -> None:
    code, text = cli("screen", "--bulk", "--out", str(tmp_path / "r.json"))

    assert code == 2 and "--bulk needs --server" in text


def test_screen_bulk_does_not_write_back_yet(fake: FakeBulk, tmp_path: Path) -> None:
    code, text = cli(
        "screen", "--server", fake.base, "--bulk", "--write-back", "--out", str(tmp_path / "r.json")
    )

    assert code == 2 and "--write-back does not go with --bulk" in text
    assert fake.kick_offs == []


def test_screen_bulk_with_a_bad_storage_origin_is_a_usage_error(fake: FakeBulk, tmp_path: Path) -> None:
    code, text = cli(
        "screen", "--server", fake.base, "--bulk", "--bulk-storage-origin", "https://s.example.org/path",
        "--out", str(tmp_path / "r.json"), *FAST,
    )  # fmt: skip

    assert code == 2 and "not an origin" in text


def test_screen_bulk_puts_its_work_folder_where_asked_and_keeps_files_on_request(
    fake: FakeBulk, tmp_path: Path
) -> None:
    work = tmp_path / "work"

    code, text = cli(
        "screen", "--server", fake.base, "--bulk", "--single-pass", "--bulk-dir", str(work), "--keep-bulk-files",
        "--as-of", "2026-06-15", "--out", str(tmp_path / "r.json"), *FAST,
    )  # fmt: skip

    assert code == 0, text
    assert list(work.glob("files-*/Patient.001.ndjson"))
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    assert len(json.loads((tmp_path / "r.json").read_text())["subjects"]) == 4


@pytest.mark.parametrize("bad", [["--group", "../x"], ["--type", "patient"], ["--type", "Patient,Obs/x"]])
def test_a_bad_group_or_type_is_a_usage_error(fake: FakeBulk, tmp_path: Path, bad: list[str]) -> None:
    code, text = cli("export", "--server", fake.base, "--out", str(tmp_path / "e"), *bad, *FAST)

    assert code == 2, text
    assert fake.kick_offs == []


def test_screen_bulk_reads_the_downloads_on_every_worker_with_the_result_of_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_adapter.source import patient_index

    dm = {"coding": [{"system": "http://snomed.info/sct", "code": "396230008"}]}
    conditions = [
        {"resourceType": "Condition", "id": f"c{i}", "code": dm, "subject": {"reference": f"Patient/p{i}"}}
        for i in range(0, 6, 2)
    ]
    parallel = []
    real = patient_index.gate_pieces
    monkeypatch.setattr(patient_index, "gate_pieces", lambda *a, **k: parallel.append(a[1]) or real(*a, **k))
    results = {}
    for workers in ("1", "2"):
        with FakeBulk() as fake:
            fake.files["p"] = FileSpec(ndjson(list(patients(6))))
            fake.files["c"] = FileSpec(ndjson(conditions))
            fake.manifest = manifest(
                fake, [("Patient", fake.file_url("p"), 6), ("Condition", fake.file_url("c"), 3)]
            )
            out = tmp_path / f"r{workers}.json"
            code, text = cli(
                "screen", "--server", fake.base, "--bulk", "--single-pass", "--bulk-dir",
                str(tmp_path / f"work{workers}"), "--as-of", "2026-06-15", "--out", str(out),
                "--workers", workers, *FAST,
            )  # fmt: skip
        assert code == 0, text
        results[workers] = json.loads(out.read_text())["subjects"]
    assert parallel == [2]  # only the two-worker run read its files on two processes
    assert results["2"] == results["1"]
    assert sum(s["status"] != "ineligible" for s in results["1"]) == 3
