"""mappings/ loads and validates; a bad file fails naming the file and the key; site overlays (spec 4)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fhirdata import (
    DM,
    MMT8,
    PGA,
    REPO,
    Res,
    condition,
    normal_labs,
    observation,
    patient,
    screen,
    verdict,
    weight,
)

from fhir_adapter.config.loader import load_mappings
from fhir_adapter.config.types import Mappings
from fhir_adapter.errors import ConfigError

SPEC_CRITERIA = [
    ("age", "inclusion"),
    ("diagnosis", "inclusion"),
    ("active-disease", "inclusion"),
    ("glucocorticoid-dose", "inclusion"),
    ("immunosuppressant-stable", "inclusion"),
    ("consent", "inclusion"),
    ("contraception", "inclusion"),
    ("iv-glucocorticoid", "exclusion"),
    ("heart-failure", "exclusion"),
    ("renal-insufficiency", "exclusion"),
    ("liver-insufficiency", "exclusion"),
    ("anemia", "exclusion"),
    ("thrombocytopenia", "exclusion"),
    ("other-ctd-or-tumor", "exclusion"),
    ("drug-allergy", "exclusion"),
    ("infection", "exclusion"),
    ("hepatitis-serology", "exclusion"),
    ("mental-illness", "exclusion"),
]
SPEC_CONCEPTS = [
    "ck",
    "aldolase",
    "ldh",
    "alt",
    "ast",
    "hemoglobin",
    "platelets",
    "total-bilirubin",
    "creatinine",
    "creatinine-clearance",
    "body-weight",
    "hbsag",
    "anti-hcv",
    "nyha-class",
    "mmt8",
    "pga",
    "phga",
    "haq",
    "extramuscular-vas",
    "cutaneous-vas",
]

LOCAL_MMT8 = "http://hospital.example.org/fhir/CodeSystem/myositis|MMT8"
SPEC_OVERLAY = """\
[concepts.mmt8]
codes = ["http://hospital.example.org/fhir/CodeSystem/myositis|MMT8"]
text = ["manual muscle test"]
"""


# --- the shipped files --------------------------------------------------------------------------------
def test_shipped_mappings_define_exactly_the_spec_criteria_in_order(mappings: Mappings) -> None:
    assert [(c.id, c.type) for c in mappings.trial.criteria] == SPEC_CRITERIA
    assert mappings.trial.study == "NCT05495321"


def test_shipped_mappings_define_every_spec_concept(mappings: Mappings) -> None:
    missing = [c for c in SPEC_CONCEPTS if c not in mappings.concepts]
    assert not missing


def test_shipped_mappings_define_the_active_disease_components(mappings: Mappings) -> None:
    active = next(c for c in mappings.trial.criteria if c.id == "active-disease")
    assert {c.id for c in active.components} == {
        "mmt8",
        "cutaneous-vas",
        "csm-pga",
        "csm-phga",
        "csm-haq",
        "csm-enzymes",
        "csm-extramuscular",
    }


def test_shipped_mappings_have_the_spec_windows(mappings: Mappings) -> None:
    facts = mappings.facts
    assert facts["hemoglobin"].get("window_days") == 90
    assert facts["mmt8"].get("window_days") == 90
    assert facts["body-weight"].get("window_days") == 365
    assert facts["hbsag-positive"].get("window_days") == 365
    assert facts["glucocorticoid-mg-kg-day"].get("window_days") == 28
    assert facts["immunosuppressant-started"].get("window_days") == 84
    assert facts["immunosuppressant-dose-changed"].get("window_days") == 28
    assert facts["infection-hospitalisation"].get("window_months") == 2
    assert facts["iv-antibacterial"].get("window_months") == 2


def test_shipped_glucocorticoid_factors_match_spec_section_6(mappings: Mappings) -> None:
    factors = {g.name: str(g.factor) for g in mappings.medications.glucocorticoids}
    assert factors == {
        "prednisone": "1",
        "prednisolone": "1",
        "methylprednisolone": "1.25",
        "triamcinolone": "1.25",
        "hydrocortisone": "0.25",
        "cortisone": "0.2",
        "dexamethasone": "6.67",
        "betamethasone": "8.33",
        "deflazacort": "0.83",
    }


def test_loading_records_the_files_and_a_fingerprint(mappings: Mappings) -> None:
    assert any(f.endswith("concepts.toml") for f in mappings.files)
    assert mappings.fingerprint.startswith(mappings.trial.version + "+")


# --- bad files ----------------------------------------------------------------------------------------
def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"fixture drift: {old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


BAD_FILES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    # name: (file, old, new, phrases the error must contain besides the file name)
    "unknown-key-in-concept": (
        "concepts.toml",
        "[concepts.ck]\n",
        '[concepts.ck]\ncolour = "red"\n',
        ("concepts.ck", "colour"),
    ),
    "bad-op-in-rule": (
        "criteria/NCT05495321.toml",
        'fact = "hemoglobin", op = "<"',
        'fact = "hemoglobin", op = "=<"',
        ("rule.op", "=<"),
    ),
    "unknown-fact-in-rule": (
        "criteria/NCT05495321.toml",
        'fact = "hemoglobin", op = "<"',
        'fact = "haemoglobin", op = "<"',
        ("anemia", "rule.fact", "haemoglobin"),
    ),
    "unknown-concept-in-fact": (
        "facts.toml",
        'concept = "hemoglobin"',
        'concept = "haemoglobin"',
        ("facts.hemoglobin.concept", "haemoglobin"),
    ),
    "prefix-code-on-snomed": (
        "concepts.toml",
        '"http://snomed.info/sct|396230008"',
        '"http://snomed.info/sct|3962*"',
        ("concepts.dermatomyositis.codes", "3962*"),
    ),
    "toml-syntax-error": ("concepts.toml", "[concepts.ck]", "[concepts.ck", ("not valid TOML", "line")),
    "unknown-fact-kind": (
        "facts.toml",
        'kind = "measurement"\nlabel = "hemoglobin"',
        'kind = "measurment"\nlabel = "hemoglobin"',
        ("facts.hemoglobin.kind", "measurment"),
    ),
    "code-without-system": (
        "concepts.toml",
        '"http://loinc.org|2157-6"',
        '"2157-6"',
        ("concepts.ck.codes", "2157-6"),
    ),
    "non-numeric-unit-factor": ("units.toml", 'factor = "60"', 'factor = "sixty"', ("conversions", "sixty")),
    "non-numeric-glucocorticoid-factor": (
        "medications.toml",
        'factor = "1.25"',
        'factor = "abc"',
        ("glucocorticoids.methylprednisolone.factor",),
    ),
    "duplicate-criterion-id": ("criteria/NCT05495321.toml", 'id = "anemia"', 'id = "age"', ("duplicate",)),
    "unknown-component": (
        "criteria/NCT05495321.toml",
        '{ component = "csm-haq" }',
        '{ component = "csm-haq2" }',
        ("active-disease", "csm-haq2"),
    ),
    "at-least-more-than-items": (
        "criteria/NCT05495321.toml",
        "{ at_least = 2,",
        "{ at_least = 7,",
        ("at_least", "7"),
    ),
    "unknown-include": (
        "concepts.toml",
        'include = ["infection-current"]',
        'include = ["infection-curent"]',
        ("concepts.infection-any.include", "infection-curent"),
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_mapping_file_fails_naming_the_file_and_the_key(tmp_path: Path, case: str) -> None:
    file, old, new, phrases = BAD_FILES[case]
    base = _copy(tmp_path)
    _edit(base / file, old, new)
    with pytest.raises(ConfigError) as err:
        load_mappings(base)
    message = str(err.value)
    assert str(base / file) in message
    for phrase in phrases:
        assert phrase in message, message


def test_missing_mapping_file_is_named(tmp_path: Path) -> None:
    base = _copy(tmp_path)
    (base / "units.toml").unlink()
    with pytest.raises(ConfigError, match=r"units\.toml: file not found"):
        load_mappings(base)


def test_non_numeric_threshold_for_a_numeric_fact_fails_at_load(tmp_path: Path) -> None:
    base = _copy(tmp_path)
    _edit(base / "criteria/NCT05495321.toml", 'op = "<", value = 80 }', 'op = "<", value = "eighty" }')
    with pytest.raises(ConfigError, match="anemia"):
        load_mappings(base)


# --- site overlays ------------------------------------------------------------------------------------
def _local_mmt8(value: float = 100) -> Res:
    obs = observation(MMT8, value)
    obs["code"] = {"coding": [{"system": LOCAL_MMT8.split("|")[0], "code": "MMT8"}]}
    return obs


def _dm_with(*obs: Res) -> list[Res]:
    return [patient(), condition(DM), *normal_labs(), weight(), *obs]


def _overlay(tmp_path: Path, text: str, name: str = "site.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_local_mmt8_code_is_unknown_without_the_overlay(mappings: Mappings) -> None:
    assert verdict(screen(*_dm_with(_local_mmt8()), mappings=mappings), "active-disease", "mmt8") == "unknown"


def test_overlay_in_the_spec_format_adds_a_local_mmt8_code(tmp_path: Path) -> None:
    site = load_mappings(overlays=[_overlay(tmp_path, SPEC_OVERLAY)])
    result = screen(*_dm_with(_local_mmt8(100)), mappings=site)
    assert verdict(result, "active-disease", "mmt8") == "met"


def test_overlay_text_pattern_matches_code_text(tmp_path: Path) -> None:
    site = load_mappings(overlays=[_overlay(tmp_path, SPEC_OVERLAY)])
    obs = observation(("urn:oid:1.2.840.114350.1.13.0.1.7.2.696580", "4471"), 110)
    obs["code"]["text"] = "Manual muscle test (8 groups)"
    assert verdict(screen(*_dm_with(obs), mappings=site), "active-disease", "mmt8") == "met"


def test_overlay_keeps_the_shipped_codes(tmp_path: Path) -> None:
    site = load_mappings(overlays=[_overlay(tmp_path, SPEC_OVERLAY)])
    assert (
        verdict(screen(*_dm_with(observation(MMT8, 100)), mappings=site), "active-disease", "mmt8") == "met"
    )


def test_overlays_are_repeatable_and_all_apply(tmp_path: Path) -> None:
    pga_overlay = '[concepts.pga]\ncodes = ["http://hospital.example.org/fhir/CodeSystem/myositis|PTGA"]\n'
    site = load_mappings(
        overlays=[_overlay(tmp_path, SPEC_OVERLAY, "a.toml"), _overlay(tmp_path, pga_overlay, "b.toml")]
    )
    pga = observation(PGA, 3, "cm")
    pga["code"] = {
        "coding": [{"system": "http://hospital.example.org/fhir/CodeSystem/myositis", "code": "PTGA"}]
    }
    result = screen(*_dm_with(_local_mmt8(), pga), mappings=site)
    assert verdict(result, "active-disease", "mmt8") == "met"
    assert verdict(result, "active-disease", "csm-pga") == "met"
    assert len(site.files) == len(load_mappings().files) + 2


def test_overlay_changes_the_fingerprint(tmp_path: Path, mappings: Mappings) -> None:
    site = load_mappings(overlays=[_overlay(tmp_path, SPEC_OVERLAY)])
    assert site.fingerprint != mappings.fingerprint


def test_overlay_with_an_unknown_concept_fails_naming_it(tmp_path: Path) -> None:
    path = _overlay(tmp_path, '[concepts.mmt-8]\ncodes = ["http://x.org|1"]\n')
    with pytest.raises(ConfigError) as err:
        load_mappings(overlays=[path])
    assert str(path) in str(err.value)
    assert "concepts.mmt-8" in str(err.value) and "unknown concept" in str(err.value)


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ('[concepts.mmt8]\ncode = ["http://x.org|1"]\n', "code"),
        ('[concepts.mmt8]\ncodes = ["http://snomed.info/sct|12*"]\n', "prefix"),
        ("[concepts.mmt8\ncodes = []\n", "not valid TOML"),
        ('[concepts.mmt8]\ncodes = "http://x.org|1"\n', "codes"),
    ],
    ids=["unknown-key", "prefix-on-snomed", "toml-syntax", "codes-not-a-list"],
)
def test_bad_overlay_fails_naming_the_overlay_file(tmp_path: Path, text: str, phrase: str) -> None:
    path = _overlay(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_mappings(overlays=[path])
    assert str(path) in str(err.value)
    assert phrase in str(err.value)


def test_missing_overlay_file_fails_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.toml: file not found"):
        load_mappings(overlays=[tmp_path / "nowhere.toml"])


def test_overlay_adds_a_unit_alias(tmp_path: Path, mappings: Mappings) -> None:
    from fhirdata import PLT, baseline, without

    site = load_mappings(overlays=[_overlay(tmp_path, '[units.aliases]\n"Giga/L" = "10*9/L"\n')])
    resources = [*without(baseline(), PLT), observation(PLT, 59, "Giga/L", ucum=False)]
    assert verdict(screen(*resources, mappings=mappings), "thrombocytopenia") == "unknown"
    assert verdict(screen(*resources, mappings=site), "thrombocytopenia") == "met"


def test_overlay_changes_a_default_uln(tmp_path: Path, mappings: Mappings) -> None:
    from fhirdata import CK

    site = load_mappings(
        overlays=[_overlay(tmp_path, '[facts.ck-x-uln]\nuln = { male = "310", female = "170" }\n')]
    )
    resources = _dm_with(observation(CK, 221, "U/L"))  # 221 / 170 = 1.3 exactly; 221 / 200 = 1.105
    assert verdict(screen(*resources, mappings=mappings), "active-disease", "csm-enzymes") == "unknown"
    result = screen(*resources, mappings=site)
    assert verdict(result, "active-disease", "csm-enzymes") == "met"


def test_overlay_changes_a_window(tmp_path: Path) -> None:
    from fhirdata import HGB, baseline, days_ago, without

    site = load_mappings(overlays=[_overlay(tmp_path, "[facts.hemoglobin]\nwindow_days = 30\n")])
    resources = [*without(baseline(), HGB), observation(HGB, 79, "g/L", date=days_ago(45))]
    assert verdict(screen(*resources), "anemia") == "met"
    assert verdict(screen(*resources, mappings=site), "anemia") == "unknown"


def test_overlay_fact_with_a_bad_value_fails_naming_the_overlay(tmp_path: Path) -> None:
    path = _overlay(tmp_path, '[facts.hemoglobin]\nwindow_days = "thirty"\n')
    with pytest.raises(ConfigError) as err:
        load_mappings(overlays=[path])
    assert str(path) in str(err.value) and "facts.hemoglobin.window_days" in str(err.value)


def test_overlay_for_an_unknown_fact_fails_naming_it(tmp_path: Path) -> None:
    path = _overlay(tmp_path, "[facts.haemoglobin]\nwindow_days = 30\n")
    with pytest.raises(ConfigError) as err:
        load_mappings(overlays=[path])
    assert str(path) in str(err.value) and "facts.haemoglobin" in str(err.value)


def test_overlay_fact_with_an_unknown_concept_names_the_overlay_file(tmp_path: Path) -> None:
    path = _overlay(tmp_path, '[facts.hemoglobin]\nconcept = "haemoglobin"\n')
    with pytest.raises(ConfigError) as err:
        load_mappings(overlays=[path])
    assert str(path) in str(err.value)
    assert "facts.hemoglobin.concept" in str(err.value)
