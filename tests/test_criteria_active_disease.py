"""active-disease and each of its components (spec section 3): met = abnormal, boundaries inclusive."""

from __future__ import annotations

import pytest
from fhirdata import (
    ALDOLASE,
    ALT,
    AST,
    CK,
    CUTANEOUS,
    DM,
    EXTRAMUSCULAR,
    HAQ,
    LDH,
    MMT8,
    PGA,
    PHGA,
    Res,
    condition,
    criterion,
    days_ago,
    evidence_text,
    normal_labs,
    observation,
    patient,
    reason,
    screen,
    verdict,
    weight,
)

from fhir_adapter.model import Status


def dm_patient(gender: str = "female", *observations: Res) -> list[Res]:
    """A DM patient with normal labs and only the given activity measures."""
    return [patient("1980-03-02", gender), condition(DM), *normal_labs(gender), weight(60), *observations]


def component(gender: str, comp: str, *observations: Res) -> str:
    return verdict(screen(*dm_patient(gender, *observations)), "active-disease", comp)


def component_reason(comp: str, *observations: Res) -> str:
    return reason(screen(*dm_patient("female", *observations)), "active-disease", comp)


def test_active_disease_reports_all_seven_components() -> None:
    active = criterion(screen(*dm_patient()), "active-disease")
    assert [c.id for c in active.components] == [
        "mmt8",
        "cutaneous-vas",
        "csm-pga",
        "csm-phga",
        "csm-haq",
        "csm-enzymes",
        "csm-extramuscular",
    ]
    assert all(c.type == "component" for c in active.components)


# --- mmt8 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("score", "expected"), [(100, "met"), (125, "met"), (126, "not-met"), (150, "not-met")]
)
def test_mmt8_at_most_125_is_abnormal(score: int, expected: str) -> None:
    assert component("female", "mmt8", observation(MMT8, score)) == expected


def test_mmt8_missing_is_unknown_saying_not_recorded_in_90_days() -> None:
    assert component("female", "mmt8") == "unknown"
    assert "no MMT-8 total in the last 90 days" in component_reason("mmt8")


def test_mmt8_exactly_125_evidence_names_the_observation() -> None:
    obs = observation(MMT8, 125, id="mmt-a")
    result = screen(*dm_patient("female", obs))
    assert "Observation/mmt-a" in evidence_text(result, "active-disease", "mmt8")


def test_mmt8_valueinteger_is_read() -> None:
    obs = observation(MMT8, None, valueInteger=120)
    assert component("female", "mmt8", obs) == "met"


def test_mmt8_found_by_text_when_uncoded() -> None:
    obs = observation(("http://hospital.example.org/items", "MMT"), 110)
    obs["code"]["text"] = "Manual muscle testing (MMT-8) total"
    assert component("female", "mmt8", obs) == "met"


# --- cutaneous VAS ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [(3, "cm", "met"), (2.9, "cm", "not-met"), (30, "mm", "met"), (29, "mm", "not-met"), (5.0, "cm", "met")],
)
def test_cutaneous_vas_at_least_3_cm(value: float, unit: str, expected: str) -> None:
    assert component("female", "cutaneous-vas", observation(CUTANEOUS, value, unit)) == expected


def test_cutaneous_vas_missing_is_unknown() -> None:
    assert component("female", "cutaneous-vas") == "unknown"
    assert "MDAAT cutaneous VAS" in component_reason("cutaneous-vas")


# --- patient and physician global VAS -----------------------------------------------------------------
@pytest.mark.parametrize("code,comp", [(PGA, "csm-pga"), (PHGA, "csm-phga")])
@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [(2.0, "cm", "met"), (1.9, "cm", "not-met"), (20, "mm", "met"), (19, "mm", "not-met"), (45, "mm", "met")],
)
def test_global_vas_at_least_2_cm_in_cm_or_mm(
    code: tuple[str, str], comp: str, value: float, unit: str, expected: str
) -> None:
    assert component("female", comp, observation(code, value, unit)) == expected


