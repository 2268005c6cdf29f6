"""Exclusions read from results: renal, liver, anemia, thrombocytopenia, hepatitis serology; and the
open-world rules every measurement follows (window, as-of, ties, ignored statuses, duplicates)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fhirdata import (
    ALT,
    ANTI_HCV,
    CIRRHOSIS,
    CRCL,
    CREATININE,
    HBSAG,
    HGB,
    PLT,
    SCT,
    TBIL,
    WEIGHT,
    Res,
    baseline,
    coded_result,
    condition,
    days_ago,
    evidence_text,
    observation,
    patient,
    reason,
    screen,
    verdict,
    weight,
    without,
)

from fhir_adapter.config.loader import load_mappings
from fhir_adapter.model import Status


def with_labs(
    *labs: Res, drop: tuple[tuple[str, str], ...] = (), birth: str = "1980-03-02", gender: str = "female"
) -> list[Res]:
    resources = [r for r in baseline(birth, gender) if r["resourceType"] != "Patient"]
    for code in drop:
        resources = without(resources, code)
    return [patient(birth, gender), *resources, *labs]


def check(
    criterion_id: str, *labs: Res, drop: tuple[tuple[str, str], ...] = (), **kw: str
) -> tuple[str, str, str]:
    result = screen(*with_labs(*labs, drop=drop, **kw))
    return verdict(result, criterion_id), reason(result, criterion_id), evidence_text(result, criterion_id)


# --- anemia -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (79, "g/L", "met"),
        (80, "g/L", "not-met"),
        (7.9, "g/dL", "met"),
        (8.0, "g/dL", "not-met"),
        (4.9, "mmol/L", "met"),  # 78.96 g/L
        (5.0, "mmol/L", "not-met"),  # 80.57 g/L
        (128, "g/L", "not-met"),
    ],
)
def test_anemia_hemoglobin_below_80_g_per_l(value: float, unit: str, expected: str) -> None:
    assert check("anemia", observation(HGB, value, unit, date=days_ago(1)), drop=(HGB,))[0] == expected


def test_anemia_from_a_hemoglobin_text_with_an_ambiguous_comma_is_unknown() -> None:
    hb = observation(HGB, 0, "g/L")
    del hb["valueQuantity"]
    hb["valueString"] = "1,280"
    v, why, _ = check("anemia", hb, drop=(HGB,))
    assert v == "unknown"
    assert "'1,280' is not a number" in why


def test_anemia_evidence_shows_the_converted_value_and_the_reported_one() -> None:
    v, _, ev = check("anemia", observation(HGB, 7.9, "g/dL", id="hb1"), drop=(HGB,))
    assert v == "met"
    assert "Observation/hb1" in ev and "79 g/L" in ev and "7.9 g/dL" in ev


def test_anemia_missing_hemoglobin_is_unknown() -> None:
    v, why, _ = check("anemia", drop=(HGB,))
    assert v == "unknown"
    assert "no hemoglobin in the last 90 days" in why


def test_anemia_unconvertible_unit_is_unknown_naming_the_unit() -> None:
    v, why, _ = check("anemia", observation(HGB, 8, "furlong"), drop=(HGB,))
    assert v == "unknown"
    assert "furlong" in why and "cannot be converted" in why


def test_anemia_hemoglobin_without_unit_is_unknown() -> None:
    v, why, _ = check("anemia", observation(HGB, 79), drop=(HGB,))
    assert v == "unknown"
    assert "no unit" in why


def test_anemia_data_absent_reason_is_unknown_with_the_reason() -> None:
    obs = observation(HGB, None, dataAbsentReason={"coding": [{"code": "not-performed"}]})
    v, why, _ = check("anemia", obs, drop=(HGB,))
    assert v == "unknown"
    assert "not-performed" in why


def test_anemia_hba1c_text_is_not_hemoglobin() -> None:
    a1c = observation(("http://hospital.example.org/lis", "A1C"), 6.1, "%")
    a1c["code"]["text"] = "Hemoglobin A1c"
    assert check("anemia", a1c, drop=(HGB,))[0] == "unknown"


# --- thrombocytopenia ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "unit", "ucum", "expected"),
    [
        (59, "10*9/L", True, "met"),
        (60, "10*9/L", True, "not-met"),
        (59, "K/uL", False, "met"),
        (60, "K/uL", False, "not-met"),
        (59, "10*3/uL", True, "met"),
        (60, "10*3/uL", True, "not-met"),
    ],
)
def test_thrombocytopenia_platelets_below_60(value: float, unit: str, ucum: bool, expected: str) -> None:
    assert check("thrombocytopenia", observation(PLT, value, unit, ucum=ucum), drop=(PLT,))[0] == expected


def test_thrombocytopenia_missing_is_unknown() -> None:
    v, why, _ = check("thrombocytopenia", drop=(PLT,))
    assert v == "unknown"
    assert "no platelets" in why


def test_platelet_value_abc_is_unknown_with_a_reason() -> None:
    obs = observation(PLT, 59, "10*9/L", id="plt-abc")
    obs["valueQuantity"]["value"] = "abc"
    v, why, _ = check("thrombocytopenia", obs, drop=(PLT,))
    assert v == "unknown"
    assert "'abc' is not a number" in why


@pytest.mark.parametrize(
    ("criterion", "code", "value", "unit"),
    [
        ("thrombocytopenia", PLT, -5, "10*9/L"),
        ("thrombocytopenia", PLT, -0.1, "K/uL"),
        ("anemia", HGB, -1, "g/dL"),
    ],
)
def test_a_negative_count_or_concentration_is_unknown_not_a_low_value(
    criterion: str, code: tuple[str, str], value: float, unit: str
) -> None:
    # it would have been met: a data error is not thrombocytopenia or anemia
    v, why, _ = check(criterion, observation(code, value, unit, id="neg"), drop=(code,))
    assert v == "unknown"
    assert "Observation/neg" in why and "is below 0, not a plausible result" in why


def test_a_result_of_zero_is_read_as_measured() -> None:
    assert check("thrombocytopenia", observation(PLT, 0, "10*9/L"), drop=(PLT,))[0] == "met"


def test_the_newest_result_being_implausible_leaves_the_fact_unknown_not_read_from_an_older_one() -> None:
    older = observation(PLT, 250, "10*9/L", date=days_ago(20), id="old")
    newer = observation(PLT, -250, "10*9/L", date=days_ago(2), id="new")
    v, why, _ = check("thrombocytopenia", older, newer, drop=(PLT,))
    assert v == "unknown" and "Observation/new" in why


def test_a_negative_bilirubin_against_its_own_range_is_unknown() -> None:
    v, why, _ = check(
        "liver-insufficiency", observation(TBIL, -3, "mg/dL", ref_high=1.2, id="tb"), drop=(TBIL,)
    )
    assert v == "unknown" and "below 0" in why


def test_a_site_can_lower_a_facts_minimum_for_an_analyte_that_can_be_negative(tmp_path: Path) -> None:
    overlay = tmp_path / "site.toml"
    overlay.write_text('[facts.platelets]\nminimum = "-10"\n', encoding="utf-8")
    mappings = load_mappings(overlays=[overlay])
    result = screen(*with_labs(observation(PLT, -5, "10*9/L"), drop=(PLT,)), mappings=mappings)
    assert verdict(result, "thrombocytopenia") == "met"


# --- renal-insufficiency ------------------------------------------------------------------------------
def test_renal_measured_clearance_25_is_met() -> None:
    v, why, ev = check("renal-insufficiency", observation(CRCL, 25, "mL/min", id="crcl1"))
    assert v == "met"
    assert "measured creatinine clearance" in why and "Observation/crcl1" in ev


def test_renal_measured_clearance_exactly_30_is_met() -> None:
    assert check("renal-insufficiency", observation(CRCL, 30, "mL/min"))[0] == "met"


def test_renal_measured_clearance_beats_cockcroft_gault() -> None:
    # creatinine 400 umol/L would give CG ~19 mL/min, but the measured clearance (50) decides
    labs = (observation(CREATININE, 400, "umol/L"), observation(CRCL, 50, "mL/min"))
    v, why, _ = check("renal-insufficiency", *labs, drop=(CREATININE,))
    assert v == "not-met"
    assert "Cockcroft-Gault" not in why


def test_renal_cockcroft_gault_exactly_30_for_a_man_is_met() -> None:
    # (140 - 68) x 60 kg / (72 x 2.0 mg/dL) = 30
    v, why, _ = check(
        "renal-insufficiency",
        observation(CREATININE, 2.0, "mg/dL"),
        drop=(CREATININE,),
        birth="1958-01-01",
        gender="male",
    )
    assert v == "met"
    assert "Cockcroft-Gault 30 mL/min" in why


def test_renal_cockcroft_gault_exactly_30_for_a_woman_uses_0_85() -> None:
    # (140 - 68) x 60 / (72 x 1.7) x 0.85 = 30
    v, why, _ = check(
        "renal-insufficiency", observation(CREATININE, 1.7, "mg/dL"), drop=(CREATININE,), birth="1958-01-01"
    )
    assert v == "met"
    assert "Cockcroft-Gault 30 mL/min" in why and "female" in why


def test_renal_cockcroft_gault_female_factor_makes_the_difference() -> None:
    # creatinine 1.8 mg/dL, 68 years, 60 kg: man 33.3 mL/min (not-met), woman 28.3 (met)
    lab = observation(CREATININE, 1.8, "mg/dL")
    man = check("renal-insufficiency", lab, drop=(CREATININE,), birth="1958-01-01", gender="male")
    woman = check("renal-insufficiency", lab, drop=(CREATININE,), birth="1958-01-01", gender="female")
    assert (man[0], woman[0]) == ("not-met", "met")


def test_renal_cockcroft_gault_from_umol_per_l_is_not_met_for_normal_creatinine() -> None:
    v, why, ev = check("renal-insufficiency")
    assert v == "not-met"
    assert "Cockcroft-Gault" in why
    assert "Observation/" in ev and "Patient/" in ev  # creatinine, age and weight


def test_renal_without_weight_is_unknown_saying_cockcroft_gault_needs_it() -> None:
    v, why, _ = check("renal-insufficiency", drop=(WEIGHT,))
    assert v == "unknown"
    assert "Cockcroft-Gault lacks" in why and "body weight" in why


@pytest.mark.parametrize("kg", [0, -60])
def test_renal_cockcroft_gault_from_a_weight_of_zero_or_less_is_unknown_not_a_clearance_of_zero(
    kg: float,
) -> None:
    v, why, _ = check("renal-insufficiency", weight(kg), drop=(WEIGHT,))
    assert v == "unknown"
    # 0 kg is a weight Cockcroft-Gault cannot use; a negative one is not a weight at all
    said = "Cockcroft-Gault not computable" if kg == 0 else "Cockcroft-Gault lacks: body weight"
    assert said in why and "mL/min" not in why


@pytest.mark.parametrize("birth", ["0001-01-01", "1850-06-15"])
def test_renal_cockcroft_gault_from_an_implausible_age_is_unknown(birth: str) -> None:
    v, why, _ = check("renal-insufficiency", birth=birth)
    assert v == "unknown"
    assert "not a plausible age" in why


def test_renal_without_creatinine_is_unknown() -> None:
    v, why, _ = check("renal-insufficiency", drop=(CREATININE,))
    assert v == "unknown"
    assert "serum creatinine" in why


def test_renal_weight_in_lbs_without_ucum_code() -> None:
    # dm10 of the examples: 4.52 mg/dL, 154 lbs, 59 years, male -> ~17 mL/min
    labs = (observation(CREATININE, 4.52, "mg/dL"), weight(154, unit="lbs", ucum=False))
    assert check("renal-insufficiency", *labs, drop=(CREATININE, WEIGHT), gender="male")[0] == "met"


def test_renal_weight_older_than_365_days_is_not_used() -> None:
    labs = (weight(60, date=days_ago(366)),)
    assert check("renal-insufficiency", *labs, drop=(WEIGHT,))[0] == "unknown"


# --- liver-insufficiency ------------------------------------------------------------------------------
def test_liver_bilirubin_above_uln_is_met() -> None:
    v, _, ev = check("liver-insufficiency", observation(TBIL, 22, "umol/L", ref_high=21), drop=(TBIL,))
    assert v == "met"
    assert "reference range" in ev


def test_liver_bilirubin_equal_to_uln_is_not_met() -> None:
    assert (
        check("liver-insufficiency", observation(TBIL, 21, "umol/L", ref_high=21), drop=(TBIL,))[0]
        == "not-met"
    )


def test_liver_bilirubin_uln_from_the_default_table_per_sex() -> None:
    # no referenceRange: women 21 umol/L, men 26 umol/L
    lab = observation(TBIL, 22, "umol/L")
    v_f, _, ev_f = check("liver-insufficiency", lab, drop=(TBIL,), gender="female")
    v_m, _, ev_m = check("liver-insufficiency", lab, drop=(TBIL,), gender="male")
    assert (v_f, v_m) == ("met", "not-met")
    assert "default table" in ev_f and "ULN 21" in ev_f
    assert "default table" in ev_m and "ULN 26" in ev_m


def test_liver_bilirubin_in_mg_per_dl_is_converted() -> None:
    # 1.3 mg/dL = 22.2 umol/L > 21 (female default); 1.2 mg/dL = 20.5
    assert check("liver-insufficiency", observation(TBIL, 1.3, "mg/dL"), drop=(TBIL,))[0] == "met"
    assert check("liver-insufficiency", observation(TBIL, 1.2, "mg/dL"), drop=(TBIL,))[0] == "not-met"


def test_liver_bilirubin_and_range_both_in_mg_per_dl() -> None:
    lab = observation(TBIL, 1.3, "mg/dL", ref_high=1.2)
    assert check("liver-insufficiency", lab, drop=(TBIL,))[0] == "met"


def test_liver_censored_bilirubin_below_the_uln_is_not_met() -> None:
    assert check("liver-insufficiency", observation(TBIL, "<3.4 umol/L"), drop=(TBIL,))[0] == "not-met"


def test_liver_raised_alt_alone_never_counts() -> None:
    v, _, _ = check("liver-insufficiency", observation(ALT, 900, "U/L", ref_high=40))
    assert v == "not-met"


def test_liver_cirrhosis_condition_is_met_even_with_normal_bilirubin() -> None:
    v, _why, ev = check("liver-insufficiency", condition(CIRRHOSIS, "Cirrhosis of liver"))
    assert v == "met"
    assert "Condition/" in ev


def test_liver_resolved_liver_failure_is_not_current() -> None:
    cond = condition(CIRRHOSIS, clinical="resolved", abatement=days_ago(100))
    assert check("liver-insufficiency", cond)[0] == "not-met"


def test_liver_missing_bilirubin_is_unknown() -> None:
    v, why, _ = check("liver-insufficiency", drop=(TBIL,))
    assert v == "unknown"
    assert "total bilirubin" in why


# --- hepatitis-serology -------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["Positive", "Reactive", "Detected", "positive (+)", "阳性"])
def test_hbsag_text_positive_is_met(text: str) -> None:
    v, why, _ = check("hepatitis-serology", observation(HBSAG, text, date=days_ago(30)), drop=(HBSAG,))
    assert v == "met"
    assert "HBsAg positive" in why


@pytest.mark.parametrize("text", ["Negative", "Non-reactive", "Not detected", "NEGATIVE"])
def test_hbsag_text_negative_is_not_met(text: str) -> None:
    assert (
        check("hepatitis-serology", observation(HBSAG, text, date=days_ago(30)), drop=(HBSAG,))[0]
        == "not-met"
    )


def test_hbsag_coded_positive_is_met() -> None:
    lab = coded_result(HBSAG, SCT, "10828004", "Positive", date=days_ago(30))
    assert check("hepatitis-serology", lab, drop=(HBSAG,))[0] == "met"


def test_anti_hcv_positive_is_met_even_without_hbsag() -> None:
    lab = observation(ANTI_HCV, "Reactive", date=days_ago(30))
    assert check("hepatitis-serology", lab, drop=(HBSAG, ANTI_HCV))[0] == "met"


def test_anti_hcv_negative_and_hbsag_missing_is_unknown() -> None:
    v, why, _ = check("hepatitis-serology", drop=(HBSAG,))
    assert v == "unknown"
    assert "no HBsAg result in the last 365 days" in why


def test_hepatitis_serology_older_than_365_days_is_ignored() -> None:
    old = observation(HBSAG, "Positive", date=days_ago(366))
    assert check("hepatitis-serology", old, drop=(HBSAG,))[0] == "unknown"


def test_hepatitis_serology_365_days_old_counts() -> None:
    assert (
        check("hepatitis-serology", observation(HBSAG, "Positive", date=days_ago(365)), drop=(HBSAG,))[0]
        == "met"
    )


def test_latest_hbsag_decides() -> None:
    labs = (
        observation(HBSAG, "Positive", date=days_ago(200)),
        observation(HBSAG, "Negative", date=days_ago(10)),
    )
    assert check("hepatitis-serology", *labs, drop=(HBSAG,))[0] == "not-met"


def test_hbsag_result_neither_positive_nor_negative_is_unknown() -> None:
    v, why, _ = check("hepatitis-serology", observation(HBSAG, "see comment"), drop=(HBSAG,))
    assert v == "unknown"
    assert "neither positive nor negative" in why


def test_hbsag_interpretation_only_is_read() -> None:
    lab = observation(HBSAG, None)
    lab["interpretation"] = [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                    "code": "POS",
                }
            ]
        }
    ]
    assert check("hepatitis-serology", lab, drop=(HBSAG,))[0] == "met"


# --- measurement rules (spec section 2), with hemoglobin as the example ------------------------------
def anemia(*labs: Res) -> str:
    return check("anemia", *labs, drop=(HGB,))[0]


def test_lab_90_days_old_counts() -> None:
    assert anemia(observation(HGB, 79, "g/L", date=days_ago(90))) == "met"


def test_lab_91_days_old_does_not_count() -> None:
    assert anemia(observation(HGB, 79, "g/L", date=days_ago(91))) == "unknown"


def test_result_dated_after_the_as_of_date_is_ignored() -> None:
    labs = (observation(HGB, 128, "g/L", date=days_ago(10)), observation(HGB, 70, "g/L", date=days_ago(-1)))
    assert anemia(*labs) == "not-met"


def test_result_on_the_as_of_date_counts() -> None:
    labs = (observation(HGB, 128, "g/L", date=days_ago(10)), observation(HGB, 70, "g/L", date=days_ago(0)))
    assert anemia(*labs) == "met"


def test_latest_result_in_the_window_decides() -> None:
    labs = (observation(HGB, 70, "g/L", date=days_ago(20)), observation(HGB, 120, "g/L", date=days_ago(3)))
    assert anemia(*labs) == "not-met"


def test_same_day_tie_goes_to_the_later_issued() -> None:
    day = days_ago(5)
    early = observation(HGB, 120, "g/L", date=day, id="hb-z", issued=f"{day}T08:00:00Z")
    late = observation(HGB, 70, "g/L", date=day, id="hb-a", issued=f"{day}T18:00:00Z")
    assert anemia(early, late) == "met"
    early["valueQuantity"]["value"], late["valueQuantity"]["value"] = 70, 120
    assert anemia(early, late) == "not-met"


def test_same_day_same_issued_tie_goes_to_the_larger_id() -> None:
    day = days_ago(5)
    a = observation(HGB, 120, "g/L", date=day, id="hb-a", issued=f"{day}T08:00:00Z")
    b = observation(HGB, 70, "g/L", date=day, id="hb-b", issued=f"{day}T08:00:00Z")
    assert anemia(a, b) == "met"
    assert anemia(b, a) == "met"  # input order does not matter


@pytest.mark.parametrize(
    "status", ["entered-in-error", "entered-in-error ", " cancelled", "Entered-In-Error"]
)
def test_entered_in_error_and_cancelled_results_are_ignored(status: str) -> None:
    labs = (
        observation(HGB, 128, "g/L", date=days_ago(10)),
        observation(HGB, 70, "g/L", date=days_ago(1), status=status),
    )
    assert anemia(*labs) == "not-met"


def test_duplicate_results_give_the_same_verdict() -> None:
    lab = observation(HGB, 79, "g/L", id="hb-dup")
    assert anemia(lab, dict(lab)) == "met"


def test_effective_period_and_issued_only_results_are_dated() -> None:
    period = observation(HGB, 79, "g/L", effectivePeriod={"start": days_ago(3), "end": days_ago(2)})
    period.pop("effectiveDateTime")
    assert anemia(period) == "met"
    issued = observation(HGB, 79, "g/L", issued=f"{days_ago(2)}T10:00:00Z")
    issued.pop("effectiveDateTime")
    assert anemia(issued) == "met"


def test_result_without_any_date_is_not_used() -> None:
    undated = observation(HGB, 79, "g/L")
    undated.pop("effectiveDateTime")
    assert anemia(undated) == "unknown"


def test_lab_text_result_with_a_unit_and_flag() -> None:
    # valueString "79 g/L ↓" from a vendor that sends numbers as text
    assert anemia(observation(HGB, "79 g/L ↓")) == "met"


def test_status_is_ineligible_when_a_lab_exclusion_is_met() -> None:
    result = screen(*with_labs(observation(PLT, 20, "10*9/L"), drop=(PLT,)))
    assert result.status is Status.INELIGIBLE


# --- known defects ------------------------------------------------------------------------------------
def test_same_day_results_the_later_time_decides() -> None:
    day = days_ago(5)
    morning = observation(HGB, 70, "g/L", date=f"{day}T08:00:00+08:00", id="hb-b")
    evening = observation(HGB, 120, "g/L", date=f"{day}T18:00:00+08:00", id="hb-a")
    assert anemia(morning, evening) == "not-met"


def test_tie_on_issued_compares_instants_across_time_zones() -> None:
    day = days_ago(5)
    earlier = observation(HGB, 120, "g/L", date=day, id="hb-b", issued=f"{day}T20:00:00+08:00")  # 12:00Z
    later = observation(HGB, 70, "g/L", date=day, id="hb-a", issued=f"{day}T13:00:00Z")
    assert anemia(earlier, later) == "met"
