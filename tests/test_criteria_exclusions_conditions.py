"""Exclusions read from diagnoses, allergies, encounters and antibacterials: heart-failure,
other-ctd-or-tumor, drug-allergy, infection, mental-illness (closed world: no record = does not have it)."""

from __future__ import annotations

import pytest
from fhirdata import (
    ALLERGIC_DISPOSITION,
    HEART_FAILURE,
    ICD10,
    ICD10CM,
    IV,
    MALIGNANCY_ICD,
    NYHA,
    ORAL,
    PNEUMONIA,
    SCHIZOPHRENIA,
    SCT,
    SLE,
    TB_ACTIVE,
    TB_LATENT,
    Res,
    allergy,
    baseline,
    cc,
    coded_result,
    condition,
    days_ago,
    encounter,
    evidence_text,
    med_admin,
    med_request,
    observation,
    reason,
    screen,
    verdict,
)

from fhir_adapter.model import Status


def check(criterion_id: str, *extra: Res) -> tuple[str, str, str]:
    result = screen(*baseline(), *extra)
    return verdict(result, criterion_id), reason(result, criterion_id), evidence_text(result, criterion_id)


# --- heart-failure ------------------------------------------------------------------------------------
NYHA_III = (SCT, "420913000")
NYHA_II = (SCT, "421704003")
NYHA_IV = (SCT, "422293003")


def test_heart_failure_with_nyha_iii_observation_is_met() -> None:
    nyha = coded_result(NYHA, *NYHA_III, "New York Heart Association Classification - Class III", id="nyha1")
    v, _, ev = check("heart-failure", condition(HEART_FAILURE), nyha)
    assert v == "met"
    assert "Observation/nyha1" in ev


def test_nyha_iv_observation_without_a_condition_is_met() -> None:
    assert check("heart-failure", coded_result(NYHA, *NYHA_IV, "Class IV"))[0] == "met"


def test_heart_failure_with_nyha_ii_observation_is_not_met() -> None:
    nyha = coded_result(NYHA, *NYHA_II, "New York Heart Association Classification - Class II")
    assert check("heart-failure", condition(HEART_FAILURE), nyha)[0] == "not-met"


def test_nyha_class_as_text_only_value() -> None:
    nyha = observation(NYHA, None, valueCodeableConcept={"text": "NYHA class III"})
    assert check("heart-failure", condition(HEART_FAILURE), nyha)[0] == "met"
    nyha2 = observation(NYHA, None, valueCodeableConcept={"text": "NYHA class II"})
    assert check("heart-failure", condition(HEART_FAILURE), nyha2)[0] == "not-met"


def test_latest_nyha_class_decides() -> None:
    old = coded_result(NYHA, *NYHA_III, "Class III", date=days_ago(200))
    new = coded_result(NYHA, *NYHA_II, "Class II", date=days_ago(20))
    assert check("heart-failure", condition(HEART_FAILURE), old, new)[0] == "not-met"


def test_class_specific_heart_failure_condition_is_met() -> None:
    assert check("heart-failure", condition(NYHA_III, "NYHA class III"))[0] == "met"


def test_heart_failure_without_a_class_is_unknown() -> None:
    v, why, _ = check("heart-failure", condition(HEART_FAILURE, "Heart failure"))
    assert v == "unknown"
    assert "without NYHA class" in why


def test_heart_failure_icd10_i50_prefix_without_class_is_unknown() -> None:
    assert check("heart-failure", condition((ICD10CM, "I50.22")))[0] == "unknown"


def test_no_heart_failure_is_not_met() -> None:
    v, why, _ = check("heart-failure")
    assert v == "not-met"
    assert "no heart failure" in why


def test_resolved_heart_failure_without_class_is_not_met() -> None:
    assert check("heart-failure", condition(HEART_FAILURE, clinical="resolved"))[0] == "not-met"


# --- other-ctd-or-tumor -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "code",
    [SLE, (SCT, "89155008"), (ICD10, "M35.00"), (ICD10CM, "M05.79"), (ICD10, "M32.9")],
    ids=["sle", "systemic-sclerosis", "sjogren", "ra", "sle-icd"],
)
def test_current_other_connective_tissue_disease_is_met(code: tuple[str, str]) -> None:
    v, _, ev = check("other-ctd-or-tumor", condition(code))
    assert v == "met"
    assert "Condition/" in ev


def test_resolved_other_ctd_is_not_met() -> None:
    assert (
        check("other-ctd-or-tumor", condition(SLE, clinical="resolved", abatement=days_ago(300)))[0]
        == "not-met"
    )


def test_condition_without_clinical_status_and_without_abatement_is_current() -> None:
    assert check("other-ctd-or-tumor", condition(SLE, clinical=None))[0] == "met"


def test_condition_without_clinical_status_with_abatement_is_history() -> None:
    assert check("other-ctd-or-tumor", condition(SLE, clinical=None, abatement=days_ago(30)))[0] == "not-met"


