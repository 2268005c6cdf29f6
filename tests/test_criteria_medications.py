"""glucocorticoid-dose, iv-glucocorticoid and immunosuppressant-stable (spec sections 3 and 6).

The baseline patient weighs 60 kg, so 30 mg/d prednisone-equivalent is exactly 0.5 mg/kg/d.
"""

from __future__ import annotations

import pytest
from fhirdata import (
    INHALED,
    IV,
    ORAL,
    RXNORM,
    TOPICAL,
    WEIGHT,
    Res,
    baseline,
    days_ago,
    dosage,
    drug,
    med_admin,
    med_request,
    med_statement,
    medication,
    reason,
    screen,
    verdict,
    weight,
    without,
)

from fhir_adapter.model import Status


def gc(*meds: Res, kg: float | None = 60) -> tuple[str, str]:
    """(verdict, reason) of glucocorticoid-dose for the baseline patient with these medications."""
    resources = without(baseline(), WEIGHT)
    if kg is not None:
        resources.append(weight(kg))
    result = screen(*resources, *meds)
    return verdict(result, "glucocorticoid-dose"), reason(result, "glucocorticoid-dose")


def iv(*meds: Res, kg: float = 60) -> tuple[str, str]:
    result = screen(*without(baseline(), WEIGHT), weight(kg), *meds)
    return verdict(result, "iv-glucocorticoid"), reason(result, "iv-glucocorticoid")


# --- glucocorticoid-dose ------------------------------------------------------------------------------
def test_no_glucocorticoid_in_28_days_is_met() -> None:
    v, why = gc()
    assert v == "met"
    assert "no systemic glucocorticoid" in why


def test_no_glucocorticoid_is_met_even_without_a_body_weight() -> None:
    assert gc(kg=None)[0] == "met"


def test_prednisone_exactly_0_5_mg_per_kg_per_day_is_not_met() -> None:
    v, why = gc(med_request("prednisone", 30, "mg"))
    assert v == "not-met"
    assert "0.5 mg/kg/d" in why


def test_prednisone_0_49_mg_per_kg_per_day_is_met() -> None:
    v, why = gc(med_request("prednisone", 29.4, "mg"))
    assert v == "met"
    assert "0.49 mg/kg/d" in why


def test_strength_from_the_drug_name_times_two_tablets_is_40_mg() -> None:
    v, why = gc(med_request("predniSONE 20 MG Oral Tablet", 2, None, rxnorm="312617"), kg=100)
    assert v == "met"  # 40 mg / 100 kg = 0.4
    assert "40 mg/d" in why
    assert gc(med_request("predniSONE 20 MG Oral Tablet", 2, None, rxnorm="312617"), kg=80)[0] == "not-met"


def test_tablet_dose_unit_takes_strength_from_the_name() -> None:
    v, why = gc(med_request("predniSONE 5 MG Oral Tablet", 6, "{tbl}"))
    assert v == "not-met"  # 30 mg / 60 kg
    assert "30 mg/d" in why


@pytest.mark.parametrize(
    ("dose", "frequency", "period", "period_unit", "expected"),
    [
        (15, 2, 1, "d", "not-met"),  # BID: 30 mg/d = 0.5
        (14, 2, 1, "d", "met"),  # BID: 28 mg/d
        (60, 1, 2, "d", "not-met"),  # every other day: 30 mg/d
        (58, 1, 2, "d", "met"),  # every other day: 29 mg/d
        (210, 1, 1, "wk", "not-met"),  # weekly: 30 mg/d
        (203, 1, 1, "wk", "met"),  # weekly: 29 mg/d
        (10, 3, 1, "d", "not-met"),  # TID: 30 mg/d
    ],
    ids=["bid-30", "bid-28", "qod-30", "qod-29", "weekly-30", "weekly-29", "tid-30"],
)
def test_daily_dose_is_dose_times_frequency_over_period(
    dose: float, frequency: int, period: float, period_unit: str, expected: str
) -> None:
    req = med_request("prednisone", dose, "mg", frequency=frequency, period=period, period_unit=period_unit)
    assert gc(req)[0] == expected