def test_pga_in_mm_evidence_shows_the_converted_and_reported_value() -> None:
    result = screen(*dm_patient("female", observation(PGA, 20, "mm")))
    text = evidence_text(result, "active-disease", "csm-pga")
    assert "2 cm" in text and "reported 20 mm" in text


@pytest.mark.parametrize("code,comp", [(PGA, "csm-pga"), (PHGA, "csm-phga")])
def test_global_vas_missing_is_unknown(code: tuple[str, str], comp: str) -> None:
    assert component("female", comp) == "unknown"


def test_global_vas_without_a_unit_is_unknown_not_guessed() -> None:
    assert component("female", "csm-pga", observation(PGA, 25)) == "unknown"
    assert "has no unit" in component_reason("csm-pga", observation(PGA, 25))


# --- HAQ-DI -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"), [(0.25, "met"), (0.24, "not-met"), (0, "not-met"), (1.5, "met")]
)
def test_haq_at_least_0_25(value: float, expected: str) -> None:
    assert component("female", "csm-haq", observation(HAQ, value)) == expected


def test_haq_missing_is_unknown() -> None:
    assert component("female", "csm-haq") == "unknown"
    assert "HAQ-DI" in component_reason("csm-haq")


# --- extramuscular VAS --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [(1.0, "cm", "met"), (0.9, "cm", "not-met"), (10, "mm", "met"), (9, "mm", "not-met")],
)
def test_extramuscular_vas_at_least_1_cm(value: float, unit: str, expected: str) -> None:
    assert component("female", "csm-extramuscular", observation(EXTRAMUSCULAR, value, unit)) == expected


def test_extramuscular_missing_is_unknown() -> None:
    assert component("female", "csm-extramuscular") == "unknown"


# --- enzymes ------------------------------------------------------------------------------------------
def all_enzymes_normal(skip: tuple[str, str] | None = None) -> list[Res]:
    labs = [
        observation(CK, 100, "U/L", ref_high=200),
        observation(ALDOLASE, 5, "U/L", ref_high=7.6),
        observation(LDH, 200, "U/L", ref_high=250),
        observation(ALT, 30, "U/L", ref_high=40),
        observation(AST, 30, "U/L", ref_high=35),
    ]
    return [o for o in labs if skip is None or o["code"]["coding"][0]["code"] != skip[1]]


def test_enzymes_exactly_1_3_x_uln_from_the_reference_range_is_met() -> None:
    result = screen(*dm_patient("female", observation(CK, 260, "U/L", ref_high=200)))
    assert verdict(result, "active-disease", "csm-enzymes") == "met"
    assert "1.3 x ULN" in evidence_text(result, "active-disease", "csm-enzymes")
    assert "reference range" in evidence_text(result, "active-disease", "csm-enzymes")


def test_enzymes_just_below_1_3_x_uln_with_all_five_known_is_not_met() -> None:
    labs = [*all_enzymes_normal(skip=CK), observation(CK, 259.9, "U/L", ref_high=200)]
    assert component("female", "csm-enzymes", *labs) == "not-met"


def test_enzymes_below_1_3_with_others_missing_is_unknown() -> None:
    assert component("female", "csm-enzymes", observation(CK, 259, "U/L", ref_high=200)) == "unknown"


def test_enzymes_all_five_known_and_below_is_not_met() -> None:
    assert component("female", "csm-enzymes", *all_enzymes_normal()) == "not-met"


@pytest.mark.parametrize("code", [CK, ALDOLASE, LDH, ALT, AST], ids=["ck", "aldolase", "ldh", "alt", "ast"])
def test_enzymes_any_one_of_the_five_at_1_3_x_uln_is_met(code: tuple[str, str]) -> None:
    labs = [*all_enzymes_normal(skip=code), observation(code, 13, "U/L", ref_high=10)]
    assert component("female", "csm-enzymes", *labs) == "met"