@pytest.mark.parametrize("status", ["active", "recurrence", "relapse"])
def test_current_malignancy_is_met(status: str) -> None:
    assert check("other-ctd-or-tumor", condition(MALIGNANCY_ICD, clinical=status))[0] == "met"


@pytest.mark.parametrize("status", ["resolved", "inactive", "remission"])
def test_malignancy_in_history_is_not_met(status: str) -> None:
    assert check("other-ctd-or-tumor", condition(MALIGNANCY_ICD, clinical=status))[0] == "not-met"


def test_refuted_malignancy_is_ignored() -> None:
    assert check("other-ctd-or-tumor", condition(MALIGNANCY_ICD, verification="refuted"))[0] == "not-met"


def test_condition_with_onset_after_the_as_of_date_is_ignored() -> None:
    assert check("other-ctd-or-tumor", condition(SLE, onset=days_ago(-10)))[0] == "not-met"


def test_no_other_ctd_or_tumor_is_not_met_with_evidence() -> None:
    v, _why, ev = check("other-ctd-or-tumor")
    assert v == "not-met"
    assert "Patient/" in ev


# --- drug-allergy -------------------------------------------------------------------------------------
def test_two_distinct_active_medication_allergies_are_met() -> None:
    v, why, _ = check("drug-allergy", allergy("7980", "penicillin"), allergy("10180", "sulfamethoxazole"))
    assert v == "met"
    assert "2 distinct" in why


def test_one_medication_allergy_is_not_met() -> None:
    assert check("drug-allergy", allergy("7980", "penicillin"))[0] == "not-met"


def test_the_same_drug_recorded_twice_is_one_allergy() -> None:
    assert (
        check("drug-allergy", allergy("7980", "penicillin"), allergy("7980", "Penicillin G"))[0] == "not-met"
    )


@pytest.mark.parametrize("verification", ["refuted", "entered-in-error"])
def test_refuted_allergy_is_ignored(verification: str) -> None:
    second = allergy("10180", "sulfamethoxazole", verification=verification)
    assert check("drug-allergy", allergy("7980", "penicillin"), second)[0] == "not-met"


def test_inactive_allergy_is_ignored() -> None:
    second = allergy("10180", "sulfamethoxazole", clinical="resolved")
    assert check("drug-allergy", allergy("7980", "penicillin"), second)[0] == "not-met"


def test_food_allergies_do_not_count_as_drug_allergies() -> None:
    peanut = allergy("256349002", "Peanut", category="food", system=SCT)
    assert check("drug-allergy", allergy("7980", "penicillin"), peanut)[0] == "not-met"


def test_allergic_disposition_condition_is_met() -> None:
    v, _, ev = check("drug-allergy", condition(ALLERGIC_DISPOSITION, "Allergic disposition"))
    assert v == "met"
    assert "Condition/" in ev


def test_allergic_disposition_recorded_as_allergy_intolerance_is_met() -> None:
    disposition = allergy("609328004", "Allergic disposition", category=None, system=SCT)
    assert check("drug-allergy", disposition)[0] == "met"


def test_no_known_drug_allergy_record_is_not_an_allergy() -> None:
    nkda = allergy("409137002", "No known drug allergy", system=SCT)
    assert check("drug-allergy", allergy("7980", "penicillin"), nkda)[0] == "not-met"


def test_no_allergies_is_not_met() -> None:
    v, why, _ = check("drug-allergy")
    assert v == "not-met"
    assert "no active medication allergy" in why


# --- infection ----------------------------------------------------------------------------------------
def resolved_pneumonia(id: str = "pneu1") -> Res:
    return condition(
        PNEUMONIA, "Pneumonia", clinical="resolved", onset=days_ago(80), abatement=days_ago(60), id=id
    )


def test_current_pneumonia_is_met() -> None:
    v, why, ev = check("infection", condition(PNEUMONIA, "Pneumonia"))
    assert v == "met"
    assert "Pneumonia" in why and "Condition/" in ev


def test_resolved_pneumonia_alone_is_not_met() -> None:
    assert check("infection", resolved_pneumonia())[0] == "not-met"


def test_inpatient_stay_for_resolved_pneumonia_ending_on_the_first_day_of_the_window_is_met() -> None:
    # as-of 2026-06-15: 2 calendar months back is 2026-04-15, inclusive
    stay = encounter("2026-04-01", "2026-04-15", reason_reference="Condition/pneu1")
    v, why, ev = check("infection", resolved_pneumonia(), stay)
    assert v == "met"
    assert "inpatient stay" in why and "Encounter/" in ev


def test_inpatient_stay_ending_the_day_before_the_window_is_not_met() -> None:
    stay = encounter("2026-04-01", "2026-04-14", reason_reference="Condition/pneu1")
    assert check("infection", resolved_pneumonia(), stay)[0] == "not-met"