@pytest.mark.parametrize(
    ("code", "dose", "expected"), [("BID", 15, "not-met"), ("QOD", 60, "not-met"), ("QOD", 58, "met")]
)
def test_frequency_from_timing_code(code: str, dose: float, expected: str) -> None:
    req = med_request("prednisone", dose, "mg", frequency=None, timing_code=code)
    assert gc(req)[0] == expected


def test_contained_medication_with_ingredient_strength() -> None:
    contained = medication("med0", "Prednisone oral tablet", strength_mg=5)
    req = med_request(
        dose=6,
        unit="{tbl}",
        medication={"medicationReference": {"reference": "#med0"}},
        contained=[contained],
    )
    v, why = gc(req)
    assert v == "not-met"  # 6 x 5 mg = 30 mg/d
    assert "30 mg/d" in why


def test_referenced_medication_with_ingredient_strength() -> None:
    med = medication("pred5", "Prednisone oral tablet", strength_mg=5)
    req = med_request(
        dose=4, unit="{tbl}", medication={"medicationReference": {"reference": "Medication/pred5"}}
    )
    v, why = gc(med, req)
    assert v == "met"  # 20 mg / 60 kg = 0.33
    assert "20 mg/d" in why


def test_tablets_without_any_strength_are_unknown_never_guessed() -> None:
    v, why = gc(med_request("prednisone", 2, "{tbl}"))
    assert v == "unknown"
    assert "no strength" in why


def test_methylprednisolone_uses_factor_1_25_not_prednisolones_1() -> None:
    # 24 mg methylprednisolone = 30 mg prednisone = 0.5 mg/kg/d; with prednisolone's factor 1 it would be 0.4
    v, why = gc(med_request("methylprednisolone", 24, "mg"))
    assert v == "not-met"
    assert "methylprednisolone" in why or "30 mg/d" in why
    assert gc(med_request("methylprednisolone", 23, "mg"))[0] == "met"


