"""age, diagnosis, consent, contraception, and how the criteria make a status (spec sections 1 and 3)."""

from __future__ import annotations

import datetime as dt

import pytest
from fhirdata import (
    DM,
    ICD10,
    ICD10CM,
    JUVENILE_DM,
    POLYMYOSITIS,
    SCT,
    baseline,
    condition,
    criterion,
    evidence_text,
    patient,
    reason,
    screen,
    verdict,
    without,
)

from fhir_adapter.model import CriterionResult, Status, Verdict
from fhir_adapter.verdicts.evaluate import status_of


def _with_patient(birth: str | None, gender: str | None = "female") -> list[dict]:
    rest = [r for r in baseline() if r["resourceType"] != "Patient"]
    return [patient(birth, gender), *rest]


# --- age ----------------------------------------------------------------------------------------------
def test_age_46_is_met_with_the_birth_date_as_evidence() -> None:
    result = screen(*_with_patient("1980-03-02"))
    assert verdict(result, "age") == "met"
    assert "46 years on 2026-06-15" in reason(result, "age")
    assert "birthDate 1980-03-02" in evidence_text(result, "age")


def test_age_75_on_the_day_before_the_76th_birthday_is_met() -> None:
    assert verdict(screen(*_with_patient("1950-06-16")), "age") == "met"


def test_age_76_on_the_76th_birthday_is_not_met() -> None:
    result = screen(*_with_patient("1950-06-15"))
    assert verdict(result, "age") == "not-met"
    assert result.status is Status.INELIGIBLE


def test_age_18_on_the_18th_birthday_is_met() -> None:
    assert verdict(screen(*_with_patient("2008-06-15")), "age") == "met"


def test_age_17_on_the_day_before_the_18th_birthday_is_not_met() -> None:
    assert verdict(screen(*_with_patient("2008-06-16")), "age") == "not-met"


def test_age_without_birth_date_is_unknown_saying_so() -> None:
    result = screen(*_with_patient(None))
    assert verdict(result, "age") == "unknown"
    assert "no birthDate" in reason(result, "age")


def test_age_without_a_patient_resource_is_unknown() -> None:
    rest = [r for r in baseline() if r["resourceType"] != "Patient"]
    result = screen(*rest)
    assert verdict(result, "age") == "unknown"
    assert "Patient resource not in the input" in reason(result, "age")


@pytest.mark.parametrize(
    ("birth", "why"),
    [
        ("2026-06-16", "after 2026-06-15"),  # born tomorrow
        ("9999-12-31", "after 2026-06-15"),
        ("2027", "after 2026-06-15"),
        ("1875-06-16", "150 years"),  # the oldest age still taken at its word ...
        ("1875-06-15", "not a plausible age"),  # ... and 151 on the day
        ("0001-01-01", "not a plausible age"),
        ("+1980", "not a date"),
        ("19800", "not a date"),
        ("1980-1", "not a date"),
        ("1980-00", "not a date"),
        ("1980-13", "not a date"),
        ("0000", "not a date"),
        ("-1980", "not a date"),
        ("\uff11\uff19\uff18\uff10", "not a date"),  # full-width digits
    ],
)
def test_an_impossible_or_malformed_birth_date_gives_an_unknown_age_never_a_guess(
    birth: str, why: str
) -> None:
    result = screen(*_with_patient(birth))
    # 150 is still an age to judge by (above 75: not-met); anything else here is not.
    expected = "not-met" if why == "150 years" else "unknown"
    assert verdict(result, "age") == expected, reason(result, "age")
    assert why in reason(result, "age")


def test_a_year_only_birth_date_in_the_as_of_year_is_age_zero() -> None:
    result = screen(*_with_patient("2026"))
    assert verdict(result, "age") == "not-met"
    assert "0 years" in reason(result, "age")


@pytest.mark.parametrize("birth", ["1950", "2008"])
def test_year_only_birth_date_straddling_a_limit_is_unknown_with_both_ages(birth: str) -> None:
    # born in 1950: 75 or 76 on 2026-06-15; born in 2008: 17 or 18
    result = screen(*_with_patient(birth))
    assert verdict(result, "age") == "unknown"
    assert "partial" in reason(result, "age")


