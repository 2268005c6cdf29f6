"""Unit conversions of spec section 5, checked against expected values and cross-checked with ucumvert.

ucumvert (pint + a UCUM grammar) is an independent implementation. Its registry does not pass itself to
the transformer, so molar conversions need ``UcumToPintTransformer(ureg=...)`` (reference/libraries.md 4).
Molar factors are compared with a relative tolerance: the spec's 88.42 is rounded from 88.4017.
"""

from __future__ import annotations

import math
from decimal import Decimal
from functools import cache
from typing import Any

import pytest

from fhir_adapter.config.types import Mappings
from fhir_adapter.facts.units import convert, factor, normalise_unit, quantity_unit

# (value, source unit as it arrives, concept, canonical unit, expected value): spec section 5.
SPEC_PAIRS = [
    (Decimal("1"), "ukat/L", "ck", "U/L", Decimal("60")),
    (Decimal("2.5"), "ukat/L", "alt", "U/L", Decimal("150")),
    (Decimal("12.9"), "g/dL", "hemoglobin", "g/L", Decimal("129")),
    (Decimal("5"), "mmol/L", "hemoglobin", "g/L", Decimal("80.5725")),
    (Decimal("1"), "mg/dL", "creatinine", "umol/L", Decimal("88.42")),
    (Decimal("4.52"), "mg/dL", "creatinine", "umol/L", Decimal("399.6584")),
    (Decimal("1"), "mg/dL", "total-bilirubin", "umol/L", Decimal("17.104")),
    (Decimal("1.2"), "mg/dL", "total-bilirubin", "umol/L", Decimal("20.5248")),
    (Decimal("188"), "10*3/uL", "platelets", "10*9/L", Decimal("188")),
    (Decimal("154"), "[lb_av]", "body-weight", "kg", Decimal("69.85322498")),
    (Decimal("30"), "mm", "pga", "cm", Decimal("3.0")),
    (Decimal("20"), "mm", "phga", "cm", Decimal("2.0")),
    # aliases that arrive in Quantity.unit
    (Decimal("96"), "IU/L", "alt", "U/L", Decimal("96")),
    (Decimal("59"), "K/uL", "platelets", "10*9/L", Decimal("59")),
    (Decimal("154"), "lbs", "body-weight", "kg", Decimal("69.85322498")),
    (Decimal("0.71"), "mg/dl", "creatinine", "umol/L", Decimal("62.7782")),
    (Decimal("12"), "g/dl", "hemoglobin", "g/L", Decimal("120")),
]


@pytest.mark.parametrize(("value", "source", "concept", "target", "expected"), SPEC_PAIRS)
def test_convert_every_spec_pair_to_the_expected_value(
    mappings: Mappings, value: Decimal, source: str, concept: str, target: str, expected: Decimal
) -> None:
    assert convert(mappings.units, value, source, target, concept) == expected


def test_conversions_are_exact_decimals_so_boundaries_do_not_drift(mappings: Mappings) -> None:
    got = convert(mappings.units, Decimal("8.0"), "g/dL", "g/L", "hemoglobin")
    assert isinstance(got, Decimal)
    assert got == Decimal(80)  # exactly at the anemia boundary, no 79.99999


@pytest.mark.parametrize(
    ("source", "target", "concept"),
    [
        ("furlong", "kg", "body-weight"),
        ("mg/dL", "umol/L", "hemoglobin"),  # no molar mass assumed for hemoglobin in umol/L
        ("mmol/L", "g/L", "creatinine"),  # the 16.1145 factor is hemoglobin's, not creatinine's
        ("mg/dL", "umol/L", "ck"),  # creatinine's factor is limited to creatinine
        ("K/uL", "kg", "body-weight"),
        ("[IU]/mL", "U/L", "alt"),
        ("", "kg", "body-weight"),
    ],
)
def test_unknown_or_inapplicable_units_return_none(
    mappings: Mappings, source: str, target: str, concept: str
) -> None:
    assert factor(mappings.units, source, target, concept) is None
    assert convert(mappings.units, Decimal(1), source, target, concept) is None


def test_canonical_unit_converts_to_itself_with_factor_one(mappings: Mappings) -> None:
    assert factor(mappings.units, "U/L", "U/L", "ck") == 1
    assert factor(mappings.units, "g/L", "g/L", "hemoglobin") == 1


