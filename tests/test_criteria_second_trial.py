"""The second trial, NCT02728752 (ProDERM), screened from its criteria file alone: every criterion's
met / not-met / unknown and its boundaries (NCT02728752-prescreening-spec.md)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fhirdata import (
    ALDOLASE,
    ALT,
    AST,
    BASAL_CELL_SKIN,
    BMI,
    CK,
    DM,
    DVT,
    EXTRAMUSCULAR,
    HAQ,
    HEIGHT,
    ICD10,
    LDH,
    MALIGNANCY_ICD,
    MMT8,
    PGA,
    POLYMYOSITIS,
    Res,
    condition,
    days_ago,
    med_request,
    observation,
    patient,
    reason,
    record,
    second_trial_mappings,
    verdict,
    weight,
    without,
)

from fhir_adapter.model import SubjectResult
from fhir_adapter.screening import screen_record

AS_OF = dt.date(2026, 6, 15)


def methotrexate(**kw: Any) -> Res:
    args: dict[str, Any] = {
        "dose": 15,
        "frequency": 1,
        "period": 1,
        "period_unit": "wk",
        "start": days_ago(200),
        "rxnorm": "6851",
    }
    return med_request("methotrexate 2.5 MG Oral Tablet", **(args | kw))


def prednisone(**kw: Any) -> Res:
    return med_request("prednisone", **({"dose": 10, "start": days_ago(100)} | kw))


def candidate(**patient_kw: Any) -> list[Res]:
    """A ProDERM candidate: active DM, stable methotrexate and prednisone, BMI 22, nothing excluding."""
    return [
        patient(**({"birth": "1980-03-02"} | patient_kw)),
        condition(DM, "Dermatomyositis", onset="2023-01-10"),
        observation(MMT8, 100, date=days_ago(14)),
        observation(PGA, 4.5, "cm", date=days_ago(14)),
        observation(HAQ, 1.0, date=days_ago(14)),
        observation(CK, 980, "U/L", date=days_ago(12), ref_high=200),
        methotrexate(),
        prednisone(),
        weight(60),
        observation(HEIGHT, 165, "cm", date=days_ago(30)),
    ]


def screen(*resources: Res) -> SubjectResult:
    return screen_record(record(*resources), second_trial_mappings(), AS_OF)


def replace(resources: list[Res], code: tuple[str, str], *new: Res) -> list[Res]:
    return [*without(resources, code), *new]


def test_the_candidate_fixture_is_a_candidate_with_every_criterion_decided() -> None:
    result = screen(*candidate())
    assert result.status.value == "candidate", [(c.id, c.verdict.value, c.reason) for c in result.criteria]
    assert [c.id for c in result.criteria] == [
        "age",
        "diagnosis",
        "active-disease",
        "stable-therapy",
        "adjudication",
        "consent",
        "able-to-comply",
        "cancer-associated-myositis",
        "malignancy",
        "bmi",
        "deep-vein-thrombosis",
    ]


# -- age: 18 <= age < 80 (strict upper bound) -------------------------------------------------------------
@pytest.mark.parametrize(
    ("birth", "expected"),
    [
        ("1946-06-16", "met"),  # 79, eighty tomorrow
        ("1946-06-15", "not-met"),  # 80 today
        ("2008-06-15", "met"),  # 18 today
        ("2008-06-16", "not-met"),  # 17
    ],
)
def test_age_is_at_least_18_and_below_80(birth: str, expected: str) -> None:
    assert verdict(screen(*candidate(birth=birth)), "age") == expected


def test_a_patient_without_dermatomyositis_is_listed_with_the_diagnosis_only() -> None:
    result = screen(*replace(candidate(), DM, condition(POLYMYOSITIS, "Polymyositis")))
    assert [c.id for c in result.criteria] == ["diagnosis"]
    assert result.status.value == "ineligible" and not result.gate_met


# -- active-disease -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("mmt8", "expected"), [(141, "met"), (142, "not-met")])
def test_mmt8_must_be_strictly_below_142(mmt8: int, expected: str) -> None:
    resources = replace(candidate(), MMT8, observation(MMT8, mmt8, date=days_ago(14)))
    assert verdict(screen(*resources), "active-disease", "mmt8") == expected


def _enzymes(ck: float) -> list[Res]:
    """CK at ``ck`` x ULN 200; the other four enzymes known and normal."""
    return [
        observation(CK, ck, "U/L", date=days_ago(12), ref_high=200),
        observation(ALDOLASE, 5, "U/L", date=days_ago(12), ref_high=7.6),
        observation(LDH, 200, "U/L", date=days_ago(12), ref_high=250),
        observation(ALT, 30, "U/L", date=days_ago(12), ref_high=40),
        observation(AST, 30, "U/L", date=days_ago(12), ref_high=35),
    ]


@pytest.mark.parametrize(("ck", "expected"), [(300, "not-met"), (300.2, "met")])
def test_an_enzyme_counts_only_strictly_above_1_5_x_uln(ck: float, expected: str) -> None:
    resources = replace(candidate(), CK, *_enzymes(ck))
    assert verdict(screen(*resources), "active-disease", "csm-enzymes") == expected


def test_exactly_1_5_x_uln_with_other_enzymes_unknown_is_unknown() -> None:
    resources = replace(candidate(), CK, observation(CK, 300, "U/L", date=days_ago(12), ref_high=200))
    assert verdict(screen(*resources), "active-disease", "csm-enzymes") == "unknown"


@pytest.mark.parametrize(("vas", "expected"), [(2.0, "met"), (1.9, "not-met")])
def test_extramuscular_vas_threshold_is_2_cm(vas: float, expected: str) -> None:
    resources = [*candidate(), observation(EXTRAMUSCULAR, vas, "cm", date=days_ago(14))]
    assert verdict(screen(*resources), "active-disease", "csm-extramuscular") == expected


def test_mmt8_with_only_one_abnormal_core_set_measure_is_not_active() -> None:
    resources = [
        r
        for r in candidate()
        if r["resourceType"] != "Observation"
        or r["code"]["coding"][0]["code"] in {"mmt8-total", "ptga-vas", "29463-7", "8302-2"}
    ]
    resources += _enzymes(1)  # all five enzymes known and normal
    resources.append(observation(HAQ, 0.125, date=days_ago(14)))
    result = screen(*resources)
    assert verdict(result, "active-disease") == "unknown"  # PhGA and extramuscular still unrecorded
    resources += [
        observation((PGA[0], "phga-vas"), 1.0, "cm", date=days_ago(14)),
        observation(EXTRAMUSCULAR, 1.0, "cm", date=days_ago(14)),
    ]
    assert verdict(screen(*resources), "active-disease") == "not-met"


# -- stable-therapy: no-recent-change OR failed-previous-therapy (not evaluable) ----------------------------
def test_stable_treatment_is_met() -> None:
    result = screen(*candidate())
    assert verdict(result, "stable-therapy") == "met"
    assert verdict(result, "stable-therapy", "no-recent-change") == "met"
    assert verdict(result, "stable-therapy", "failed-previous-therapy") == "not-evaluable"


def _therapy(*meds: Res) -> list[Res]:
    return [r for r in candidate() if r["resourceType"] != "MedicationRequest"] + list(meds)


@pytest.mark.parametrize(
    ("meds", "why"),
    [
        ((), "no systemic glucocorticoid or immunosuppressant taken"),
        ((methotrexate(start=days_ago(28)),), "first recorded"),  # started exactly 28 days ago: in the window
        (
            (methotrexate(), prednisone(end=days_ago(10)), prednisone(dose=7.5, start=days_ago(9))),
            "-> 7.5 mg/d",
        ),
        (
            (
                methotrexate(),
                med_request("azathioprine", dose=100, start=days_ago(300)),
                med_request("tacrolimus", dose=2, start=days_ago(300)),
            ),
            "3 immunosuppressant(s) taken",
        ),
    ],
    ids=["untreated", "started-28-days-ago", "prednisone-taper", "three-immunosuppressants"],
)
def test_stable_therapy_is_unknown_never_not_met_when_there_is_no_stable_treatment(
    meds: tuple[Res, ...], why: str
) -> None:
    result = screen(*_therapy(*meds))
    assert verdict(result, "stable-therapy", "no-recent-change") == "not-met"
    assert verdict(result, "stable-therapy") == "unknown"  # the other branch is not evaluable
    assert why in reason(result, "stable-therapy")
    assert result.status.value == "potential-candidate"


def test_a_drug_started_29_days_ago_is_not_a_recent_start() -> None:
    result = screen(*_therapy(methotrexate(start=days_ago(29))))
    assert verdict(result, "stable-therapy", "no-recent-change") == "met"


def test_stopping_a_drug_is_not_a_dose_change() -> None:
    result = screen(
        *_therapy(methotrexate(), prednisone(start=days_ago(100), end=days_ago(5), status="completed"))
    )
    assert verdict(result, "stable-therapy", "no-recent-change") == "met"


def test_two_immunosuppressants_are_allowed() -> None:
    result = screen(*_therapy(methotrexate(), med_request("azathioprine", dose=100, start=days_ago(300))))
    assert verdict(result, "stable-therapy", "no-recent-change") == "met"


def test_a_dose_that_is_only_text_leaves_the_dose_change_unknown() -> None:
    sig_only = med_request("prednisone", dose=None, frequency=None, start=days_ago(100), text="10mg qd po")
    result = screen(*_therapy(methotrexate(), sig_only))
    assert verdict(result, "stable-therapy", "no-recent-change") == "unknown"
    assert verdict(result, "stable-therapy") == "unknown"


@pytest.mark.parametrize("criterion_id", ["adjudication", "consent", "able-to-comply"])
def test_human_decisions_are_not_evaluable(criterion_id: str) -> None:
    assert verdict(screen(*candidate()), criterion_id) == "not-evaluable"


# -- cancer-associated-myositis: malignancy onset within 2 calendar years of the DM onset ------------------
def _with_dm_onset(dm_onset: str, *extra: Res) -> list[Res]:
    return [*replace(candidate(), DM, condition(DM, "Dermatomyositis", onset=dm_onset)), *extra]


@pytest.mark.parametrize(
    ("dm_onset", "cancer_onset", "expected"),
    [
        ("2020-03-10", "2022-03-10", "met"),  # 2 calendar years after, to the day
        ("2020-03-10", "2022-03-11", "not-met"),
        ("2020-03-10", "2018-03-10", "met"),  # 2 years before, to the day
        ("2020-03-10", "2018-03-09", "not-met"),
        ("2020-02-29", "2022-02-28", "met"),  # 29 February counts from 28 February
        ("2020-02-29", "2022-03-01", "not-met"),
    ],
)
def test_cancer_within_two_calendar_years_of_the_myositis(
    dm_onset: str, cancer_onset: str, expected: str
) -> None:
    cancer = condition(
        MALIGNANCY_ICD, "Malignant neoplasm of breast", clinical="resolved", onset=cancer_onset
    )
    assert verdict(screen(*_with_dm_onset(dm_onset, cancer)), "cancer-associated-myositis") == expected


def test_the_earliest_dermatomyositis_onset_is_the_anchor() -> None:
    cancer = condition(MALIGNANCY_ICD, clinical="resolved", onset="2013-01-01")
    later_dm = condition(DM, "Dermatomyositis flare", onset="2024-01-01")
    result = screen(*_with_dm_onset("2012-06-01", cancer, later_dm))
    assert verdict(result, "cancer-associated-myositis") == "met"


def test_a_cancer_without_onset_is_unknown() -> None:
    cancer = condition(MALIGNANCY_ICD, clinical="resolved")
    del cancer["onsetDateTime"]
    assert verdict(screen(*_with_dm_onset("2020-03-10", cancer)), "cancer-associated-myositis") == "unknown"


def test_no_dated_dermatomyositis_makes_a_cancer_unknown() -> None:
    dm = condition(DM, "Dermatomyositis")
    del dm["onsetDateTime"]
    cancer = condition(MALIGNANCY_ICD, clinical="resolved", onset="2015-01-01")
    resources = [*replace(candidate(), DM, dm), cancer]
    assert verdict(screen(*resources), "cancer-associated-myositis") == "unknown"


def test_a_basal_cell_carcinoma_never_counts() -> None:
    bcc = condition(BASAL_CELL_SKIN, "Basal cell carcinoma of skin", onset="2021-01-01")
    result = screen(*_with_dm_onset("2020-03-10", bcc))
    assert verdict(result, "cancer-associated-myositis") == "not-met"
    assert verdict(result, "malignancy") == "not-met"


def test_no_malignancy_is_not_met() -> None:
    assert verdict(screen(*candidate()), "cancer-associated-myositis") == "not-met"


# -- malignancy: current, or onset in the 5 calendar years before as-of -------------------------------------
@pytest.mark.parametrize(
    ("clinical", "onset", "expected"),
    [
        ("active", "2010-01-01", "met"),  # current, however old
        ("resolved", "2021-06-15", "met"),  # exactly 5 calendar years before as-of
        ("resolved", "2021-06-14", "not-met"),
        ("remission", "2024-01-01", "met"),
    ],
)
def test_malignancy_current_or_in_the_last_5_calendar_years(clinical: str, onset: str, expected: str) -> None:
    cancer = condition((ICD10, "C18.9"), "Malignant neoplasm of colon", clinical=clinical, onset=onset)
    assert verdict(screen(*candidate(), cancer), "malignancy") == expected


def test_a_past_malignancy_without_onset_is_unknown() -> None:
    cancer = condition(MALIGNANCY_ICD, clinical="resolved")
    del cancer["onsetDateTime"]
    result = screen(*candidate(), cancer)
    assert verdict(result, "malignancy") == "unknown"
    assert "no onset date" in reason(result, "malignancy")


# -- bmi: >= 40 kg/m2, reported or from weight and height ---------------------------------------------------
@pytest.mark.parametrize(("bmi", "expected"), [(40.0, "met"), (39.9, "not-met")])
def test_a_reported_bmi_decides(bmi: float, expected: str) -> None:
    resources = [*candidate(), observation(BMI, bmi, "kg/m2", date=days_ago(40))]
    assert verdict(screen(*resources), "bmi") == expected


@pytest.mark.parametrize(
    ("kg", "height", "unit", "expected"),
    [
        (102.4, 160, "cm", "met"),  # 102.4 / 1.6^2 = 40.0 exactly
        (102.3, 160, "cm", "not-met"),  # 39.96
        (102.4, 1.6, "m", "met"),
        (102.4, 63, "[in_i]", "not-met"),  # 63 in = 1.6002 m: 39.99
    ],
)
def test_bmi_from_weight_and_height(kg: float, height: float, unit: str, expected: str) -> None:
    resources = [*replace(replace(candidate(), (HEIGHT[0], "29463-7")), HEIGHT), weight(kg)]
    resources.append(observation(HEIGHT, height, unit, date=days_ago(30)))
    result = screen(*resources)
    assert verdict(result, "bmi") == expected
    assert "Observation/" in " ".join(e.reference for e in result.criteria[-2].evidence)


def test_bmi_without_height_is_unknown() -> None:
    result = screen(*without(candidate(), HEIGHT))
    assert verdict(result, "bmi") == "unknown"
    assert "no body height" in reason(result, "bmi")


def test_a_height_older_than_365_days_is_not_used() -> None:
    resources = [*without(candidate(), HEIGHT), observation(HEIGHT, 160, "cm", date=days_ago(366))]
    assert verdict(screen(*resources), "bmi") == "unknown"


# -- deep-vein-thrombosis: current, or onset in the last 12 calendar months ---------------------------------
@pytest.mark.parametrize(
    ("clinical", "onset", "expected"),
    [
        ("active", "2019-01-01", "met"),
        ("resolved", "2025-06-15", "met"),  # 12 calendar months before as-of, to the day
        ("resolved", "2025-06-14", "not-met"),
    ],
)
def test_deep_vein_thrombosis_in_the_last_12_months(clinical: str, onset: str, expected: str) -> None:
    dvt = condition(DVT, "Deep venous thrombosis", clinical=clinical, onset=onset)
    assert verdict(screen(*candidate(), dvt), "deep-vein-thrombosis") == expected


def test_a_resolved_dvt_with_only_a_recorded_date_uses_that_date() -> None:
    dvt = condition(DVT, clinical="resolved", recordedDate="2026-01-10")
    del dvt["onsetDateTime"]
    assert verdict(screen(*candidate(), dvt), "deep-vein-thrombosis") == "met"


def test_a_resolved_dvt_without_any_date_is_unknown() -> None:
    dvt = condition(DVT, clinical="resolved")
    del dvt["onsetDateTime"]
    assert verdict(screen(*candidate(), dvt), "deep-vein-thrombosis") == "unknown"
