"""What a server offers (its CapabilityStatement), and how a run reads it: once per run, named in the
summary and the sync manifest, overridable by the operator.

Three choices, each with the server's own words as evidence:

- **candidates**: ``search`` (the gate's Conditions by code), ``group`` (a Group's members), ``given``
  (``--patient``), or ``bulk`` (a Bulk Data export);
- **records**: ``everything`` (``Patient/ID/$everything``), ``typed`` (one search per resource type the
  criteria read), or ``bulk``;
- **changes** (sync): ``history`` (type-level ``_history?_since``, deletions included), ``last-updated``
  (``_lastUpdated`` searches: deletions are invisible, the scheduled full reconciliation catches them),
  ``bulk`` (a Bulk Data export with ``_since``; deletions from its ``deleted`` files where the server
  lists them, else at the full reconciliation), or ``full-only`` (no change feed: every run re-screens
  every candidate).

A Bulk Data export is usable at the system level, the Patient level, or the Group level when the site
names its Group (``[server] group``, ``--group``): a Group-only server without a Group has no export the
adapter can use. :func:`choose_sync` makes the three choices of a sync run together, so ``sync`` and
``check`` cannot disagree: where the change feed is a Bulk Data export and there is no ``$everything``,
the records come from exports too (``bulk``), and then so do the candidates unless a Group is named.

The records strategy never changes a verdict: every strategy builds the same ``PatientRecord``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fhir_adapter.client.urls import fhir_version_of
from fhir_adapter.errors import UsageError

# fhir_adapter.client.bulk.Level (settings.py imports this module, and client.bulk imports settings)
Level = Literal["system", "patient", "group"]

CandidatesStrategy = Literal["search", "group", "given", "bulk"]
RecordsStrategy = Literal["everything", "typed", "bulk"]
ChangesStrategy = Literal["history", "last-updated", "bulk", "full-only"]

CANDIDATES: tuple[CandidatesStrategy, ...] = ("search", "group", "given", "bulk")
RECORDS: tuple[RecordsStrategy, ...] = ("everything", "typed", "bulk")
CHANGES: tuple[ChangesStrategy, ...] = ("history", "last-updated", "bulk", "full-only")

_EVERYTHING_NAMES = frozenset({"everything", "patient-everything"})
_EXPORT_NAMES = frozenset({"export", "bulk-export"})


@dataclass(frozen=True, slots=True)
class TypeCapabilities:
    interactions: frozenset[str] = frozenset()
    operations: frozenset[str] = frozenset()
    search_params: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Capabilities:
    """A CapabilityStatement, read defensively: what is not stated is not assumed."""

    fhir_version: str
    types: Mapping[str, TypeCapabilities] = field(default_factory=dict)
    system_operations: frozenset[str] = frozenset()
    system_interactions: frozenset[str] = frozenset()
    system_search_params: frozenset[str] = frozenset()
    bulk_data: bool = False  # instantiates the Bulk Data CapabilityStatement

    @property
    def everything(self) -> bool:
        patient = self.types.get("Patient", TypeCapabilities())
        return bool((patient.operations | self.system_operations) & _EVERYTHING_NAMES)

    @property
    def export_levels(self) -> frozenset[str]:
        levels = set()
        if self.system_operations & _EXPORT_NAMES:
            levels.add("system")
        if self.types.get("Patient", TypeCapabilities()).operations & _EXPORT_NAMES:
            levels.add("patient")
        if self.types.get("Group", TypeCapabilities()).operations & _EXPORT_NAMES:
            levels.add("group")
        return frozenset(levels)

    def supports(self, rtype: str, interaction: str) -> bool:
        return interaction in self.types.get(rtype, TypeCapabilities()).interactions

    def searchable(self, rtype: str, param: str) -> bool:
        caps = self.types.get(rtype, TypeCapabilities())
        return param in caps.search_params or param in self.system_search_params

    def history_for(self, types: Iterable[str]) -> bool:
        return all(self.supports(t, "history-type") for t in types)

    def last_updated_for(self, types: Iterable[str]) -> bool:
        return all(self.supports(t, "search-type") and self.searchable(t, "_lastUpdated") for t in types)


def read_capabilities(statement: Mapping[str, Any]) -> Capabilities:
    types: dict[str, TypeCapabilities] = {}
    system_ops: set[str] = set()
    system_interactions: set[str] = set()
    system_params: set[str] = set()
    for rest in _dicts(statement.get("rest")):
        if rest.get("mode", "server") != "server":
            continue
        system_ops |= {n.lower() for n in _names(rest.get("operation"), "name")}
        system_interactions |= _names(rest.get("interaction"), "code")
        system_params |= _names(rest.get("searchParam"), "name")
        for resource in _dicts(rest.get("resource")):
            rtype = resource.get("type")
            if not isinstance(rtype, str):
                continue
            ops = {n.lower() for n in _names(resource.get("operation"), "name")}
            # Some servers name an operation only by its definition URL.
            for op in _dicts(resource.get("operation")):
                definition = op.get("definition")
                if isinstance(definition, str) and definition.rstrip("/").endswith("/Patient-everything"):
                    ops.add("everything")
            types[rtype] = TypeCapabilities(
                interactions=frozenset(_names(resource.get("interaction"), "code")),
                operations=frozenset(ops),
                search_params=frozenset(_names(resource.get("searchParam"), "name")),
            )
    instantiates = statement.get("instantiates")
    version = statement.get("fhirVersion")
    return Capabilities(
        fhir_version=fhir_version_of(version),
        types=types,
        system_operations=frozenset(system_ops),
        system_interactions=frozenset(system_interactions),
        system_search_params=frozenset(system_params),
        bulk_data=isinstance(instantiates, list) and any("bulkdata" in str(i).lower() for i in instantiates),
    )


@dataclass(frozen=True, slots=True)
class Strategies:
    candidates: CandidatesStrategy
    records: RecordsStrategy
    changes: ChangesStrategy | None = None  # sync only

    def describe(self) -> str:
        parts = [f"candidates: {self.candidates}", f"records: {self.records}"]
        if self.changes is not None:
            parts.append(f"changes: {self.changes}")
        return ", ".join(parts)

    @property
    def uses_bulk(self) -> bool:
        return "bulk" in (self.candidates, self.records, self.changes)

    def to_json(self) -> dict[str, str]:
        out: dict[str, str] = {"candidates": self.candidates, "records": self.records}
        if self.changes is not None:
            out["changes"] = self.changes
        return out


@dataclass(frozen=True, slots=True)
class Overrides:
    """What the operator forces (site.toml ``[strategies]`` or command-line flags); None: let the server
    decide."""

    candidates: CandidatesStrategy | None = None
    records: RecordsStrategy | None = None
    changes: ChangesStrategy | None = None


def without_everything(caps: Capabilities) -> Capabilities:
    """The same server as if it did not list ``$everything`` (it refused it when tried)."""
    patient = caps.types.get("Patient", TypeCapabilities())
    types = {
        **caps.types,
        "Patient": dataclasses.replace(patient, operations=patient.operations - _EVERYTHING_NAMES),
    }
    return dataclasses.replace(
        caps, types=types, system_operations=caps.system_operations - _EVERYTHING_NAMES
    )


def bulk_level(caps: Capabilities, group: bool = False) -> Level | None:
    """The export level a run can use: the Group's when one is named and offered, else system, else
    Patient; None when there is none (a Group-level export needs a Group id)."""
    levels = caps.export_levels
    if group and "group" in levels:
        return "group"
    if "system" in levels:
        return "system"
    return "patient" if "patient" in levels else None


def choose_records(
    caps: Capabilities, forced: RecordsStrategy | None = None, *, changes: ChangesStrategy | None = None
) -> RecordsStrategy:
    """``$everything`` where offered; else, for a sync whose change feed is a Bulk Data export, exports
    (the server's population path, and the file verdicts); else typed searches."""
    if forced is not None:
        return forced
    if caps.everything:
        return "everything"
    return "bulk" if changes == "bulk" else "typed"


def choose_candidates(
    caps: Capabilities,
    *,
    given: bool = False,
    group: bool = False,
    forced: CandidatesStrategy | None = None,
    gate_types: Iterable[str] = ("Condition",),
    bulk_records: bool = False,
) -> CandidatesStrategy:
    """``bulk_records``: the records come from an export, which then also names the candidates (the
    file path's matcher, no search of its own)."""
    if forced is not None:
        return forced
    if given:
        return "given"
    if group:
        return "group"
    if bulk_records and bulk_level(caps) is not None:
        return "bulk"
    if all(caps.supports(t, "search-type") for t in gate_types):
        return "search"
    if caps.export_levels:
        return "bulk"
    raise UsageError(
        "the server offers neither a search of the gate's resources nor a Bulk Data export: give "
        "--patient or --group"
    )


def choose_changes(
    caps: Capabilities,
    types: Iterable[str],
    forced: ChangesStrategy | None = None,
    *,
    group: bool = False,
) -> ChangesStrategy:
    """The best change feed for the types the criteria read: the history (sees deletions), else
    ``_lastUpdated`` searches, else a Bulk Data export with ``_since`` at a level the site can use
    (``group``: a Group is named), else none."""
    if forced is not None:
        return forced
    wanted = sorted(set(types) | {"Patient"})
    if caps.history_for(wanted):
        return "history"
    if caps.last_updated_for(wanted):
        return "last-updated"
    if bulk_level(caps, group) is not None:
        return "bulk"
    return "full-only"


def choose_sync(
    caps: Capabilities,
    types: Iterable[str],
    *,
    gate_types: Iterable[str] = ("Condition",),
    group: bool = False,
    overrides: Overrides | None = None,
) -> Strategies:
    """The three strategies of a sync run (``check`` names the same). A forced bulk strategy on a
    server without a usable export is a usage error, named here rather than at the first kick-off."""
    forced = overrides or Overrides()
    changes = choose_changes(caps, types, forced.changes, group=group)
    records = choose_records(caps, forced.records, changes=changes)
    candidates = choose_candidates(
        caps, group=group, forced=forced.candidates, gate_types=gate_types, bulk_records=records == "bulk"
    )
    if candidates == "given":
        raise UsageError("strategies.candidates: given patients are for screen --patient, not for sync")
    if candidates == "group" and not group:
        raise UsageError("strategies.candidates: the group strategy needs [server] group")
    chosen = Strategies(candidates, records, changes)
    if chosen.uses_bulk and bulk_level(caps, group) is None:
        where = ", ".join(sorted(caps.export_levels)) or "none"
        raise UsageError(
            f"strategies: {chosen.describe()} needs a Bulk Data export at the system, Patient or (with "
            f"[server] group) Group level; the server offers: {where}"
        )
    return chosen


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _names(value: Any, key: str) -> set[str]:
    return {str(v[key]) for v in _dicts(value) if isinstance(v.get(key), str)}
