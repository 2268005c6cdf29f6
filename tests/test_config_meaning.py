"""Mappings that load but cannot mean what their author meant are refused at load, naming the file and
the key: a comparison no value of its fact can match, a fact parameter naming a fact of the wrong kind, a
code prefix that matches everything, defaults for a kind that does not exist, aliases and conversions
that would be ignored or would silently change meaning. And what an overlay may change in units."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from fhirdata import DM_GATE_TRIAL, REPO

from fhir_adapter.config import kinds
from fhir_adapter.config.loader import load_mappings, load_trials
from fhir_adapter.errors import ConfigError
from fhir_adapter.facts import units
from fhir_adapter.facts.derive import KINDS

# The dermatomyositis gate, and one criterion to probe.
TRIAL = (
    DM_GATE_TRIAL.replace("{", "{{").replace("}", "}}")
    + """[[criteria]]
id = "probe"
type = "exclusion"
rule = {rule}
"""
)


def _trial(tmp_path: Path, rule: str) -> Path:
    path = tmp_path / "TEST-1.toml"
    path.write_text(TRIAL.format(rule=rule), encoding="utf-8")
    return path


def _refused(trial: Path | None = None, overlay: str | None = None, tmp_path: Path | None = None) -> str:
    overlays = []
    if overlay is not None:
        assert tmp_path is not None
        overlays.append(tmp_path / "site.toml")
        overlays[0].write_text(overlay, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_trials([str(trial)] if trial else [], overlays)
    return str(caught.value)


def test_every_fact_kind_declares_what_its_value_is() -> None:
    assert set(kinds.VALUES) == set(KINDS)


@pytest.mark.parametrize(
    ("rule", "said"),
    [
        (
            '{ fact = "sex", op = "==", value = "femal" }',
            "a fact of kind sex is one of 'female', 'male', never 'femal'",
        ),
        ('{ fact = "sex", op = "!=", value = "Female" }', "never 'Female'"),
        ('{ fact = "age", op = "==", value = "old" }', "a fact of kind age-years is a number, never 'old'"),
        ('{ fact = "age", op = "==", value = true }', "never true"),
        (
            '{ fact = "malignancy", op = "==", value = "true" }',
            "a fact of kind condition is true or false, never 'true'",
        ),
        ('{ fact = "malignancy", op = "==", value = 1 }', "never 1"),
        (
            '{ fact = "hbsag-positive", op = "==", value = "positive" }',
            "a fact of kind qualitative is true or false",
        ),
    ],
)
def test_a_comparison_no_value_of_its_fact_can_match_is_refused(tmp_path: Path, rule: str, said: str) -> None:
    trial = _trial(tmp_path, rule)
    message = _refused(trial)
    assert message.startswith(f"{trial}: criteria[1](probe).rule.value: ") and said in message


def test_a_wrong_value_inside_a_component_or_applies_when_is_refused_there(tmp_path: Path) -> None:
    trial = _trial(tmp_path, '{ verdict = "not-evaluable" }')
    trial.write_text(
        trial.read_text() + 'applies_when = { fact = "sex", op = "==", value = "F" }\n', encoding="utf-8"
    )
    assert f"{trial}: criteria[1](probe).applies_when.value: a fact of kind sex" in _refused(trial)


@pytest.mark.parametrize(
    "rule",
    [
        '{ fact = "sex", op = "==", value = "female" }',
        '{ fact = "sex", op = "!=", value = "male" }',
        '{ fact = "age", op = "==", value = 40 }',
        '{ fact = "malignancy", op = "!=", value = false }',
        '{ fact = "immunosuppressants-taken", op = "<=", value = "2" }',
    ],
)
def test_comparisons_a_value_can_match_still_load(tmp_path: Path, rule: str) -> None:
    (loaded,) = load_trials([str(_trial(tmp_path, rule))])
    assert loaded.trial.criteria[1].id == "probe"


def test_a_sex_parameter_naming_a_fact_that_is_not_a_sex_is_refused(tmp_path: Path) -> None:
    message = _refused(overlay='[facts.creatinine-clearance]\nsex_fact = "age"\n', tmp_path=tmp_path)
    assert (
        f"{tmp_path / 'site.toml'}: facts.creatinine-clearance.sex_fact: 'age' is a fact of kind age-years"
        in message
    )
    assert "sex_fact needs one of 'female', 'male'" in message


def test_a_weight_parameter_naming_a_true_or_false_fact_is_refused(tmp_path: Path) -> None:
    message = _refused(
        overlay='[facts.creatinine-clearance]\nweight_fact = "malignancy"\n', tmp_path=tmp_path
    )
    assert (
        "facts.creatinine-clearance.weight_fact: 'malignancy' is a fact of kind condition (true or false)"
        in message
    )
    assert "weight_fact needs a number" in message


def test_an_overlay_cannot_change_a_facts_kind(tmp_path: Path) -> None:
    message = _refused(overlay='[facts.hemoglobin]\nkind = "uln-ratio"\n', tmp_path=tmp_path)
    assert (
        f"{tmp_path / 'site.toml'}: facts.hemoglobin.kind: an overlay changes a fact's parameters" in message
    )
    assert "('measurement' in" in message


def test_an_overlay_may_restate_a_facts_kind_while_changing_its_window(tmp_path: Path) -> None:
    overlay = tmp_path / "site.toml"
    overlay.write_text('[facts.hemoglobin]\nkind = "measurement"\nwindow_days = 7\n', encoding="utf-8")
    assert load_mappings(overlays=[overlay]).facts["hemoglobin"].get("window_days") == 7


@pytest.mark.parametrize("code", ["http://hl7.org/fhir/sid/icd-10|*", "http://www.whocc.no/atc|*"])
def test_a_prefix_of_nothing_which_matches_every_code_is_refused(tmp_path: Path, code: str) -> None:
    message = _refused(overlay=f'[concepts.malignancy]\ncodes = ["{code}"]\n', tmp_path=tmp_path)
    assert "concepts.malignancy.codes: prefix" in message and "would match every code" in message


def _mappings_copy(tmp_path: Path, facts_extra: str) -> Path:
    folder = tmp_path / "mappings"
    (folder / "criteria").mkdir(parents=True)
    for path in (REPO / "mappings").rglob("*.toml"):
        target = folder / path.relative_to(REPO / "mappings")
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    facts = folder / "facts.toml"
    facts.write_text(facts_extra + facts.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("defaults", "said"),
    [
        (
            '[defaults.qualitativ]\npositive_concept = "result-positive"\n',
            "defaults: 'qualitativ' is not one of",
        ),
        (
            '[defaults.condition]\npositive_concpt = "result-positive"\n',
            "defaults.condition: Unevaluated",
        ),
        ('[defaults.condition]\nwindow_days = "ninety"\n', "defaults.condition.window_days: 'ninety'"),
    ],
)
def test_defaults_for_an_unknown_kind_or_parameter_are_refused(
    tmp_path: Path, defaults: str, said: str
) -> None:
    folder = _mappings_copy(tmp_path, defaults)
    with pytest.raises(ConfigError) as caught:
        load_mappings(folder)
    assert str(caught.value).startswith(f"{folder / 'facts.toml'}: ") and said in str(caught.value)


# -- units ---------------------------------------------------------------------------------------------------
def test_g_l_in_mixed_case_is_neither_grams_nor_giga_per_litre() -> None:
    table = load_mappings().units
    assert units.normalise_unit(table, "G/L") == "10*9/L"
    assert units.normalise_unit(table, "g/l") == "g/L"
    # "G/l" is one of both case-insensitively: it stays itself, which no fact's unit is (unknown)
    assert units.normalise_unit(table, "G/l") == "G/l"
    assert units.factor(table, "G/l", "g/L", "hemoglobin") is None
    assert units.normalise_unit(table, "MG/DL") == "mg/dL"


def test_an_overlay_cannot_change_what_a_shipped_alias_means(tmp_path: Path) -> None:
    message = _refused(overlay='[units.aliases]\n"K/uL" = "10*9/L"\n', tmp_path=tmp_path)
    assert "units.aliases.K/uL: already an alias of '10*3/uL' in" in message
    assert str(REPO / "mappings" / "units.toml") in message


def test_an_overlay_may_repeat_a_shipped_alias_and_add_new_ones(tmp_path: Path) -> None:
    overlay = tmp_path / "site.toml"
    overlay.write_text('[units.aliases]\n"K/uL" = "10*3/uL"\n"Tsd/uL" = "10*3/uL"\n', encoding="utf-8")
    table = load_mappings(overlays=[overlay]).units
    assert units.normalise_unit(table, "Tsd/uL") == "10*3/uL"


def test_an_alias_of_an_alias_is_refused_because_it_is_followed_one_step_only(tmp_path: Path) -> None:
    message = _refused(overlay='[units.aliases]\n"kU/L" = "IU/L"\n', tmp_path=tmp_path)
    assert "units.aliases.kU/L: 'IU/L' is itself an alias (of 'U/L'); give the code it means" in message


def test_a_conversion_from_an_alias_which_no_value_would_reach_is_refused(tmp_path: Path) -> None:
    overlay = (
        '[[units.conversions]]\nfrom = "mg/dl"\nto = "mmol/L"\nfactor = "0.0555"\nconcepts = ["hemoglobin"]\n'
    )
    message = _refused(overlay=overlay, tmp_path=tmp_path)
    assert "units.conversions (mg/dl -> mmol/L).from: 'mg/dl' is an alias of 'mg/dL'" in message


def test_an_overlay_conversion_with_the_same_units_and_analytes_replaces_the_shipped_factor(
    tmp_path: Path,
) -> None:
    overlay = tmp_path / "site.toml"
    overlay.write_text(
        '[[units.conversions]]\nfrom = "mg/dL"\nto = "umol/L"\nfactor = "88.4"\nconcepts = ["creatinine"]\n',
        encoding="utf-8",
    )
    table = load_mappings(overlays=[overlay]).units
    assert units.factor(table, "mg/dL", "umol/L", "creatinine") == Decimal("88.4")
    # bilirubin's own conversion is untouched
    assert units.factor(table, "mg/dL", "umol/L", "total-bilirubin") == Decimal("17.104")
    assert units.factor(load_mappings().units, "mg/dL", "umol/L", "creatinine") == Decimal("88.42")


@pytest.mark.parametrize(
    "conversion",
    [
        # for every analyte, so for creatinine too: which factor would apply?
        'from = "mg/dL"\nto = "umol/L"\nfactor = "88.4"\n',
        # the same pair the other way round
        'from = "umol/L"\nto = "mg/dL"\nfactor = "0.0113"\nconcepts = ["creatinine"]\n',
        # overlapping analytes
        'from = "mg/dL"\nto = "umol/L"\nfactor = "88.4"\nconcepts = ["creatinine", "ck"]\n',
    ],
)
def test_a_conversion_that_would_compete_with_another_for_one_value_is_refused(
    tmp_path: Path, conversion: str
) -> None:
    message = _refused(overlay=f"[[units.conversions]]\n{conversion}", tmp_path=tmp_path)
    assert f"{tmp_path / 'site.toml'}: units.conversions (" in message
    assert "already converts between these units for the same analytes" in message


def test_an_overlay_with_thousands_of_conversions_loads_rather_than_hangs(tmp_path: Path) -> None:
    # Conversions are compared within their pair of units: comparing every pair took 97 s for these 20,000.
    overlay = tmp_path / "site.toml"
    overlay.write_text(
        "".join(f'[[units.conversions]]\nfrom = "u{i}"\nto = "v{i}"\nfactor = "2"\n' for i in range(20_000)),
        encoding="utf-8",
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from fhir_adapter.config.loader import load_mappings as m; from pathlib import Path; m(overlays=[Path({str(overlay)!r})])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
