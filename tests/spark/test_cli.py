"""The Spark engine as an operator runs it: ``python -m fhir_adapter screen --engine spark`` in a fresh
process (its own JVM on ``local[1]``). A corrupt line and a candidate without its Patient are entries in
``errors`` and exit 3, as locally; a run that cannot start Spark exits 4; no traceback either way; the
result is owner-only and the private scratch space is gone afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from fhirdata import baseline, for_patient, ndjson_lines

from fhir_adapter.cli import main

AS_OF = "2026-06-15"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_adapter", "screen", *args, "--as-of", AS_OF],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def _export(folder: Path) -> Path:
    """Two candidates in bulk NDJSON: one intact, one whose Patient line is missing; a line cut short."""
    folder.mkdir(parents=True)
    whole = for_patient(baseline(), "a")
    headless = [r for r in for_patient(baseline(), "b") if r["resourceType"] != "Patient"]
    resources = [*whole, *headless]
    by_type: dict[str, list[Any]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    for rtype, items in by_type.items():
        text = ndjson_lines(items)
        if rtype == "Observation":
            text = text + '{"resourceType": "Observation", "id": "cu\n'
        (folder / f"{rtype}.ndjson").write_text(text, encoding="utf-8")
    return folder


def test_a_corrupt_line_and_a_missing_patient_exit_3_and_are_listed_as_locally(
    spark: Any, tmp_path: Path
) -> None:
    export = _export(tmp_path / "export")
    out = tmp_path / "spark"
    scratch_before = set(Path(tempfile.gettempdir()).glob("fhir-adapter-spark-*"))
    env = {k: v for k, v in os.environ.items() if k != "SPARK_LOCAL_DIRS"}
    run = _cli(
        "--engine", "spark", "--master", "local[1]", str(export), "--out-dir", str(out), "--merge", env=env
    )
    assert run.returncode == 3, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert 'could not be read (listed under "errors"' in run.stderr
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["exitCode"] == 3

    local_out = tmp_path / "local.json"
    assert main(["screen", str(export), "--as-of", AS_OF, "--out", str(local_out)]) == 3
    local = json.loads(local_out.read_text(encoding="utf-8"))
    merged = json.loads((out / "NCT05495321.json").read_text(encoding="utf-8"))
    assert merged["errors"] == local["errors"] == manifest["errors"]
    assert {(e["file"], e.get("line")) for e in local["errors"]} == {
        (str(export / "Observation.ndjson"), 23),
        ("(input)", None),
    }
    assert merged["subjects"] == local["subjects"]

    for path in [out, *out.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))  # the report pages too
    assert set(Path(tempfile.gettempdir()).glob("fhir-adapter-spark-*")) == scratch_before


def test_a_master_spark_cannot_use_exits_4_without_a_traceback(spark: Any, tmp_path: Path) -> None:
    export = _export(tmp_path / "export")
    run = _cli(
        "--engine", "spark", "--master", "no-such-master", str(export), "--out-dir", str(tmp_path / "o")
    )
    assert run.returncode == 4, run.stderr[-2000:]
    assert "could not start Spark" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_a_fifo_in_the_input_folder_is_listed_as_locally_and_the_run_ends(spark: Any, tmp_path: Path) -> None:
    export = _export(tmp_path / "export")
    os.mkfifo(export / "Encounter.ndjson")  # Hadoop lists it as an empty file; opening it never returns
    out = tmp_path / "spark"
    run = _cli("--engine", "spark", "--master", "local[1]", str(export), "--out-dir", str(out), "--merge")
    assert run.returncode == 3, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    local_out = tmp_path / "local.json"
    assert main(["screen", str(export), "--as-of", AS_OF, "--out", str(local_out)]) == 3
    local = json.loads(local_out.read_text(encoding="utf-8"))
    merged = json.loads((out / "NCT05495321.json").read_text(encoding="utf-8"))
    assert merged["errors"] == local["errors"]
    assert {"file": str(export / "Encounter.ndjson"), "reason": "not a regular file (a FIFO): skipped"} in (
        local["errors"]
    )
    assert merged["subjects"] == local["subjects"]
