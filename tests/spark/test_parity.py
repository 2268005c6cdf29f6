"""``screen --engine spark`` gives what the local engine gives: the same subjects (statuses, verdicts,
evidence), the same ``errors`` (file and line) and summary, and the same exit code, on the shipped
examples, on a generated population of a few thousand patients with every kind of bad input mixed in,
and with the files cut into many small Spark blocks (line numbers rebuilt across blocks).

Both engines run in-process through ``fhir_adapter.cli.main``; the Spark one on the session of
``conftest.py`` (``local[2]``). Results are compared after sorting (subjects by patient, errors by
content), which is the contract; the merged file is validated against the result schema.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fhirdata import (
    DM,
    REPO,
    Res,
    baseline,
    bundle,
    condition,
    for_patient,
    med_request,
    medication,
    ndjson_lines,
)

from fhir_adapter.cli import main
from fhir_adapter.source.reader import Item, read_all

EXAMPLES = REPO / "examples" / "patients"
AS_OF = "2026-06-15"
SCHEMA = json.loads((REPO / "profiles" / "screening-result.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)
BOTH_TRIALS = ("--trial", "NCT05495321", "--trial", "NCT02728752")


def _populations() -> Any:
    spec = importlib.util.spec_from_file_location("populations", REPO / "benchmarks" / "populations.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["populations"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class Outcome:
    def __init__(self, code: int, results: dict[str, dict[str, Any]], stderr: str) -> None:
        self.code, self.results, self.stderr = code, results, stderr

    def comparable(self) -> dict[str, Any]:
        """Per study: subjects by patient, errors sorted, summary; nothing that names the run."""
        return {
            study: {
                "subjects": sorted(r["subjects"], key=lambda s: s["patient"]),
                "errors": sorted(r["errors"], key=lambda e: json.dumps(e, sort_keys=True)),
                "summary": r["summary"],
            }
            for study, r in self.results.items()
        }


def _results(folder: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(folder.glob("*.json")):
        if path.name == "manifest.json":
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        problems = sorted(VALIDATOR.iter_errors(result), key=str)
        assert not problems, f"{path.name}: {problems[0].message}"
        out[result["study"]] = result
    return out


def screen_both(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str | Path
) -> tuple[Outcome, Outcome]:
    """The same command with the local engine and with ``--engine spark --merge``."""
    common = [*map(str, args), "--as-of", AS_OF]
    local_dir, spark_dir = tmp_path / "local", tmp_path / "spark"
    code = main(["screen", *common, "--out-dir", str(local_dir)])
    local = Outcome(code, _results(local_dir), capsys.readouterr().err)
    code = main(["screen", "--engine", "spark", *common, "--out-dir", str(spark_dir), "--merge"])
    spark = Outcome(code, _results(spark_dir), capsys.readouterr().err)
    for run in (local, spark):
        assert "Traceback" not in run.stderr
    return local, spark


def assert_same(local: Outcome, spark: Outcome) -> None:
    assert spark.code == local.code
    assert set(spark.results) == set(local.results)
    expected, got = local.comparable(), spark.comparable()
    for study in expected:
        assert len(got[study]["subjects"]) == len(expected[study]["subjects"])
        for mine, theirs in zip(got[study]["subjects"], expected[study]["subjects"], strict=True):
            assert mine == theirs, mine["patient"]
        assert got[study]["errors"] == expected[study]["errors"]
        assert got[study]["summary"] == expected[study]["summary"]


@contextmanager
def small_blocks(spark: Any, size: int) -> Iterator[None]:
    """Make Spark cut files into blocks of ``size`` bytes (and pack several files into one task)."""
    conf = spark.conf
    keys = ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes")
    before = {k: conf.get(k) for k in keys}
    for k in keys:
        conf.set(k, str(size))
    try:
        yield
    finally:
        for k, v in before.items():
            conf.set(k, v)


def write(path: Path, content: str | bytes | Res) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, dict):
        content = json.dumps(content, ensure_ascii=False, indent=1)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


# --- the shipped examples -----------------------------------------------------------------------------


def test_examples_as_bundles_give_the_local_results_for_both_trials(
    spark: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    local, other = screen_both(capsys, tmp_path, EXAMPLES, *BOTH_TRIALS)
    assert local.code == 0
    assert_same(local, other)
    # Beyond the contract: the merged files are the local files, byte for byte but for the timestamp.
    for study, result in local.results.items():
        mine = dict(other.results[study], generated=None)
        assert mine == dict(result, generated=None)
    assert len(local.results["NCT05495321"]["subjects"]) == len(list(EXAMPLES.glob("*.json")))


def test_examples_as_bulk_ndjson_and_gzip_give_the_local_results(
    spark: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    items = [i.resource for i in read_all([EXAMPLES]) if isinstance(i, Item)]
    folder = tmp_path / "bulk"
    by_type: dict[str, list[Res]] = {}
    for r in items:
        by_type.setdefault(r["resourceType"], []).append(r)
    for rtype, resources in by_type.items():
        half = len(resources) // 2
        write(folder / f"{rtype}.000.ndjson", ndjson_lines(resources[:half]))
        write(
            folder / "gz" / f"{rtype}.001.ndjson.gz", gzip.compress(ndjson_lines(resources[half:]).encode())
        )
    with small_blocks(spark, 64 * 1024):
        local, other = screen_both(capsys, tmp_path, folder, *BOTH_TRIALS)
    assert local.code == 0
    assert_same(local, other)


# --- a generated population with every kind of bad input -------------------------------------------


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Population "c" (hospital-shaped, 1 % dermatomyositis) of 3,000 patients, then broken on purpose."""
    folder = tmp_path_factory.mktemp("population") / "export"
    stats = _populations().write_population("c", 3000, folder)
    assert stats.dm_patients == 30
    _break(folder)
    return folder


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _break(folder: Path) -> None:
    obs = folder / "Observation.000.ndjson"
    lines = _lines(obs)
    lines[1499] = b'{"resourceType": "Observation", "id": "cut-he\n'  # a line cut short, deep in the file
    lines[2999] = b"[1, 2, 3]\n"  # JSON, but not a resource
    lines.insert(4000, b"\n")  # a blank line: not a problem, but it counts for the lines after it
    lines.insert(5000, b'{"id": "no-type"}\n')
    lines[-20] = b"{broken\n"  # in the file's last Spark block
    # Lines cut short after their subject, a candidate's and a non-candidate's: every line is parsed,
    # so both are reported, by either engine.
    lines.insert(6000, b'{"resourceType":"Observation","subject":{"reference":"Patient/p0000200"},"id":"c\n')
    lines.insert(6001, b'{"resourceType":"Observation","subject":{"reference":"Patient/p0000201"},"id":"c\n')
    obs.write_bytes(b"".join(lines))
    patients = folder / "Patient.000.ndjson"
    # A candidate whose Patient resource is missing (p0000100 has dermatomyositis: every hundredth does).
    patients.write_bytes(b"".join(line for line in _lines(patients) if b'"p0000100"' not in line))
    conditions = folder / "Condition.000.ndjson"
    orphan = condition(DM)
    orphan.pop("subject")
    orphan["id"] = "orphan-dm"
    conditions.write_bytes(conditions.read_bytes() + (json.dumps(orphan) + "\n").encode())

    extra = folder / "extra"
    good = for_patient(baseline(), "zz-bom")
    write(extra / "bom.ndjson", b"\xef\xbb\xbf" + ndjson_lines(good).encode())
    write(
        extra / "gz" / "good.ndjson.gz",
        gzip.compress(ndjson_lines(for_patient(baseline(), "zz-gz")).encode()),
    )
    write(extra / "gz" / "truncated.ndjson.gz", gzip.compress(ndjson_lines(good).encode())[:300])
    write(extra / "binary.ndjson", b"\x00\x01\x02garbage\n{}\n")
    write(
        extra / "misnamed-gzip.ndjson",
        gzip.compress(ndjson_lines(for_patient(baseline(), "zz-mis")).encode()),
    )
    write(extra / "_hidden.ndjson", ndjson_lines(for_patient(baseline(), "zz-hidden")))
    write(extra / ".dotted.ndjson", ndjson_lines(for_patient(baseline(), "zz-dotted")))
    write(extra / "empty.json", b"")
    write(extra / "empty.ndjson", b"")
    write(extra / "not-fhir.json", "[1, 2]")
    write(extra / "truncated.json", '{"resourceType": "Bundle", "entry": [')
    write(extra / "odd [name] é.ndjson", ndjson_lines(for_patient(baseline(), "zz-odd")))
    # A Bundle on one NDJSON line, with an entry that is not a resource.
    line_bundle = bundle(for_patient(baseline(), "zz-line"), refs="relative")
    line_bundle["entry"].append({"resource": {"id": "x"}})
    write(extra / "bundles.ndjson", json.dumps(line_bundle) + "\n")
    # The same patient as a Bundle and as NDJSON: the first copy read wins, duplicates count once.
    dup = for_patient(baseline(), "zz-dup")
    write(extra / "dup" / "a.json", bundle(dup, refs="relative"))
    write(extra / "dup" / "b.ndjson", ndjson_lines(dup))
    # A bulk Medication file a MedicationRequest references, read twice: the newer copy wins.
    med = medication("pred5", "Prednisone oral tablet", strength_mg=5)
    order = med_request(
        dose=6,
        unit="{tbl}",
        pid="zz-med",
        id="zz-med-rx",
        medication={"medicationReference": {"reference": "Medication/pred5"}},
    )
    write(
        extra / "med" / "Medication.000.ndjson",
        ndjson_lines([dict(med, code={"text": "old"}, meta={"versionId": "1"})]),
    )
    write(extra / "med" / "Medication.001.ndjson", ndjson_lines([dict(med, meta={"versionId": "2"})]))
    # And a third copy that differs with nothing to order it: kept out, and reported by both engines.
    write(extra / "med" / "Medication.002.ndjson", ndjson_lines([dict(med, code={"text": "third"})]))
    write(extra / "med" / "Patient.ndjson", ndjson_lines([*for_patient(baseline(), "zz-med"), order]))
    # A resource of a type no criterion reads, without a patient: skipped without a problem, as locally.
    write(extra / "other.ndjson", json.dumps({"resourceType": "Basic", "id": "b1"}) + "\n")
    # Resources of patients the input holds no Patient for, no gate admitting them: counted, as locally.
    ghosts = [
        {
            "resourceType": "Observation",
            "id": f"g{n}",
            "status": "final",
            "subject": {"reference": f"Patient/zz-ghost{n}"},
        }
        for n in (1, 2, 2)
    ]
    write(extra / "ghosts.ndjson", ndjson_lines(ghosts))