def test_reverse_conversion_uses_the_inverse_factor(mappings: Mappings) -> None:
    got = convert(mappings.units, Decimal(60), "U/L", "ukat/L", "ck")
    assert got is not None and abs(got - 1) < Decimal("1e-20")


@pytest.mark.parametrize(
    ("alias", "ucum"),
    [("IU/L", "U/L"), ("K/uL", "10*3/uL"), ("lbs", "[lb_av]"), ("mg/dl", "mg/dL"), ("MG/DL", "mg/dL")],
)
def test_aliases_normalise_to_ucum_codes(mappings: Mappings, alias: str, ucum: str) -> None:
    assert normalise_unit(mappings.units, alias) == ucum


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ({"value": 1, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}, "mg/dL"),
        ({"value": 1, "unit": "lbs", "system": "http://unitsofmeasure.org", "code": "[lb_av]"}, "[lb_av]"),
        ({"value": 1, "unit": "K/uL"}, "K/uL"),  # no UCUM code: the unit string
        ({"value": 1, "unit": "thousand", "system": "urn:local", "code": "TH"}, "thousand"),  # not UCUM
        ({"value": 1}, None),
    ],
)
def test_quantity_unit_reads_the_ucum_code_then_the_unit_string(
    quantity: dict[str, Any], expected: str | None
) -> None:
    assert quantity_unit(quantity) == expected


# --- Cross-check with ucumvert ------------------------------------------------------------------------
MOLAR_MASS = {"creatinine": 113.12, "total-bilirubin": 584.66, "hemoglobin": 16114.5}  # g/mol
UCUM_SPELLING = {"IU/L": "U/L", "K/uL": "10*3/uL", "lbs": "[lb_av]", "mg/dl": "mg/dL", "g/dl": "g/dL"}


@cache
def _ucum() -> Any:
    ucumvert = pytest.importorskip("ucumvert")
    from ucumvert.parser import parse_ucum

    registry = ucumvert.PintUcumRegistry()
    transform = ucumvert.UcumToPintTransformer(ureg=registry).transform
    parser = ucumvert.get_ucum_parser()

    @cache
    def unit(code: str) -> Any:
        return transform(parse_ucum(code, parser))

    def to(value: float, source: str, target: str, concept: str) -> float:
        quantity, goal = value * unit(source), unit(target)
        if quantity.dimensionality == goal.dimensionality:
            return float((quantity / goal).to("dimensionless").magnitude)
        mw = registry.Quantity(MOLAR_MASS[concept], "g/mol")  # mass <-> amount of substance
        return float(quantity.to(goal.units, "chemistry", mw=mw).magnitude / goal.magnitude)

    return to


@pytest.mark.parametrize(("value", "source", "concept", "target", "expected"), SPEC_PAIRS)
def test_every_spec_pair_agrees_with_ucumvert(
    mappings: Mappings, value: Decimal, source: str, concept: str, target: str, expected: Decimal
) -> None:
    to = _ucum()
    ours = convert(mappings.units, value, source, target, concept)
    assert ours is not None
    theirs = to(float(value), UCUM_SPELLING.get(source, source), target, concept)
    rel = 1e-3 if "mol" in source + target else 1e-9
    assert math.isclose(float(ours), theirs, rel_tol=rel), (ours, theirs)


def test_ucumvert_cross_check_catches_a_wrong_factor() -> None:
    # The cross-check itself must be able to fail: 1 mg/dL creatinine is not 17.104 umol/L.
    to = _ucum()
    assert not math.isclose(to(1.0, "mg/dL", "umol/L", "creatinine"), 17.104, rel_tol=1e-3)
    assert math.isclose(to(1.0, "mg/dL", "umol/L", "creatinine"), 88.42, rel_tol=1e-3)


@pytest.mark.parametrize(
    ("source", "target", "concept"),
    [
        ("g", "kg", "body-weight"),
        ("mL/s", "mL/min", "creatinine-clearance"),
        ("ug", "mg", "dose"),
        ("g", "mg", "dose"),
    ],
)
def test_other_table_conversions_agree_with_ucumvert(
    mappings: Mappings, source: str, target: str, concept: str
) -> None:
    ours = factor(mappings.units, source, target, concept)
    assert ours is not None
    assert math.isclose(float(ours), _ucum()(1.0, source, target, concept), rel_tol=1e-9)
