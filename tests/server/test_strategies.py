"""Strategies read off a CapabilityStatement: what is stated is used, what is not stated is not assumed,
and an operator's choice wins."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_adapter.errors import UsageError
from fhir_adapter.source.strategies import (
    Overrides,
    Strategies,
    bulk_level,
    choose_candidates,
    choose_changes,
    choose_records,
    choose_sync,
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
    ("kwargs", "group", "changes"),
    [
        ({"last_updated": True}, False, "last-updated"),
        ({"last_updated": True, "export": ("system",)}, False, "last-updated"),
        ({"export": ("group",)}, True, "bulk"),
        ({"export": ("system",)}, False, "bulk"),
        ({"export": ("patient",)}, False, "bulk"),
        # A Group-level export is of no use without a Group id: no change feed at all.
        ({"export": ("group",)}, False, "full-only"),
        ({}, True, "full-only"),
    ],
)
def test_without_a_history_the_next_best_change_feed(
    kwargs: dict[str, Any], group: bool, changes: str
) -> None:
    caps = read_capabilities(statement(**kwargs))
    assert choose_records(caps) == "typed"
    assert choose_changes(caps, TYPES, group=group) == changes


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


# -- a sync run's three strategies together (what `sync` runs and `check` names) ---------------------------

BULK_ONLY = {"export": ("group",)}  # the sandbox's bulk-only profile: searches, a Group-level export


@pytest.mark.parametrize(
    ("kwargs", "group", "expected"),
    [
        # A full server: $everything and the history feed; the Group names the candidates.
        (
            {"everything": True, "history": True, "export": ("system", "group")},
            True,
            ("group", "everything", "history"),
        ),
        # search-only: typed searches, _lastUpdated.
        ({"last_updated": True}, True, ("group", "typed", "last-updated")),
        # bulk-only with its Group: changes by _since exports, records from exports, the Group's members.
        (BULK_ONLY, True, ("group", "bulk", "bulk")),
        # bulk-only without a Group id: its export cannot be used, every run is a full one by searches.
        (BULK_ONLY, False, ("search", "typed", "full-only")),
        # A system-level export and no Group: the export names the candidates too (the file matcher).
        ({"export": ("system",)}, False, ("bulk", "bulk", "bulk")),
        # $everything beats an export for the records even when the export is the change feed.
        ({"everything": True, "export": ("system",)}, False, ("search", "everything", "bulk")),
    ],
)
def test_the_sync_strategies_follow_the_change_feed(
    kwargs: dict[str, Any], group: bool, expected: tuple[str, str, str]
) -> None:
    caps = read_capabilities(statement(**kwargs))
    chosen = choose_sync(caps, TYPES, group=group)
    assert (chosen.candidates, chosen.records, chosen.changes) == expected
    assert chosen.uses_bulk == ("bulk" in expected)


def test_the_bulk_level_prefers_the_named_group_then_system_then_patient() -> None:
    every = read_capabilities(statement(export=("system", "patient", "group")))
    assert bulk_level(every, group=True) == "group"
    assert bulk_level(every) == "system"
    assert bulk_level(read_capabilities(statement(export=("patient", "group")))) == "patient"
    assert bulk_level(read_capabilities(statement(export=("group",)))) is None


@pytest.mark.parametrize(
    ("overrides", "group", "message"),
    [
        (Overrides(changes="bulk"), False, "needs a Bulk Data export"),
        (Overrides(records="bulk"), False, "needs a Bulk Data export"),
        (Overrides(candidates="bulk"), False, "needs a Bulk Data export"),
        (Overrides(candidates="group"), False, "needs [server] group"),
    ],
)
def test_a_forced_strategy_the_server_cannot_serve_is_a_usage_error(
    overrides: Overrides, group: bool, message: str
) -> None:
    caps = read_capabilities(statement(last_updated=True, export=("group",)))
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        choose_sync(caps, TYPES, group=group, overrides=overrides)


def test_forced_sync_strategies_win_where_the_server_can_serve_them() -> None:
    caps = read_capabilities(statement(everything=True, history=True, export=("group",)))
    forced = Overrides(candidates="bulk", records="bulk", changes="bulk")
    assert choose_sync(caps, TYPES, group=True, overrides=forced) == Strategies("bulk", "bulk", "bulk")