def test_methylprednisolone_by_rxnorm_code_with_an_unhelpful_name() -> None:
    req = med_request(
        medication={"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "6902"}]}}, dose=24
    )
    assert gc(req)[0] == "not-met"


@pytest.mark.parametrize(
    ("name", "dose", "expected"),
    [
        ("dexamethasone", 4.5, "not-met"),  # x 6.67 = 30.015
        ("dexamethasone", 4.4, "met"),  # 29.348
        ("hydrocortisone", 120, "not-met"),  # x 0.25 = 30
        ("hydrocortisone", 116, "met"),  # 29
        ("prednisolone", 30, "not-met"),  # x 1
        ("deflazacort", 36, "met"),  # x 0.83 = 29.88
    ],
)
def test_prednisone_equivalence_factors(name: str, dose: float, expected: str) -> None:
    assert gc(med_request(name, dose, "mg"))[0] == expected


@pytest.mark.parametrize("route", [TOPICAL, INHALED], ids=["topical", "inhaled"])
def test_topical_and_inhaled_glucocorticoids_are_not_systemic(route: Res) -> None:
    v, why = gc(med_request("prednisolone", 200, "mg", route=route))
    assert v == "met"
    assert "no systemic glucocorticoid" in why


def test_a_cream_by_its_name_is_not_systemic() -> None:
    assert gc(med_request("Hydrocortisone 1 % Topical Cream", 1, "{tbl}"))[0] == "met"


def test_dose_only_as_text_is_unknown_with_the_text_in_the_reason() -> None:
    req = med_request("prednisone", None, None, frequency=None, text="prednisone 30 mg daily, taper weekly")
    v, why = gc(req)
    assert v == "unknown"
    assert "prednisone 30 mg daily, taper weekly" in why


def test_no_body_weight_is_unknown_naming_the_weight() -> None:
    v, why = gc(med_request("prednisone", 10, "mg"), kg=None)
    assert v == "unknown"
    assert "body weight" in why


def test_weight_in_lbs_is_converted() -> None:
    # 132.277 lb = 60 kg; 30 mg -> 0.5
    resources = [*without(baseline(), WEIGHT), weight(132.28, unit="lbs", ucum=False)]
    result = screen(*resources, med_request("prednisone", 29.4, "mg"))
    assert verdict(result, "glucocorticoid-dose") == "met"


def test_medication_statement_counts_as_taken() -> None:
    assert gc(med_statement("prednisone", 30, "mg"))[0] == "not-met"


@pytest.mark.parametrize("status", ["stopped", "cancelled", "draft", "entered-in-error", "entered-in-error "])
def test_orders_not_taken_do_not_count(status: str) -> None:
    req = med_request("prednisone", 60, "mg", status=status, start=days_ago(5))
    assert gc(req)[0] == "met"


def test_completed_order_counts_over_its_period() -> None:
    req = med_request("prednisone", 60, "mg", status="completed", start=days_ago(60), end=days_ago(20))
    assert gc(req)[0] == "not-met"


def test_order_that_ended_29_days_ago_is_outside_the_28_day_window() -> None:
    req = med_request("prednisone", 60, "mg", status="completed", start=days_ago(60), end=days_ago(29))
    assert gc(req)[0] == "met"


def test_order_that_ended_28_days_ago_is_inside_the_window() -> None:
    req = med_request("prednisone", 60, "mg", status="completed", start=days_ago(60), end=days_ago(28))
    assert gc(req)[0] == "not-met"


def test_concurrent_glucocorticoids_are_summed_per_day() -> None:
    # prednisone 20 mg + methylprednisolone 8 mg (10 mg eq) on the same days = 30 mg/d
    assert gc(med_request("prednisone", 20, "mg"), med_request("methylprednisolone", 8, "mg"))[0] == "not-met"


def test_oral_methylprednisolone_is_not_an_iv_dose() -> None:
    result = screen(*baseline(), med_request("methylprednisolone", 500, "mg", route=ORAL))
    assert verdict(result, "iv-glucocorticoid") == "not-met"
    assert verdict(result, "glucocorticoid-dose") == "not-met"


# --- iv-glucocorticoid --------------------------------------------------------------------------------
def test_iv_methylprednisolone_pulse_is_met() -> None:
    v, why = iv(med_admin("methylprednisolone", 500, "mg", date=days_ago(7)))
    assert v == "met"
    assert "intravenous" in why


def test_iv_exactly_1_mg_per_kg_per_day_is_not_met() -> None:
    # 48 mg methylprednisolone = 60 mg prednisone-equivalent / 60 kg = 1.0
    v, why = iv(med_admin("methylprednisolone", 48, "mg"))
    assert v == "not-met"
    assert "= 1 mg/kg/d" in why


def test_iv_just_above_1_mg_per_kg_per_day_is_met() -> None:
    assert iv(med_admin("methylprednisolone", 49, "mg"))[0] == "met"


def test_iv_route_in_local_text_only_counts() -> None:
    route = {"text": "静脉滴注"}
    assert iv(med_admin("甲泼尼龙 methylprednisolone", 500, "mg", route=route))[0] == "met"


def test_iv_administration_29_days_ago_is_outside_the_window() -> None:
    assert iv(med_admin("methylprednisolone", 500, "mg", date=days_ago(29)))[0] == "not-met"


def test_iv_administration_28_days_ago_is_inside_the_window() -> None:
    assert iv(med_admin("methylprednisolone", 500, "mg", date=days_ago(28)))[0] == "met"


def test_no_iv_glucocorticoid_is_not_met_with_evidence() -> None:
    result = screen(*baseline())
    assert verdict(result, "iv-glucocorticoid") == "not-met"
    assert "no intravenous glucocorticoid" in reason(result, "iv-glucocorticoid")


def test_iv_dose_without_weight_is_unknown() -> None:
    result = screen(*without(baseline(), WEIGHT), med_admin("methylprednisolone", 500, "mg"))
    assert verdict(result, "iv-glucocorticoid") == "unknown"


def test_iv_administration_counts_towards_the_systemic_dose_too() -> None:
    result = screen(*baseline(), med_admin("methylprednisolone", 500, "mg"))
    assert verdict(result, "glucocorticoid-dose") == "not-met"
    assert result.status is Status.INELIGIBLE


def test_request_with_its_administrations_is_not_counted_twice() -> None:
    # A request for 24 mg/d methylprednisolone IV whose one administration is in the record: 30 mg eq, not 60
    req = med_request("methylprednisolone", 24, "mg", route=IV, id="rq1")
    adm = med_admin("methylprednisolone", 24, "mg", request={"reference": "MedicationRequest/rq1"})
    v, why = gc(req, adm)
    assert v == "not-met"
    assert "30 mg/d" in why and "60 mg/d" not in why


# --- immunosuppressant-stable -------------------------------------------------------------------------
def stable(*meds: Res) -> tuple[str, str]:
    result = screen(*baseline(), *meds)
    return verdict(result, "immunosuppressant-stable"), reason(result, "immunosuppressant-stable")


def mtx(start_days: int, dose: float = 10, **kw: object) -> Res:
    return med_request(
        "methotrexate 2.5 MG Oral Tablet",
        dose,
        "mg",
        period=1,
        period_unit="wk",
        start=days_ago(start_days),
        **kw,
    )


def test_no_immunosuppressant_is_met() -> None:
    v, why = stable()
    assert v == "met"
    assert "no immunosuppressant" in why


def test_immunosuppressant_started_84_days_ago_is_within_the_window_so_not_met() -> None:
    v, why = stable(mtx(84))
    assert v == "not-met"
    assert "first recorded" in why


def test_immunosuppressant_started_85_days_ago_is_outside_the_window_so_met() -> None:
    assert stable(mtx(85))[0] == "met"


def test_first_order_decides_the_start_not_a_later_renewal() -> None:
    first = mtx(300, status="completed", end=days_ago(100))
    renewal = mtx(100)
    assert stable(first, renewal)[0] == "met"


def test_immunosuppressant_by_atc_prefix_and_statement_counts() -> None:
    stmt = med_statement("CellCept", 1000, "mg", start=days_ago(30))
    stmt["medicationCodeableConcept"] = {"coding": [{"system": "http://www.whocc.no/atc", "code": "L04AA06"}]}
    assert stable(stmt)[0] == "not-met"


def test_mycophenolate_started_30_days_ago_is_not_met() -> None:
    assert (
        stable(
            med_request("mycophenolate mofetil 500 MG Oral Tablet", 2, None, frequency=2, start=days_ago(30))
        )[0]
        == "not-met"
    )


def test_hydroxychloroquine_is_not_an_immunosuppressant() -> None:
    assert (
        stable(med_request("hydroxychloroquine 200 MG Oral Tablet", 1, None, start=days_ago(10)))[0] == "met"
    )


def test_dose_change_within_28_days_is_not_met() -> None:
    before = mtx(200, 10, status="completed", end=days_ago(21))
    after = mtx(20, 15)
    v, why = stable(before, after)
    assert v == "not-met"
    assert "->" in why


def test_dose_change_29_days_ago_is_outside_the_window() -> None:
    before = mtx(200, 10, status="completed", end=days_ago(30))
    after = mtx(29, 15)
    assert stable(before, after)[0] == "met"


def test_dose_change_exactly_28_days_ago_is_inside_the_window() -> None:
    before = mtx(200, 10, status="completed", end=days_ago(29))
    after = mtx(28, 15)
    assert stable(before, after)[0] == "not-met"


def test_renewal_at_the_same_dose_is_not_a_change() -> None:
    before = mtx(200, 10, status="completed", end=days_ago(11))
    after = mtx(10, 10)
    assert stable(before, after)[0] == "met"


def test_renewal_with_an_unreadable_dose_is_unknown() -> None:
    before = mtx(200, 10, status="completed", end=days_ago(11))
    after = med_request("methotrexate", None, None, frequency=None, start=days_ago(10), text="as directed")
    v, why = stable(before, after)
    assert v == "unknown"
    assert "as directed" in why


def test_immunosuppressant_without_a_start_date_is_unknown() -> None:
    req = med_request("tacrolimus", 1, "mg")
    for key in ("authoredOn",):
        req.pop(key)
    req["dosageInstruction"][0]["timing"]["repeat"].pop("boundsPeriod")
    v, why = stable(req)
    assert v == "unknown"
    assert "no start date" in why


def test_immunosuppressant_coded_rxnorm_ingredient() -> None:
    req = med_request(medication={"medicationCodeableConcept": drug("Arava", "27169")}, start=days_ago(5))
    assert stable(req)[0] == "not-met"


# --- regressions: each of these was a defect found in review ----------------------------------------
@pytest.mark.parametrize(("dose", "hours"), [(15, 12), (10, 8), (5, 4)], ids=["q12h", "q8h", "q4h"])
def test_every_n_hours_gives_an_exact_daily_dose(dose: float, hours: int) -> None:
    v, why = gc(med_request("prednisone", dose, "mg", frequency=1, period=hours, period_unit="h"))
    assert v == "not-met"
    assert "30 mg/d" in why


def _taper(first_mg: float, current_mg: float) -> Res:
    """One order with two sequenced dosages: first_mg daily 60..41 days ago, then current_mg daily since 40 days ago."""
    req = med_request("prednisone", first_mg, "mg", start=days_ago(60), end=days_ago(41))
    step2 = dosage(current_mg, "mg", 1, start=days_ago(40))
    req["dosageInstruction"][0]["sequence"] = 1
    step2["sequence"] = 2
    req["dosageInstruction"].append(step2)
    return req


def test_current_step_of_a_sequenced_taper_counts() -> None:
    v, why = gc(_taper(60, 40))
    assert v == "not-met"
    assert "40 mg/d" in why


# --- dose shapes --------------------------------------------------------------------------------------
def test_iv_dose_in_mg_per_kg_uses_the_body_weight() -> None:
    v, why = iv(med_admin("methylprednisolone", 10, "mg/kg"))  # 600 mg x 1.25 = 750 mg / 60 kg
    assert v == "met"
    assert "12.5 mg/kg/d" in why


def test_iv_dose_in_grams_is_converted_to_mg() -> None:
    assert "625 mg/d" in iv(med_admin("methylprednisolone", 0.5, "g"))[1]


def test_oral_solution_dose_in_ml_uses_the_concentration_in_the_name() -> None:
    assert "30 mg/d" in gc(med_request("Prednisolone 5 mg/mL oral solution", 6, "mL"))[1]


def test_dose_range_takes_the_highest_dose_the_order_allows() -> None:
    req = med_request("prednisone", 30, "mg")
    req["dosageInstruction"][0]["doseAndRate"] = [
        {
            "doseRange": {
                "low": {"value": 20, "unit": "mg", "code": "mg"},
                "high": {"value": 30, "unit": "mg", "code": "mg"},
            }
        }
    ]
    assert gc(req)[0] == "not-met"


def test_on_hold_order_counts_as_taken() -> None:
    assert gc(med_request("prednisone", 30, "mg", status="on-hold"))[0] == "not-met"


def test_dose_unit_that_is_not_a_mass_is_unknown_naming_the_unit() -> None:
    v, why = gc(med_request("prednisone", 2, "puff"))
    assert v == "unknown"
    assert "puff" in why
