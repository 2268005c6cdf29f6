"""Components and DiagnosticReport panels give readings through the same path as whole Observations, for
every measurement-like fact of both shipped trials (the table is read off the mappings, not written here).

Each fact gets: a reading from a component of a differently coded parent (the parent's date, status and
subject; evidence cites the parent and names the component); a reading from an Observation contained in a
DiagnosticReport; a record Observation without a date, dated by the report that references it, and read
once although it is both in the record and in the report.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from functools import cache
from typing import Any

import pytest
from fhirdata import (
    AS_OF,
    CK,
    DM,
    HGB,
    LOINC,
    MMT8,
    PGA,
    SCT,
    UCUM,
    baseline,
    cc,
    condition,
    days_ago,
    observation,
    patient,
    record,
    screen,
    verdict,
    without,
)

from fhir_adapter.config.loader import load_trials
from fhir_adapter.config.types import FactSpec, Mappings
from fhir_adapter.facts.derive import context
from fhir_adapter.model import Fact, PatientRecord

Res = dict[str, Any]
LOCAL = "http://hospital.example.org/fhir/CodeSystem/panels"
VALUE_KINDS = ("measurement", "uln-ratio")


@cache
def _trials() -> list[Mappings]:
    return load_trials(["NCT05495321", "NCT02728752"])


def _facts_read_by(trials: list[Mappings]) -> set[str]:
    from fhir_adapter.screening import criterion_facts

    names: set[str] = set()
    for m in trials:
        for c in m.trial.criteria:
            names.update(criterion_facts(c))
    # The inputs of facts the criteria compare: weight and height of the BMI, and so on.
    pending = list(names)
    while pending:
        spec = trials[0].facts[pending.pop()]
        for key, value in spec.params.items():
            if key.endswith("_fact") and isinstance(value, str) and value not in names:
                names.add(value)
                pending.append(value)
    return names


def _measurement_facts() -> list[str]:
    trials = _trials()
    facts = trials[0].facts
    used = _facts_read_by(trials)
    found = sorted(n for n in used if facts[n].kind in (*VALUE_KINDS, "qualitative"))
    return found


def _code(m: Mappings, concept: str) -> tuple[str, str]:
    return sorted(m.concepts[concept].codes)[0]


def _value(spec: FactSpec) -> Res:
    """A value element for the fact: 50 in its unit (a reference range of 100 for ULN ratios), or a
    positive coded result for qualitative facts."""
    if spec.kind == "qualitative":
        return {"valueCodeableConcept": cc(SCT, "10828004", "Positive")}
    unit = str(spec.get("unit"))
    out: Res = {"valueQuantity": {"value": 50, "unit": unit, "system": UCUM, "code": unit}}
    if spec.kind == "uln-ratio":
        out["referenceRange"] = [{"high": {"value": 100, "unit": unit, "system": UCUM, "code": unit}}]
    return out


def _expected(spec: FactSpec) -> Decimal | bool:
    if spec.kind == "qualitative":
        return True
    return Decimal("0.5") if spec.kind == "uln-ratio" else Decimal(50)


def _fact(name: str, *resources: Res) -> Fact:
    trials = _trials()
    ctx = context(record(patient(), condition(DM), *resources), trials[0], AS_OF)
    return ctx.fact(name)


def _parent(*components: Res, **extra: Any) -> Res:
    return observation((LOCAL, "PANEL"), None, id="parent", date=days_ago(5), **extra) | {
        "component": list(components)
    }


def _component(m: Mappings, spec: FactSpec) -> Res:
    system, code = _code(m, str(spec.get("concept")))
    return {"code": cc(system, code, text=f"{spec.label} item"), **_value(spec)}


MEASUREMENT_FACTS = _measurement_facts()


def test_the_table_covers_every_measurement_concept_of_both_trials() -> None:
    facts = _trials()[0].facts
    concepts = {str(facts[n].get("concept")) for n in MEASUREMENT_FACTS}
    assert {"mmt8", "pga", "phga", "haq", "extramuscular-vas", "cutaneous-vas"} <= concepts
    assert {"ck", "aldolase", "ldh", "alt", "ast", "total-bilirubin", "hemoglobin", "platelets"} <= concepts
    assert {"body-weight", "body-height", "bmi", "hbsag", "anti-hcv"} <= concepts


@pytest.mark.parametrize("name", MEASUREMENT_FACTS)
def test_a_component_gives_a_reading_with_the_parents_date_and_names_parent_and_component(name: str) -> None:
    m = _trials()[0]
    spec = m.facts[name]
    fact = _fact(name, _parent(_component(m, spec)))
    assert fact.value == _expected(spec), fact.reason
    assert [e.reference for e in fact.evidence] == ["Observation/parent"]
    assert f"component '{spec.label} item'" in fact.evidence[0].detail
    assert days_ago(5) in fact.evidence[0].detail


@pytest.mark.parametrize("name", MEASUREMENT_FACTS)
def test_a_component_of_an_ignored_or_old_parent_is_not_a_reading(name: str) -> None:
    m = _trials()[0]
    spec = m.facts[name]
    assert _fact(name, _parent(_component(m, spec), status="entered-in-error ")).value is None
    old = _parent(_component(m, spec))
    old["effectiveDateTime"] = days_ago(4000)
    assert _fact(name, old).value is None


@pytest.mark.parametrize("name", MEASUREMENT_FACTS)
def test_an_observation_contained_in_a_diagnostic_report_is_a_reading_dated_by_the_report(name: str) -> None:
    m = _trials()[0]
    spec = m.facts[name]
    system, code = _code(m, str(spec.get("concept")))
    member = {
        "resourceType": "Observation",
        "id": "m1",
        "status": "final",
        "code": cc(system, code),
        **_value(spec),
    }
    report = _report("r1", contained=[member], result=[{"reference": "#m1"}])
    fact = _fact(name, report)
    assert fact.value == _expected(spec), fact.reason
    assert [e.reference for e in fact.evidence] == ["DiagnosticReport/r1"]
    assert "contained Observation #m1" in fact.evidence[0].detail and days_ago(3) in fact.evidence[0].detail


@pytest.mark.parametrize("name", MEASUREMENT_FACTS)
def test_a_referenced_member_without_a_date_takes_the_reports_and_is_read_once(name: str) -> None:
    m = _trials()[0]
    spec = m.facts[name]
    system, code = _code(m, str(spec.get("concept")))
    member = observation((system, code), None, id="m2") | _value(spec)
    del member["effectiveDateTime"]
    alone = _fact(name, member)
    assert alone.value is None  # undated, and no report dates it
    report = _report("r2", result=[{"reference": "Observation/m2"}])
    fact = _fact(name, member, report)
    assert fact.value == _expected(spec), fact.reason
    assert [e.reference for e in fact.evidence] == ["Observation/m2"]  # once, as itself
    assert "date from DiagnosticReport/r2" in fact.evidence[0].detail


def _report(rid: str, **extra: Any) -> Res:
    return {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": "final",
        "code": cc(LOINC, "24323-8", "Comprehensive metabolic panel"),
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": days_ago(3),
        "issued": days_ago(3) + "T12:00:00Z",
        **extra,
    }


# -- the derived facts: their inputs come through the same path -----------------------------------------
def _quantity(value: float, unit: str) -> Res:
    return {"valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}


def test_measured_creatinine_clearance_and_cockcroft_gault_inputs_come_from_components() -> None:
    measured = _parent({"code": cc(LOINC, "2164-2", text="Creatinine clearance"), **_quantity(25, "mL/min")})
    fact = _fact("creatinine-clearance", measured)
    assert fact.value == Decimal(25) and "component 'Creatinine clearance'" in fact.reason
    labs = _parent(
        {"code": cc(LOINC, "2160-0", text="Creatinine"), **_quantity(400, "umol/L")},
        {"code": cc(LOINC, "29463-7", text="Weight"), **_quantity(60, "kg")},
    )
    computed = _fact("creatinine-clearance", labs)
    assert isinstance(computed.value, Decimal) and computed.value < 30, computed.reason
    assert {e.reference for e in computed.evidence} >= {"Observation/parent"}


def test_bmi_is_computed_from_weight_and_height_components_of_a_vital_signs_panel() -> None:
    vitals = _parent(
        {"code": cc(LOINC, "29463-7", text="Body weight"), **_quantity(111.6, "kg")},
        {"code": cc(LOINC, "8302-2", text="Body height"), **_quantity(165, "cm")},
    )
    fact = _fact("bmi", vitals)
    assert isinstance(fact.value, Decimal) and round(fact.value, 1) == Decimal("41.0"), fact.reason


def test_nyha_class_from_a_component() -> None:
    hf = condition((SCT, "84114007"), "Heart failure")
    graded = _parent({"code": cc(LOINC, "88020-3", text="NYHA class"), "valueInteger": 3})
    fact = _fact("heart-failure-nyha-3-4", hf, graded)
    assert fact.value is True and fact.evidence[0].reference == "Observation/parent"
    assert "component 'NYHA class'" in fact.evidence[0].detail


# -- specific rules --------------------------------------------------------------------------------------
def test_components_of_a_parent_coded_as_the_concept_are_its_parts_not_more_readings() -> None:
    muscles = [
        {"code": cc(MMT8[0], MMT8[1], text="MMT-8 deltoid"), "valueInteger": 9},
        {"code": cc(MMT8[0], MMT8[1], text="MMT-8 neck flexors"), "valueInteger": 8},
    ]
    total = observation(MMT8, 110, id="mmt-total", date=days_ago(5)) | {"component": muscles}
    fact = _fact("mmt8", total)
    assert fact.value == Decimal(110) and [e.reference for e in fact.evidence] == ["Observation/mmt-total"]
    assert "component" not in fact.evidence[0].detail


def test_two_components_of_one_observation_that_disagree_are_unknown() -> None:
    two = _parent(
        {"code": cc(*PGA), "valueQuantity": {"value": 5, "unit": "cm", "system": UCUM, "code": "cm"}},
        {"code": cc(*PGA), "valueQuantity": {"value": 1, "unit": "cm", "system": UCUM, "code": "cm"}},
    )
    fact = _fact("pga", two)
    assert fact.value is None and "more than one result" in fact.reason
    same = _parent(
        {"code": cc(*PGA), "valueQuantity": {"value": 5, "unit": "cm", "system": UCUM, "code": "cm"}},
        {"code": cc(*PGA), "valueQuantity": {"value": 5, "unit": "cm", "system": UCUM, "code": "cm"}},
    )
    assert _fact("pga", same).value == Decimal(5)  # the same value twice is no disagreement


def test_a_newer_whole_observation_wins_over_an_older_component_and_ties_follow_issued() -> None:
    comp = _parent(
        {"code": cc(*CK), "valueQuantity": {"value": 900, "unit": "U/L", "system": UCUM, "code": "U/L"}}
    )
    newer = observation(CK, 100, "U/L", date=days_ago(1), id="ck-new", ref_high=200)
    fact = _fact("ck-x-uln", comp, newer)
    assert fact.value == Decimal("0.5") and fact.evidence[0].reference == "Observation/ck-new"


def test_a_panel_member_keeps_its_own_date_over_the_reports() -> None:
    member = observation(HGB, 75, "g/L", id="h1", date=days_ago(200))  # outside the 90 days
    report = _report("r3", result=[{"reference": "Observation/h1"}])
    assert _fact("hemoglobin", member, report).value is None


def test_an_entered_in_error_report_contains_nothing_and_dates_nothing() -> None:
    member = {"resourceType": "Observation", "id": "c1", "status": "final", "code": cc(*HGB)} | {
        "valueQuantity": {"value": 75, "unit": "g/L", "system": UCUM, "code": "g/L"}
    }
    report = _report("r4", status="entered-in-error", contained=[member], result=[{"reference": "#c1"}])
    assert _fact("hemoglobin", report).value is None


def test_the_screen_uses_components_end_to_end_for_active_disease() -> None:
    resources = without(without(baseline(), MMT8), PGA)
    resources.append(
        _parent(
            {"code": cc(*MMT8), "valueInteger": 100},
            {"code": cc(*PGA), "valueQuantity": {"value": 4.5, "unit": "cm", "system": UCUM, "code": "cm"}},
        )
    )
    result = screen(*resources)
    assert verdict(result, "active-disease", "mmt8") == "met"
    assert verdict(result, "active-disease", "csm-pga") == "met"
    assert result.status.value == "candidate"


def test_record_without_reports_or_components_is_read_as_the_same_objects() -> None:
    from fhir_adapter.facts.readings import build_views

    obs = observation(HGB, 120, "g/L")
    rec: PatientRecord = record(patient(), obs)
    views = build_views(rec)
    assert views.same_as_record and views.whole[0] is obs and views.components == ()
    assert dt.date.fromisoformat(days_ago(0)) == AS_OF
