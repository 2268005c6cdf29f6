"""Tolerant accessors over a screening result as parsed from JSON (prescreening-spec section 1).

The report reads what the engine wrote and never raises on an odd shape: a missing list is
empty, a missing string is "", a criterion without an id is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Result = Mapping[str, Any]
Subject = Mapping[str, Any]
Criterion = Mapping[str, Any]

STATUSES = ("candidate", "potential-candidate", "ineligible")
VERDICTS = ("met", "not-met", "unknown", "not-evaluable", "not-applicable")


def text(value: Any) -> str:
    """A string field as text: None is "", anything else its str()."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def subjects(result: Result) -> list[Subject]:
    return _mappings(result.get("subjects"))


def errors(result: Result) -> list[Mapping[str, Any]]:
    return _mappings(result.get("errors"))


def criteria(subject: Subject) -> list[Criterion]:
    return [c for c in _mappings(subject.get("criteria")) if text(c.get("id"))]


def components(criterion: Criterion) -> list[Criterion]:
    return [c for c in _mappings(criterion.get("components")) if text(c.get("id"))]


def evidence(criterion: Criterion) -> list[Mapping[str, Any]]:
    return _mappings(criterion.get("evidence"))


def suggestions(criterion: Criterion) -> list[Mapping[str, Any]]:
    """Values found in notes for the criterion or component (``suggestions``; absent means none)."""
    return _mappings(criterion.get("suggestions"))


def patient(subject: Subject) -> str:
    return text(subject.get("patient"))


def status(subject: Subject) -> str:
    return text(subject.get("status"))


def verdict(criterion: Criterion) -> str:
    return text(criterion.get("verdict"))


def by_id(subject: Subject) -> dict[str, Criterion]:
    """The subject's criteria by id (the first one wins if an id repeats)."""
    out: dict[str, Criterion] = {}
    for c in criteria(subject):
        out.setdefault(text(c.get("id")), c)
    return out


@dataclass(frozen=True, slots=True)
class CriterionSpec:
    """One criterion column of the report: its id and its type as the result gives it."""

    id: str
    type: str  # "inclusion" | "exclusion" | "component" | whatever the result says


def _order_of(lists: Sequence[Sequence[Criterion]], order: Sequence[str] | None) -> list[CriterionSpec]:
    """Ids in ``order`` first (if given), then those of the longest list, then any others as met."""
    types: dict[str, str] = {}
    seen_order: list[str] = []
    # The longest list (first one on ties) sets the order; the others only add ids it lacks.
    longest = max(range(len(lists)), key=lambda i: (len(lists[i]), -i), default=None)
    ordered_lists = ([lists[longest]] if longest is not None else []) + [
        lst for i, lst in enumerate(lists) if i != longest
    ]
    for lst in ordered_lists:
        for c in lst:
            cid = text(c.get("id"))
            if cid not in types:
                types[cid] = text(c.get("type"))
                seen_order.append(cid)
    head = list(dict.fromkeys(order or ()))
    ids = head + [cid for cid in seen_order if cid not in head]
    return [CriterionSpec(cid, types.get(cid, "")) for cid in ids]


def criterion_order(result: Result, order: Sequence[str] | None = None) -> list[CriterionSpec]:
    """The top-level criteria in report order.

    Without ``order``: as the first subject with the most criteria lists them, followed by any
    id only other subjects carry. With ``order``: those ids first (even if no subject has them),
    then the rest as above. Types come from the result.
    """
    return _order_of([criteria(s) for s in subjects(result)], order)


def component_order(result: Result, parent: str, order: Sequence[str] | None = None) -> list[CriterionSpec]:
    """Components of criterion ``parent`` in report order, chosen the same way."""
    lists = [components(c) for s in subjects(result) for c in criteria(s) if text(c.get("id")) == parent]
    return _order_of(lists, order)