def test_inpatient_stay_with_infection_as_reason_code() -> None:
    stay = encounter(days_ago(40), days_ago(30), reason=cc(SCT, "233604007", "Pneumonia"))
    assert check("infection", stay)[0] == "met"


def test_inpatient_stay_with_infection_as_encounter_diagnosis() -> None:
    stay = encounter(days_ago(40), days_ago(30), diagnosis=[{"condition": {"reference": "Condition/pneu1"}}])
    assert check("infection", resolved_pneumonia(), stay)[0] == "met"


def test_outpatient_visit_for_pneumonia_is_not_a_hospitalisation() -> None:
    visit = encounter(days_ago(40), days_ago(40), klass="AMB", reason_reference="Condition/pneu1")
    assert check("infection", resolved_pneumonia(), visit)[0] == "not-met"


def test_inpatient_stay_for_something_else_is_not_met() -> None:
    stay = encounter(days_ago(40), days_ago(30), reason=cc(SCT, "22298006", "Myocardial infarction"))
    assert check("infection", stay)[0] == "not-met"


def test_iv_ceftriaxone_on_the_first_day_of_the_2_month_window_is_met() -> None:
    dose = med_admin("ceftriaxone 1 G Injection", 1, "g", date="2026-04-15", route=IV)
    v, why, _ev = check("infection", dose)
    assert v == "met"
    assert "intravenous antibacterial" in why


def test_iv_ceftriaxone_the_day_before_the_window_is_not_met() -> None:
    dose = med_admin("ceftriaxone 1 G Injection", 1, "g", date="2026-04-14", route=IV)
    assert check("infection", dose)[0] == "not-met"


def test_iv_antibacterial_by_atc_code_in_an_order() -> None:
    order = med_request(
        medication={
            "medicationCodeableConcept": {
                "coding": [{"system": "http://www.whocc.no/atc", "code": "J01DD04"}]
            }
        },
        dose=1,
        unit="g",
        route=IV,
        start=days_ago(20),
        status="completed",
    )
    assert check("infection", order)[0] == "met"


def test_oral_antibacterial_is_not_met() -> None:
    assert (
        check("infection", med_request("amoxicillin 500 MG Oral Capsule", 1, None, route=ORAL))[0]
        == "not-met"
    )


def test_resolved_tuberculosis_history_is_met() -> None:
    tb = condition(
        TB_ACTIVE, "Pulmonary tuberculosis", clinical="resolved", onset="2001-01-01", abatement="2002-01-01"
    )
    v, why, _ = check("infection", tb)
    assert v == "met"
    assert "tuberculosis" in why


def test_latent_tuberculosis_only_is_unknown_needing_review() -> None:
    v, why, _ = check("infection", condition(TB_LATENT, "Latent tuberculosis", clinical=None))
    assert v == "unknown"
    assert "needs review" in why


def test_latent_tuberculosis_with_a_current_infection_is_met() -> None:
    assert check("infection", condition(TB_LATENT), condition(PNEUMONIA))[0] == "met"


def test_hepatitis_b_diagnosis_is_a_current_infection() -> None:
    assert check("infection", condition((ICD10, "B18.1"), "Chronic hepatitis B"))[0] == "met"


def test_no_infection_is_not_met() -> None:
    v, why, _ev = check("infection")
    assert v == "not-met"
    assert "no inpatient stay for infection since 2026-04-15" in why


# --- mental-illness -----------------------------------------------------------------------------------
def test_schizophrenia_is_met() -> None:
    v, _, ev = check("mental-illness", condition(SCHIZOPHRENIA, "Schizophrenia"))
    assert v == "met"
    assert "Condition/" in ev


def test_historical_schizophrenia_counts() -> None:
    assert (
        check("mental-illness", condition(SCHIZOPHRENIA, clinical="resolved", abatement="2010-01-01"))[0]
        == "met"
    )


@pytest.mark.parametrize(
    "code",
    [(ICD10, "F31.2"), (ICD10CM, "F03.90"), (ICD10, "G30.1")],
    ids=["bipolar", "dementia", "alzheimer"],
)
def test_bipolar_and_dementia_are_met(code: tuple[str, str]) -> None:
    assert check("mental-illness", condition(code))[0] == "met"


def test_depression_is_not_mental_illness_for_this_trial() -> None:
    assert check("mental-illness", condition((SCT, "35489007"), "Depressive disorder"))[0] == "not-met"


def test_refuted_schizophrenia_is_ignored() -> None:
    assert check("mental-illness", condition(SCHIZOPHRENIA, verification="refuted"))[0] == "not-met"


def test_no_mental_illness_is_not_met() -> None:
    v, why, _ = check("mental-illness")
    assert v == "not-met"
    assert "psychotic, bipolar or dementia" in why


def test_exclusion_by_diagnosis_makes_the_patient_ineligible() -> None:
    assert screen(*baseline(), condition(SCHIZOPHRENIA)).status is Status.INELIGIBLE
