"""Kleene three-valued logic over verdicts (spec section 2).

Inside AND, OR, NOT and AT-LEAST a ``not-evaluable`` operand is undecided, exactly like ``unknown``: an
OR whose other branch can never be decided from the record ("no recent change OR failed previous
therapy") is met when its decidable branch is, and unknown otherwise, never not-met.
``not-applicable`` counts for nothing (it is neither met nor undecided).
"""

from __future__ import annotations

from collections.abc import Sequence

from fhir_adapter.model import Verdict

MET, NOT_MET, UNKNOWN = Verdict.MET, Verdict.NOT_MET, Verdict.UNKNOWN
UNDECIDED = frozenset({Verdict.UNKNOWN, Verdict.NOT_EVALUABLE})


def all_of(values: Sequence[Verdict]) -> Verdict:
    if NOT_MET in values:
        return NOT_MET
    return UNKNOWN if any(v in UNDECIDED for v in values) else MET


def any_of(values: Sequence[Verdict]) -> Verdict:
    if MET in values:
        return MET
    return UNKNOWN if any(v in UNDECIDED for v in values) else NOT_MET


def negate(value: Verdict) -> Verdict:
    return {MET: NOT_MET, NOT_MET: MET}.get(value, UNKNOWN)


def at_least(k: int, values: Sequence[Verdict]) -> Verdict:
    """Met as soon as k are met; not-met as soon as fewer than k can still be met."""
    met = sum(v is MET for v in values)
    possible = met + sum(v in UNDECIDED for v in values)
    if met >= k:
        return MET
    return NOT_MET if possible < k else UNKNOWN