def test_enzymes_ck_uln_from_the_default_table_for_a_woman() -> None:
    # no referenceRange: female CK ULN 200 U/L, so 260 is exactly 1.3 x ULN
    result = screen(*dm_patient("female", observation(CK, 260, "U/L")))
    assert verdict(result, "active-disease", "csm-enzymes") == "met"
    assert "default table" in evidence_text(result, "active-disease", "csm-enzymes")
    assert "ULN 200" in evidence_text(result, "active-disease", "csm-enzymes")


def test_enzymes_ck_uln_from_the_default_table_for_a_man() -> None:
    # male CK ULN 310 U/L: 403 is exactly 1.3 x ULN, 402 is below
    result = screen(*dm_patient("male", observation(CK, 403, "U/L")))
    assert verdict(result, "active-disease", "csm-enzymes") == "met"
    assert "ULN 310" in evidence_text(result, "active-disease", "csm-enzymes")
    labs = [*all_enzymes_normal(skip=CK), observation(CK, 402, "U/L")]
    assert component("male", "csm-enzymes", *labs) == "not-met"


def test_enzymes_reference_range_beats_the_default_table() -> None:
    # 260 U/L is 1.3 x the female default (200) but only 0.65 x this lab's own ULN of 400
    labs = [*all_enzymes_normal(skip=CK), observation(CK, 260, "U/L", ref_high=400)]
    assert component("female", "csm-enzymes", *labs) == "not-met"


def test_enzymes_ck_in_ukat_per_l_is_converted() -> None:
    # 5 ukat/L = 300 U/L = 1.5 x the female default ULN of 200
    assert component("female", "csm-enzymes", observation(CK, 5, "ukat/L")) == "met"


def test_enzymes_value_and_range_both_in_ukat_per_l() -> None:
    assert component("female", "csm-enzymes", observation(CK, 4.5, "ukat/L", ref_high=3)) == "met"


def test_enzymes_alt_in_iu_per_l_without_ucum_code() -> None:
    # ALT 52 IU/L (alias of U/L) = 1.3 x the female default ULN of 40
    assert component("female", "csm-enzymes", observation(ALT, 52, "IU/L", ucum=False)) == "met"


def test_enzymes_unit_not_convertible_is_unknown_with_the_unit_in_the_reason() -> None:
    obs = observation(CK, 5, "mg/dL")
    assert component("female", "csm-enzymes", obs) == "unknown"
    assert "mg/dL" in component_reason("csm-enzymes", obs)


def test_enzymes_reason_names_every_missing_enzyme() -> None:
    text = component_reason("csm-enzymes")
    for label in ("CK", "aldolase", "LDH", "ALT", "AST"):
        assert label in text


# --- the combination ----------------------------------------------------------------------------------
def test_active_disease_mmt8_and_two_csms_is_met() -> None:
    obs = [observation(MMT8, 125), observation(PGA, 2.0, "cm"), observation(HAQ, 0.25)]
    result = screen(*dm_patient("female", *obs))
    assert verdict(result, "active-disease") == "met"
    assert "2 of 5 met" in reason(result, "active-disease")


def test_active_disease_mmt8_and_one_csm_with_the_rest_normal_is_not_met() -> None:
    obs = [
        observation(MMT8, 100),
        observation(PGA, 4.0, "cm"),
        observation(PHGA, 1.0, "cm"),
        observation(HAQ, 0.1),
        observation(EXTRAMUSCULAR, 0.5, "cm"),
        observation(CUTANEOUS, 1.0, "cm"),
        *all_enzymes_normal(),
    ]
    result = screen(*dm_patient("female", *obs))
    assert verdict(result, "active-disease") == "not-met"
    assert result.status is Status.INELIGIBLE