def test_population_with_bad_inputs_gives_the_local_results(
    spark: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path, population: Path
) -> None:
    missing = tmp_path / "no-such-export"
    with small_blocks(spark, 16 * 1024 * 1024):  # several blocks per file: line numbers cross blocks
        local, other = screen_both(capsys, tmp_path, population, missing, *BOTH_TRIALS)
    assert local.code == 3
    assert_same(local, other)
    errors = local.results["NCT05495321"]["errors"]
    where = {(e["file"].replace(str(population), "X"), e.get("line")) for e in errors}
    # The faults planted above are all there (so the comparison compared something).
    assert ("X/Observation.000.ndjson", 1500) in where
    assert ("X/Observation.000.ndjson", 5001) in where
    assert ("X/Observation.000.ndjson", 6001) in where and ("X/Observation.000.ndjson", 6002) in where
    assert max(line or 0 for file, line in where if file == "X/Observation.000.ndjson") > 100_000
    assert ("(input)", None) in where  # Patient/p0000100 is referenced but not in the input
    assert ("X/extra/binary.ndjson", None) in where
    assert any("has no patient reference" in e["reason"] for e in errors)
    assert any("have resources but no Patient resource in the input" in e["reason"] for e in errors)
    assert any(e["reason"].startswith("Medication/pred5: copies of it differ") for e in errors)
    subjects = {s["patient"] for s in local.results["NCT05495321"]["subjects"]}
    assert {"Patient/zz-hidden", "Patient/zz-dotted", "Patient/zz-mis", "Patient/zz-odd"} <= subjects
    assert len(subjects) > 3000