def test_year_only_birth_date_decides_when_both_possible_ages_are_the_same() -> None:
    # On 31 December everyone born in 1980 is 46.
    result = screen(*_with_patient("1980"), as_of=dt.date(2026, 12, 31))
    assert verdict(result, "age") == "met"
    assert "46 years" in reason(result, "age")


def test_year_only_birth_date_with_both_possible_ages_inside_18_to_75_is_met() -> None:
    assert verdict(screen(*_with_patient("1980")), "age") == "met"


def test_year_only_birth_date_with_both_possible_ages_above_75_is_not_met() -> None:
    assert verdict(screen(*_with_patient("1940")), "age") == "not-met"


def test_year_month_birth_date_inside_the_month_of_the_birthday_is_unknown() -> None:
    # 1950-06: born 1..30 June 1950, so 75 or 76 on 2026-06-15
    assert verdict(screen(*_with_patient("1950-06")), "age") == "unknown"


# --- diagnosis ----------------------------------------------------------------------------------------
def test_diagnosis_met_by_an_active_dermatomyositis_condition() -> None:
    result = screen(*baseline())
    assert verdict(result, "diagnosis") == "met"
    assert "Condition/" in evidence_text(result, "diagnosis")


@pytest.mark.parametrize(
    "code",
    [DM, JUVENILE_DM, (ICD10, "M33.1"), (ICD10CM, "M33.11"), (ICD10CM, "M33.02"), (SCT, "311671000119100")],
    ids=[
        "adult-sct",
        "juvenile-sct",
        "icd10-M33.1",
        "icd10cm-M33.11",
        "icd10cm-juvenile-M33.02",
        "amyopathic",
    ],
)
def test_diagnosis_met_for_adult_juvenile_and_amyopathic_dm_codes(code: tuple[str, str]) -> None:
    resources = [*without(baseline(), DM), condition(code)]
    assert verdict(screen(*resources), "diagnosis") == "met"


def test_diagnosis_met_by_a_resolved_historical_dm_condition() -> None:
    resources = [*without(baseline(), DM), condition(DM, clinical="resolved", abatement="2020-01-01")]
    assert verdict(screen(*resources), "diagnosis") == "met"


def test_diagnosis_met_by_text_only_when_no_coding_matches() -> None:
    dm_text = condition(("http://hospital.example.org/dx", "X123"))
    dm_text["code"]["text"] = "Dermatomyositis, adult onset"
    assert verdict(screen(*without(baseline(), DM), dm_text), "diagnosis") == "met"


def test_diagnosis_met_when_a_vendor_code_comes_before_snomed() -> None:
    dm = condition(DM)
    dm["code"]["coding"].insert(0, {"system": "http://hospital.example.org/dx", "code": "DX-77"})
    assert verdict(screen(*without(baseline(), DM), dm), "diagnosis") == "met"


@pytest.mark.parametrize(
    "code", [POLYMYOSITIS, (ICD10, "M33.2"), (ICD10CM, "M33.20")], ids=["sct", "icd10", "icd10cm"]
)
def test_polymyositis_is_not_dermatomyositis(code: tuple[str, str]) -> None:
    result = screen(*without(baseline(), DM), condition(code, "Polymyositis"))
    assert result.status is Status.INELIGIBLE
    assert [c.id for c in result.criteria] == ["diagnosis"]
    assert verdict(result, "diagnosis") == "not-met"


def test_patient_without_dm_is_ineligible_with_only_the_diagnosis_criterion() -> None:
    result = screen(*without(baseline(), DM))
    assert result.status is Status.INELIGIBLE
    assert [c.id for c in result.criteria] == ["diagnosis"]
    assert criterion(result, "diagnosis").evidence, "a not-met verdict carries evidence"


@pytest.mark.parametrize("status", ["refuted", "entered-in-error"])
def test_refuted_dm_condition_is_ignored(status: str) -> None:
    result = screen(*without(baseline(), DM), condition(DM, verification=status))
    assert [c.id for c in result.criteria] == ["diagnosis"]
    assert verdict(result, "diagnosis") == "not-met"


def test_refuted_dm_beside_a_confirmed_one_still_meets_the_diagnosis() -> None:
    resources = [*baseline(), condition(DM, verification="refuted")]
    assert verdict(screen(*resources), "diagnosis") == "met"


# --- consent and contraception ------------------------------------------------------------------------
def test_consent_is_always_not_evaluable() -> None:
    result = screen(*baseline())
    assert verdict(result, "consent") == "not-evaluable"
    assert "never decidable" in reason(result, "consent")


