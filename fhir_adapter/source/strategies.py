"""What a server offers (its CapabilityStatement), and how a run reads it: once per run, named in the
summary and the sync manifest, overridable by the operator.

Three choices, each with the server's own words as evidence:

- **candidates**: ``search`` (the gate's Conditions by code), ``group`` (a Group's members), ``given``
  (``--patient``), or ``bulk`` (a Bulk Data export);
- **records**: ``everything`` (``Patient/ID/$everything``), ``typed`` (one search per resource type the
  criteria read), or ``bulk``;
- **changes** (sync): ``history`` (type-level ``_history?_since``, deletions included), ``last-updated``
  (``_lastUpdated`` searches: deletions are invisible, the scheduled full reconciliation catches them),
  ``bulk`` (a Bulk Data export with ``_since``; deletions from its ``deleted`` files), or ``full-only``
  (no change feed: every run re-screens every candidate).

The records strategy never changes a verdict: every strategy builds the same ``PatientRecord``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fhir_adapter.errors import UsageError

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
        fhir_version=version if isinstance(version, str) else "",
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


def choose_records(caps: Capabilities, forced: RecordsStrategy | None = None) -> RecordsStrategy:
    if forced is not None:
        return forced
    return "everything" if caps.everything else "typed"


def choose_candidates(
    caps: Capabilities,
    *,
    given: bool = False,
    group: bool = False,
    forced: CandidatesStrategy | None = None,
    gate_types: Iterable[str] = ("Condition",),
) -> CandidatesStrategy:
    if forced is not None:
        return forced
    if given:
        return "given"
    if group:
        return "group"
    if all(caps.supports(t, "search-type") for t in gate_types):
        return "search"
    if caps.export_levels:
        return "bulk"
    raise UsageError(
        "the server offers neither a search of the gate's resources nor a Bulk Data export: give "
        "--patient or --group"
    )


def choose_changes(
    caps: Capabilities, types: Iterable[str], forced: ChangesStrategy | None = None
) -> ChangesStrategy:
    """The best change feed for the types the criteria read: the history (sees deletions), else
    ``_lastUpdated`` searches, else a Bulk Data export with ``_since``, else none."""
    if forced is not None:
        return forced
    wanted = sorted(set(types) | {"Patient"})
    if caps.history_for(wanted):
        return "history"
    if caps.last_updated_for(wanted):
        return "last-updated"
    if caps.export_levels:
        return "bulk"
    return "full-only"


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _names(value: Any, key: str) -> set[str]:
    return {str(v[key]) for v in _dicts(value) if isinstance(v.get(key), str)}