def test_part_of_the_population_with_spark_s_default_blocks_gives_the_local_results(
    spark: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path, population: Path
) -> None:
    local, other = screen_both(capsys, tmp_path, population / "extra", population / "Patient.000.ndjson")
    assert_same(local, other)


def test_a_gate_everyone_passes_screens_every_patient_alike(
    spark: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path, population: Path
) -> None:
    trial = REPO / "tests" / "data" / "trials" / "TEST-ADULTS.toml"
    sample = tmp_path / "sample"
    sample.mkdir()
    for path in population.glob("*.000.ndjson"):
        shutil.copy(path, sample / path.name)
    local, other = screen_both(capsys, tmp_path, sample, "--trial", trial)
    assert_same(local, other)
    assert len(local.results["TEST-ADULTS"]["subjects"]) >= 2999


def test_a_run_of_good_inputs_exits_0_and_its_parts_merge_again(
    spark: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    local, other = screen_both(capsys, tmp_path, EXAMPLES)
    assert local.code == other.code == 0
    again = tmp_path / "again.json"
    assert main(["merge-results", str(tmp_path / "spark"), "--out", str(again)]) == 0
    merged = json.loads(again.read_text(encoding="utf-8"))
    assert merged["subjects"] == other.results["NCT05495321"]["subjects"]
    # A second run into the same folder replaces the first: one manifest, the parts it names, no others.
    folder = tmp_path / "spark"
    assert (
        main(["screen", "--engine", "spark", str(EXAMPLES), "--as-of", AS_OF, "--out-dir", str(folder)]) == 0
    )
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert [p.name for p in folder.glob("parts-*")] == [manifest["studies"][0]["parts"].split("/")[0]]