def test_contraception_woman_aged_54_is_not_evaluable() -> None:
    assert verdict(screen(*_with_patient("1971-06-16", "female")), "contraception") == "not-evaluable"


def test_contraception_woman_aged_55_is_not_applicable() -> None:
    result = screen(*_with_patient("1971-06-15", "female"))
    assert verdict(result, "contraception") == "not-applicable"
    assert "does not apply" in reason(result, "contraception")


def test_contraception_man_is_not_applicable() -> None:
    assert verdict(screen(*_with_patient("1990-01-01", "male")), "contraception") == "not-applicable"


def test_contraception_woman_of_unknown_age_may_apply_and_is_not_evaluable() -> None:
    result = screen(*_with_patient(None, "female"))
    assert verdict(result, "contraception") == "not-evaluable"


# --- status -------------------------------------------------------------------------------------------
def test_complete_record_is_a_candidate_despite_not_evaluable_and_not_applicable() -> None:
    result = screen(*baseline())
    assert result.status is Status.CANDIDATE
    verdicts = {c.id: c.verdict for c in result.criteria}
    assert verdicts["consent"] is Verdict.NOT_EVALUABLE


def test_candidate_needs_no_criterion_unknown_one_unknown_gives_potential_candidate() -> None:
    from fhirdata import HBSAG

    result = screen(*without(baseline(), HBSAG))
    assert verdict(result, "hepatitis-serology") == "unknown"
    assert result.status is Status.POTENTIAL_CANDIDATE


def test_unknown_components_do_not_hold_back_a_decided_active_disease() -> None:
    result = screen(*baseline())
    active = criterion(result, "active-disease")
    assert active.verdict is Verdict.MET
    assert any(c.verdict is Verdict.UNKNOWN for c in active.components)  # PhGA, cutaneous, extramuscular
    assert result.status is Status.CANDIDATE


def test_exclusion_met_makes_ineligible_even_with_unknowns() -> None:
    from fhirdata import HBSAG, SLE

    result = screen(*without(baseline(), HBSAG), condition(SLE))
    assert result.status is Status.INELIGIBLE


def _c(cid: str, ctype: str, v: Verdict) -> CriterionResult:
    return CriterionResult(cid, ctype, v, "")


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ([_c("a", "inclusion", Verdict.MET), _c("x", "exclusion", Verdict.NOT_MET)], Status.CANDIDATE),
        ([_c("a", "inclusion", Verdict.NOT_MET), _c("x", "exclusion", Verdict.UNKNOWN)], Status.INELIGIBLE),
        ([_c("a", "inclusion", Verdict.UNKNOWN), _c("x", "exclusion", Verdict.MET)], Status.INELIGIBLE),
        (
            [_c("a", "inclusion", Verdict.UNKNOWN), _c("x", "exclusion", Verdict.NOT_MET)],
            Status.POTENTIAL_CANDIDATE,
        ),
        (
            [_c("a", "inclusion", Verdict.MET), _c("x", "exclusion", Verdict.UNKNOWN)],
            Status.POTENTIAL_CANDIDATE,
        ),
        (
            [_c("a", "inclusion", Verdict.NOT_EVALUABLE), _c("b", "inclusion", Verdict.NOT_APPLICABLE)],
            Status.CANDIDATE,
        ),
        # an exclusion that is not-met and an inclusion that is met never exclude
        ([_c("x", "exclusion", Verdict.NOT_MET), _c("a", "inclusion", Verdict.MET)], Status.CANDIDATE),
    ],
)
def test_status_of_reads_inclusions_exclusions_and_unknowns(
    criteria: list[CriterionResult], expected: Status
) -> None:
    assert status_of(criteria) is expected


def test_status_of_ignores_components() -> None:
    unknown_component = _c("csm-haq", "component", Verdict.UNKNOWN)
    parent = CriterionResult("active-disease", "inclusion", Verdict.MET, "", components=(unknown_component,))
    assert status_of([parent]) is Status.CANDIDATE


def test_every_decided_criterion_carries_evidence() -> None:
    result = screen(*baseline())
    for c in result.criteria:
        if c.verdict in (Verdict.MET, Verdict.NOT_MET):
            assert c.evidence, f"{c.id} is {c.verdict.value} without evidence"
