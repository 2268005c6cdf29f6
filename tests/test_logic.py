"""Kleene three-valued logic (spec section 2) and comparisons of censored values ("<0.06")."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from fhir_adapter.model import Verdict
from fhir_adapter.verdicts.evaluate import compare_censored
from fhir_adapter.verdicts.logic import all_of, any_of, at_least, negate

T, F, U = Verdict.MET, Verdict.NOT_MET, Verdict.UNKNOWN

# Kleene's strong three-valued tables, written out in full (row: left operand, column: right operand).
AND_TABLE = {
    (T, T): T, (T, U): U, (T, F): F,
    (U, T): U, (U, U): U, (U, F): F,
    (F, T): F, (F, U): F, (F, F): F,
}  # fmt: skip
OR_TABLE = {
    (T, T): T, (T, U): T, (T, F): T,
    (U, T): T, (U, U): U, (U, F): U,
    (F, T): T, (F, U): U, (F, F): F,
}  # fmt: skip
NOT_TABLE = {T: F, U: U, F: T}


@pytest.mark.parametrize(("a", "b"), list(AND_TABLE))
def test_all_of_follows_the_kleene_and_table(a: Verdict, b: Verdict) -> None:
    assert all_of([a, b]) is AND_TABLE[a, b]


@pytest.mark.parametrize(("a", "b"), list(OR_TABLE))
def test_any_of_follows_the_kleene_or_table(a: Verdict, b: Verdict) -> None:
    assert any_of([a, b]) is OR_TABLE[a, b]


@pytest.mark.parametrize("a", list(NOT_TABLE))
def test_negate_follows_the_kleene_not_table(a: Verdict) -> None:
    assert negate(a) is NOT_TABLE[a]


def test_negate_is_an_involution_on_all_three_values() -> None:
    assert all(negate(negate(v)) is v for v in (T, F, U))


@pytest.mark.parametrize("values", list(itertools.product((T, F, U), repeat=3)))
def test_three_operand_and_or_agree_with_folding_the_binary_tables(values: tuple[Verdict, ...]) -> None:
    a, b, c = values
    assert all_of(list(values)) is AND_TABLE[AND_TABLE[a, b], c]
    assert any_of(list(values)) is OR_TABLE[OR_TABLE[a, b], c]


@pytest.mark.parametrize("values", list(itertools.product((T, F, U), repeat=2)))
def test_de_morgan_holds_in_three_valued_logic(values: tuple[Verdict, ...]) -> None:
    assert negate(all_of(list(values))) is any_of([negate(v) for v in values])


def test_empty_all_of_is_met_and_empty_any_of_is_not_met() -> None:
    assert all_of([]) is T
    assert any_of([]) is F


# --- AT-LEAST(k of n) ----------------------------------------------------------------------------------
def _at_least_oracle(k: int, values: tuple[Verdict, ...]) -> Verdict:
    """Met when every way of resolving the unknowns has >= k met, not-met when none has, else unknown."""
    unknown = sum(v is U for v in values)
    met = sum(v is T for v in values)
    outcomes = {met + extra >= k for extra in range(unknown + 1)}
    return T if outcomes == {True} else F if outcomes == {False} else U


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_at_least_matches_the_spec_rule_for_every_combination(n: int) -> None:
    for k in range(1, n + 1):
        for values in itertools.product((T, F, U), repeat=n):
            assert at_least(k, list(values)) is _at_least_oracle(k, values), (k, values)


@pytest.mark.parametrize(
    ("k", "values", "expected"),
    [
        (2, [T, T, U, U, U], T),  # met as soon as k are met, whatever the unknowns
        (2, [T, F, F, F, U], U),  # one more could still be met
        (2, [T, F, F, F, F], F),  # one met and nothing left that could be met
        (2, [F, F, F, U, F], F),  # fewer than k can still be met: 0 met + 1 unknown < 2
        (3, [T, T, U, F, F], U),
        (3, [T, T, F, F, F], F),
        (3, [T, T, T, F, F], T),
        (3, [U, U, U, U, U], U),
        (2, [T, T], T),
        (2, [T, U], U),
    ],
)
def test_at_least_with_unknowns(k: int, values: list[Verdict], expected: Verdict) -> None:
    assert at_least(k, values) is expected


# --- compare_censored ----------------------------------------------------------------------------------
OPS = ["<", "<=", ">", ">="]


def _holds(v: Decimal, op: str, t: Decimal) -> bool:
    return {"<": v < t, "<=": v <= t, ">": v > t, ">=": v >= t, "==": v == t, "!=": v != t}[op]


def _censored_oracle(x: Decimal, comparator: str | None, op: str, t: Decimal) -> Verdict:
    """Sample the possible true values (a half-line, or the point x) at every point where the answer can change."""
    eps = Decimal("0.001")
    points = {x, t, x - eps, x + eps, t - eps, t + eps, x - 1000, x + 1000}
    possible = [
        v for v in points if (comparator is None and v == x) or (comparator and _holds(v, comparator, x))
    ]
    answers = {_holds(v, op, t) for v in possible}
    return T if answers == {True} else F if answers == {False} else U


@pytest.mark.parametrize("comparator", [None, "<", "<=", ">", ">="])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(("x", "t"), [("1", "2"), ("2", "2"), ("3", "2")])
def test_compare_censored_against_every_operator(comparator: str | None, op: str, x: str, t: str) -> None:
    got = compare_censored(Decimal(x), comparator, op, Decimal(t))
    assert got is _censored_oracle(Decimal(x), comparator, op, Decimal(t))


@pytest.mark.parametrize(
    ("value", "comparator", "op", "threshold", "expected"),
    [
        # plain values, including equality at the boundary
        ("125", None, "<=", "125", T),
        ("125.001", None, "<=", "125", F),
        ("1.3", None, ">=", "1.3", T),
        ("80", None, "<", "80", F),
        ("30", None, "<=", "30", T),
        ("0.5", None, "<", "0.5", F),
        ("1", None, ">", "1", F),
        # "<0.06": the true value is below 0.06
        ("0.06", "<", "<", "0.06", T),
        ("0.06", "<", "<=", "0.06", T),
        ("0.06", "<", ">=", "0.06", F),
        ("0.06", "<", ">", "0.06", F),
        ("0.06", "<", "<", "0.05", U),
        ("0.06", "<", ">", "0.01", U),
        # "<=0.06": the true value may be exactly 0.06
        ("0.06", "<=", "<", "0.06", U),
        ("0.06", "<=", "<=", "0.06", T),
        ("0.06", "<=", ">", "0.06", F),
        ("0.06", "<=", ">=", "0.06", U),
        # ">3" and ">=3"
        ("3", ">", ">", "3", T),
        ("3", ">", ">=", "3", T),
        ("3", ">", "<=", "3", F),
        ("3", ">=", ">", "3", U),
        ("3", ">=", ">=", "3", T),
        ("3", ">=", "<", "3", F),
        ("3", ">=", "<=", "3", U),
        ("3", ">", ">", "5", U),
        ("3", ">", "<", "2", F),
    ],
)
def test_compare_censored_cases(
    value: str, comparator: str | None, op: str, threshold: str, expected: Verdict
) -> None:
    assert compare_censored(Decimal(value), comparator, op, Decimal(threshold)) is expected


@pytest.mark.parametrize("comparator", ["<=", ">="])
def test_compare_censored_equality_with_a_censored_value_that_allows_it_is_unknown(comparator: str) -> None:
    assert compare_censored(Decimal("5"), comparator, "==", Decimal("5")) is U


@pytest.mark.parametrize("comparator", ["<", ">"])
def test_compare_censored_equality_with_a_strictly_censored_boundary_is_not_met(comparator: str) -> None:
    # "<5" can never be exactly 5.
    assert compare_censored(Decimal("5"), comparator, "==", Decimal("5")) is F


def test_compare_interval_decides_only_when_every_value_agrees() -> None:
    # A year-only birthDate allows ages 45..46: both are >= 18; 75..76 straddles <= 75.
    assert compare_censored(Decimal(45), None, ">=", Decimal(18), upper=Decimal(46)) is T
    assert compare_censored(Decimal(75), None, "<=", Decimal(75), upper=Decimal(76)) is U
    assert compare_censored(Decimal(85), None, "<=", Decimal(75), upper=Decimal(86)) is F


def test_compare_without_float_drift_at_1_3_times_uln() -> None:
    # 260 / 200 is exactly 1.3 in Decimal; 0.1 * 3 style float drift must not push it below.
    assert compare_censored(Decimal(260) / Decimal(200), None, ">=", Decimal("1.3")) is T
    assert compare_censored(Decimal("259.99") / Decimal(200), None, ">=", Decimal("1.3")) is F


NE, NA = Verdict.NOT_EVALUABLE, Verdict.NOT_APPLICABLE


@pytest.mark.parametrize(("a", "b"), list(AND_TABLE))
def test_not_evaluable_operands_behave_as_unknown(a: Verdict, b: Verdict) -> None:
    # An OR whose other branch can never be decided ("or failed previous therapy") is met or unknown.
    ne = {U: NE}
    assert all_of([ne.get(a, a), ne.get(b, b)]) is AND_TABLE[(a, b)]
    assert any_of([ne.get(a, a), ne.get(b, b)]) is OR_TABLE[(a, b)]


def test_or_with_a_not_evaluable_branch_is_never_not_met() -> None:
    assert any_of([F, NE]) is U
    assert any_of([T, NE]) is T
    assert at_least(1, [F, NE]) is U
    assert at_least(2, [F, NE]) is F


def test_not_applicable_counts_for_nothing() -> None:
    assert all_of([T, NA]) is T
    assert any_of([F, NA]) is F
