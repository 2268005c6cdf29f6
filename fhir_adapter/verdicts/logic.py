"""Kleene three-valued logic over verdicts (spec section 2)."""

from __future__ import annotations

from collections.abc import Sequence

from fhir_adapter.model import Verdict

MET, NOT_MET, UNKNOWN = Verdict.MET, Verdict.NOT_MET, Verdict.UNKNOWN


def all_of(values: Sequence[Verdict]) -> Verdict:
    if NOT_MET in values:
        return NOT_MET
    return UNKNOWN if UNKNOWN in values else MET


def any_of(values: Sequence[Verdict]) -> Verdict:
    if MET in values:
        return MET
    return UNKNOWN if UNKNOWN in values else NOT_MET


def negate(value: Verdict) -> Verdict:
    return {MET: NOT_MET, NOT_MET: MET}.get(value, UNKNOWN)


def at_least(k: int, values: Sequence[Verdict]) -> Verdict:
    """Met as soon as k are met; not-met as soon as fewer than k can still be met."""
    met = sum(v is MET for v in values)
    possible = met + sum(v is UNKNOWN for v in values)
    if met >= k:
        return MET
    return NOT_MET if possible < k else UNKNOWN