def test_active_disease_mmt8_and_one_csm_with_others_unknown_is_unknown() -> None:
    result = screen(*dm_patient("female", observation(MMT8, 100), observation(PGA, 4.0, "cm")))
    assert verdict(result, "active-disease") == "unknown"
    assert "1 of 5 met" in reason(result, "active-disease")
    assert result.status is Status.POTENTIAL_CANDIDATE


def test_active_disease_normal_mmt8_and_cutaneous_with_three_csms_is_met() -> None:
    obs = [
        observation(MMT8, 146),
        observation(CUTANEOUS, 3, "cm"),
        observation(PGA, 30, "mm"),
        observation(PHGA, 4.0, "cm"),
        observation(EXTRAMUSCULAR, 1.0, "cm"),
    ]
    assert verdict(screen(*dm_patient("female", *obs)), "active-disease") == "met"


def test_active_disease_cutaneous_with_only_two_csms_and_normal_mmt8_is_not_met() -> None:
    obs = [
        observation(MMT8, 146),
        observation(CUTANEOUS, 6, "cm"),
        observation(PGA, 3, "cm"),
        observation(PHGA, 3, "cm"),
        observation(HAQ, 0),
        observation(EXTRAMUSCULAR, 0, "cm"),
        *all_enzymes_normal(),
    ]
    assert verdict(screen(*dm_patient("female", *obs)), "active-disease") == "not-met"


def test_active_disease_nothing_recorded_is_unknown_naming_the_missing_measures() -> None:
    result = screen(*dm_patient())
    assert verdict(result, "active-disease") == "unknown"
    assert "MMT-8" in reason(result, "active-disease")


def test_active_disease_assessment_91_days_old_does_not_count() -> None:
    obs = [observation(MMT8, 100, date=days_ago(91)), observation(PGA, 4, "cm"), observation(HAQ, 1)]
    result = screen(*dm_patient("female", *obs))
    assert verdict(result, "active-disease", "mmt8") == "unknown"


def test_active_disease_assessment_90_days_old_counts() -> None:
    obs = [observation(MMT8, 100, date=days_ago(90)), observation(PGA, 4, "cm"), observation(HAQ, 1)]
    result = screen(*dm_patient("female", *obs))
    assert verdict(result, "active-disease", "mmt8") == "met"
    assert verdict(result, "active-disease") == "met"


def test_sex_specific_reference_range_coded_in_snomed_is_used() -> None:
    from fhirdata import SCT, UCUM, cc

    ck = observation(CK, 260, "U/L")
    ck["referenceRange"] = [
        {
            "high": {"value": 400, "unit": "U/L", "system": UCUM, "code": "U/L"},
            "appliesTo": [cc(SCT, "248152002", "Female")],
        },
        {
            "high": {"value": 500, "unit": "U/L", "system": UCUM, "code": "U/L"},
            "appliesTo": [cc(SCT, "248153007", "Male")],
        },
    ]
    result = screen(*dm_patient("female", *all_enzymes_normal(skip=CK), ck))
    assert verdict(result, "active-disease", "csm-enzymes") == "not-met"
    assert "ULN 400" in evidence_text(result, "active-disease", "csm-enzymes")


def test_sex_specific_reference_range_with_administrative_gender_codes_is_used() -> None:
    from fhirdata import UCUM, cc

    gender = "http://hl7.org/fhir/administrative-gender"
    ck = observation(CK, 260, "U/L")
    ck["referenceRange"] = [
        {
            "high": {"value": 500, "unit": "U/L", "system": UCUM, "code": "U/L"},
            "appliesTo": [cc(gender, "male")],
        },
        {
            "high": {"value": 400, "unit": "U/L", "system": UCUM, "code": "U/L"},
            "appliesTo": [cc(gender, "female")],
        },
    ]
    result = screen(*dm_patient("female", *all_enzymes_normal(skip=CK), ck))
    assert verdict(result, "active-disease", "csm-enzymes") == "not-met"
    assert "ULN 400" in evidence_text(result, "active-disease", "csm-enzymes")
