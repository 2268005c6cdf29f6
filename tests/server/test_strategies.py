"""Strategies read off a CapabilityStatement: what is stated is used, what is not stated is not assumed,
and an operator's choice wins."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_adapter.errors import UsageError
from fhir_adapter.source.strategies import (
    Overrides,
    choose_candidates,
    choose_changes,
    choose_records,
    read_capabilities,
)

TYPES = ("Observation", "Condition")


def statement(
    *,
    everything: bool = False,
    history: bool = False,
    last_updated: bool = False,
    export: tuple[str, ...] = (),
) -> dict[str, Any]:
    def resource(rtype: str) -> dict[str, Any]:
        interactions = [{"code": "search-type"}, {"code": "read"}] + (
            [{"code": "history-type"}] if history else []
        )
        params = [{"name": "patient"}] + ([{"name": "_lastUpdated"}] if last_updated else [])
        ops = []
        if rtype == "Patient" and everything:
            ops.append({"name": "everything"})
        if (rtype == "Patient" and "patient" in export) or (rtype == "Group" and "group" in export):
            ops.append({"name": "export"})
        return {"type": rtype, "interaction": interactions, "searchParam": params, "operation": ops}

    rest: dict[str, Any] = {"mode": "server", "resource": [resource(t) for t in (*TYPES, "Patient", "Group")]}
    if "system" in export:
        rest["operation"] = [{"name": "export"}]
    return {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "rest": [rest]}


def test_a_full_server_gets_everything_and_history() -> None:
    caps = read_capabilities(statement(everything=True, history=True, last_updated=True, export=("system",)))
    assert choose_records(caps) == "everything"
    assert choose_changes(caps, TYPES) == "history"
    assert choose_candidates(caps) == "search"
    assert caps.export_levels == {"system"}


@pytest.mark.parametrize(
    ("kwargs", "changes"),
    [
        ({"last_updated": True}, "last-updated"),
        ({"export": ("group",)}, "bulk"),
        ({}, "full-only"),
    ],
)
def test_without_a_history_the_next_best_change_feed(kwargs: dict[str, Any], changes: str) -> None:
    caps = read_capabilities(statement(**kwargs))
    assert choose_records(caps) == "typed"
    assert choose_changes(caps, TYPES) == changes


def test_what_is_not_stated_is_not_assumed() -> None:
    caps = read_capabilities(
        {
            "resourceType": "CapabilityStatement",
            "rest": [
                {"mode": "client", "resource": [{"type": "Patient", "operation": [{"name": "everything"}]}]}
            ],
        }
    )
    assert not caps.everything and caps.export_levels == frozenset()
    assert choose_changes(caps, TYPES) == "full-only"
    with pytest.raises(UsageError):
        choose_candidates(caps)


def test_garbage_statements_give_no_capabilities() -> None:
    for junk in (
        {},
        {"rest": 5},
        {"rest": [5, None, {"resource": "x"}]},
        {"rest": [{"resource": [{"type": 3}]}]},
    ):
        caps = read_capabilities(junk)
        assert (not caps.everything and caps.types == {}) or all(isinstance(k, str) for k in caps.types)


def test_an_operator_choice_wins() -> None:
    caps = read_capabilities(statement(everything=True, history=True))
    forced = Overrides(records="typed", changes="full-only", candidates="group")
    assert choose_records(caps, forced.records) == "typed"
    assert choose_changes(caps, TYPES, forced.changes) == "full-only"
    assert choose_candidates(caps, forced=forced.candidates) == "group"


def test_given_patients_and_groups_come_before_a_search() -> None:
    caps = read_capabilities(statement(everything=True))
    assert choose_candidates(caps, given=True) == "given"
    assert choose_candidates(caps, group=True) == "group"
