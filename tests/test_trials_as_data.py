"""Trials are data: which trial is a parameter, a trial's gate decides its candidates whatever the disease,
several trials share one read of the input, a criteria file brings its own concepts and facts, and no
Python file of the package names a trial or a criterion."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import tomllib
from pathlib import Path

import pytest
from fhirdata import (
    DM,
    HEART_FAILURE,
    HGB,
    REPO,
    bundle,
    condition,
    observation,
    patient,
    record,
)

from fhir_adapter.cli import main
from fhir_adapter.config.loader import load_mappings, load_trials
from fhir_adapter.errors import ConfigError
from fhir_adapter.screening import Screener

TRIALS = REPO / "tests" / "data" / "trials"
HEART = str(TRIALS / "TEST-HEART.toml")
ADULTS = str(TRIALS / "TEST-ADULTS.toml")
SHIPPED = sorted((REPO / "mappings" / "criteria").glob("*.toml"))
AS_OF = "2026-06-15"


def cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, err.getvalue()


def write_patients(folder: Path) -> Path:
    """p-dm: dermatomyositis; p-hf: heart failure and a high HbA1c; p-none: neither."""
    folder.mkdir(parents=True, exist_ok=True)
    people = {
        "p-dm": [patient(id="p-dm"), condition(DM, "Dermatomyositis", pid="p-dm", id="c-dm")],
        "p-hf": [
            patient(id="p-hf"),
            condition(HEART_FAILURE, "Heart failure", pid="p-hf", id="c-hf"),
            observation(("http://loinc.org", "4548-4"), 7.1, "%", pid="p-hf", id="o-a1c"),
        ],
        "p-none": [patient(id="p-none"), observation(HGB, 75, "g/L", pid="p-none", id="o-hgb")],
    }
    for pid, resources in people.items():
        (folder / f"{pid}.json").write_text(json.dumps(bundle(resources)), encoding="utf-8")
    return folder


def subjects(path: Path) -> dict[str, dict[str, object]]:
    return {s["patient"]: s for s in json.loads(path.read_text(encoding="utf-8"))["subjects"]}


# -- the trial is a parameter --------------------------------------------------------------------------
def test_the_default_trial_comes_from_mappings_trials_toml() -> None:
    default = tomllib.loads((REPO / "mappings" / "trials.toml").read_text())["default"]
    assert load_mappings().trial.study == default


def test_an_unknown_trial_names_the_folder_and_the_known_trials() -> None:
    with pytest.raises(ConfigError) as caught:
        load_mappings(trial="NCT00000000")
    message = str(caught.value)
    assert "NCT00000000" in message and all(p.stem in message for p in SHIPPED)


def test_a_trial_whose_gate_is_not_dermatomyositis_screens_its_own_candidates(tmp_path: Path) -> None:
    folder = write_patients(tmp_path / "in")
    out = tmp_path / "heart.json"

    code, err = cli("screen", str(folder), "--trial", HEART, "--as-of", AS_OF, "--out", str(out))

    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["study"] == "TEST-HEART" and result["title"].startswith("Synthetic")
    by_patient = subjects(out)
    hf = by_patient["Patient/p-hf"]
    assert [c["id"] for c in hf["criteria"]] == ["heart-failure-diagnosis", "adult", "poor-glucose-control"]
    assert hf["status"] == "ineligible"  # HbA1c 7.1 %: the trial's own concept and fact decided it
    for other in ("Patient/p-dm", "Patient/p-none"):
        only = by_patient[other]["criteria"]
        assert [c["id"] for c in only] == ["heart-failure-diagnosis"]
        assert only[0]["verdict"] == "not-met"
        assert "no heart failure diagnosis among" in only[0]["reason"]


def test_several_trials_read_the_input_once_and_write_one_result_each(tmp_path: Path) -> None:
    folder = write_patients(tmp_path / "in")
    out_dir = tmp_path / "out"

    code, err = cli(
        "screen",
        str(folder),
        "--trial",
        "NCT05495321",
        "--trial",
        HEART,
        "--as-of",
        AS_OF,
        "--out-dir",
        str(out_dir),
    )

    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "NCT05495321.html",
        "NCT05495321.json",
        "TEST-HEART.html",
        "TEST-HEART.json",
    ]
    dm_trial, heart_trial = subjects(out_dir / "NCT05495321.json"), subjects(out_dir / "TEST-HEART.json")
    assert len(dm_trial["Patient/p-dm"]["criteria"]) > 1  # a DM candidate ...
    assert len(heart_trial["Patient/p-dm"]["criteria"]) == 1  # ... but not a heart-failure one
    assert len(dm_trial["Patient/p-hf"]["criteria"]) == 1
    assert "Read 7 resource(s)." in err  # one read of the input for both trials


def test_several_trials_need_an_output_folder(tmp_path: Path) -> None:
    folder = write_patients(tmp_path / "in")
    code, err = cli(
        "screen", str(folder), "--trial", "NCT05495321", "--trial", HEART, "--out", str(tmp_path / "x.json")
    )
    assert code == 2 and "--out-dir" in err


def test_a_gate_every_patient_may_pass_screens_everyone_fully(tmp_path: Path) -> None:
    folder = write_patients(tmp_path / "in")
    out = tmp_path / "adults.json"
    screener = Screener(load_trials([ADULTS]), __import__("datetime").date(2026, 6, 15))
    assert screener.gate.everyone  # the gate reads the Patient resource: no prefilter is possible

    code, err = cli("screen", str(folder), "--trial", ADULTS, "--as-of", AS_OF, "--out", str(out))

    assert code == 0, err
    by_patient = subjects(out)
    assert {len(s["criteria"]) for s in by_patient.values()} == {2}
    assert by_patient["Patient/p-none"]["status"] == "ineligible"  # hemoglobin 75 g/L, read in full


def test_the_dermatomyositis_gate_prefilters_on_its_conditions_only() -> None:
    gate = Screener(load_trials(["NCT05495321"]), __import__("datetime").date(2026, 6, 15)).gate
    assert not gate.everyone
    assert gate.types == {"Condition"}
    assert gate.admits(condition(DM)) and not gate.admits(condition(HEART_FAILURE))


# -- criteria files bring their own concepts and facts, never redefine shared ones ----------------------
def test_a_criteria_file_cannot_redefine_a_shared_concept(tmp_path: Path) -> None:
    trial = tmp_path / "T.toml"
    trial.write_text(
        (TRIALS / "TEST-HEART.toml").read_text().replace("[concepts.test-hba1c]", "[concepts.ck]"),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_trials([str(trial)])
    assert f"{trial}: concepts.ck: already defined in" in str(caught.value)


def test_an_overlay_extends_a_concept_a_criteria_file_defined(tmp_path: Path) -> None:
    overlay = tmp_path / "site.toml"
    overlay.write_text('[concepts.test-hba1c]\ncodes = ["http://hospital.example.org/lis|A1C"]\n')
    (heart,) = load_trials([HEART], [overlay])
    assert ("http://hospital.example.org/lis", "A1C") in heart.concepts["test-hba1c"].codes


def test_facts_that_depend_on_each_other_in_a_cycle_are_refused(tmp_path: Path) -> None:
    overlay = tmp_path / "site.toml"
    overlay.write_text('[facts.body-weight]\nweight_fact = "creatinine-clearance"\n')
    with pytest.raises(ConfigError) as caught:
        load_mappings(overlays=[overlay])
    assert "depend on each other" in str(caught.value) and "body-weight" in str(caught.value)


def test_a_fact_missing_a_parameter_its_kind_needs_names_file_and_key(tmp_path: Path) -> None:
    trial = tmp_path / "T.toml"
    trial.write_text(
        (TRIALS / "TEST-HEART.toml").read_text().replace('unit = "%"\n', ""),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_trials([str(trial)])
    assert f"{trial}: facts.test-hba1c" in str(caught.value) and "'unit' is a required property" in str(
        caught.value
    )


# -- no Python file of the package names a trial or a criterion --------------------------------------------
def _criterion_ids() -> set[str]:
    ids: set[str] = set()
    for path in SHIPPED:
        for criterion in tomllib.loads(path.read_text(encoding="utf-8"))["criteria"]:
            ids.add(criterion["id"])
            ids.update(c["id"] for c in criterion.get("components", []))
    return ids


def _fhir_keys(tree: ast.AST) -> set[int]:
    """ids of string constants used as a FHIR JSON key: ``x["diagnosis"]`` or ``x.get("diagnosis")``."""
    keys: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            keys.add(id(node.slice))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            keys.add(id(node.args[0]))
    return keys


def test_no_python_file_names_a_trial_or_a_criterion_id() -> None:
    trial_ids = {path.stem for path in SHIPPED}
    criterion_ids = _criterion_ids()
    assert {"age", "diagnosis", "stable-therapy", "bmi", "csm-enzymes"} <= criterion_ids  # the check is real
    offenders = []
    for path in sorted((REPO / "fhir_adapter").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.name}: {t}" for t in trial_ids if t in text]
        tree = ast.parse(text)
        keys = _fhir_keys(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in criterion_ids
                and id(node) not in keys  # "diagnosis" is also an Encounter element
            ):
                offenders.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert offenders == []


def test_the_shipped_record_reads_every_trial_the_same_way() -> None:
    # One record, both shipped trials: the facts are derived once and judged by each trial.
    trials = load_trials([p.stem for p in SHIPPED])
    results = Screener(trials, __import__("datetime").date(2026, 6, 15)).screen(
        record(patient(), condition(DM, "Dermatomyositis"))
    )
    assert [r.patient for r in results] == ["Patient/p1"] * len(SHIPPED)
    assert all(r.gate_met for r in results)
