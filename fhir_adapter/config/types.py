"""Typed, frozen view of mappings/: concepts, units, facts, medication rules and the criteria tree."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fhir_adapter.model import Verdict

# Systems whose codes are hierarchical strings, so "M33.1*" is a meaningful prefix.
HIERARCHICAL_SYSTEMS = frozenset(
    {
        "http://hl7.org/fhir/sid/icd-10",
        "http://hl7.org/fhir/sid/icd-10-cm",
        "http://www.whocc.no/atc",
    }
)


@dataclass(frozen=True, slots=True)
class Concept:
    name: str
    codes: frozenset[tuple[str, str]] = frozenset()
    prefixes: tuple[tuple[str, str], ...] = ()
    text: tuple[str, ...] = ()  # lower-cased substrings
    text_exclude: tuple[str, ...] = ()
    text_exact: frozenset[str] = frozenset()  # whole-text matches for short tokens ("IV", "po")
    # Systems this concept has codes in: when a CodeableConcept carries one of them, its codes decide
    # and text is not consulted (so "Mean platelet volume" with its own LOINC is not read as platelets).
    systems: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Conversion:
    source: str
    target: str
    factor: Decimal
    concepts: frozenset[str] = frozenset()  # empty: any concept


@dataclass(frozen=True, slots=True)
class UnitTable:
    aliases: Mapping[str, str]
    conversions: tuple[Conversion, ...]
    aliases_lower: Mapping[str, str] = field(default_factory=dict)  # the same keys, lower-cased


@dataclass(frozen=True, slots=True)
class FactSpec:
    name: str
    kind: str
    label: str
    params: Mapping[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)


@dataclass(frozen=True, slots=True)
class Glucocorticoid:
    name: str
    factor: Decimal
    codes: frozenset[tuple[str, str]]
    names: tuple[str, ...]  # lower-cased


@dataclass(frozen=True, slots=True)
class MedicationRules:
    glucocorticoids: tuple[Glucocorticoid, ...]
    taken_statuses: frozenset[str]
    administered_statuses: frozenset[str]
    never_statuses: frozenset[str]
    # Exact fractions (numerator, denominator): administrations per day, periods per day.
    frequency_codes: Mapping[str, tuple[Decimal, Decimal]]
    periods_per_day: Mapping[str, tuple[Decimal, Decimal]]
    count_units: frozenset[str]
    # [exposures]: the fact giving the body weight (doses in mg/kg) and the route/product concepts.
    weight_fact: str = ""
    intravenous_route_concept: str = ""
    non_systemic_route_concept: str = ""
    non_systemic_form_concept: str = ""


# --- Clinical text (mappings/notes.toml) -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NoteShape:
    """What follows a number in a note, and what that makes the number: ``after`` "/150" (lower-cased,
    spaces removed; "" for a bare number), ``unit`` "{score}", ``max`` the largest value the scale allows."""

    after: str
    unit: str
    max: Decimal


@dataclass(frozen=True, slots=True)
class NoteRule:
    """How one concept's value is written in clinical text (``[notes.rules.<concept>]``)."""

    concept: str
    phrases: tuple[str, ...]  # lower-cased
    shapes: tuple[NoteShape, ...]  # longest ``after`` first
    # The site lets a value found in a note decide a verdict (else it is only a suggestion).
    decide: bool = False


@dataclass(frozen=True, slots=True)
class NoteSettings:
    """``[notes]``: off by default; caps that bound the work one document can cause."""

    enabled: bool = False
    max_attachment_bytes: int = 524288
    max_text_chars: int = 200000
    max_sentence_chars: int = 200
    connectors: tuple[str, ...] = ()  # lower-cased, longest first
    negations: tuple[str, ...] = ()  # lower-cased
    rules: Mapping[str, NoteRule] = field(default_factory=dict)


# --- Rule tree ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Compare:
    fact: str
    op: str
    value: Decimal | bool | str
    on_match: Verdict | None = None


@dataclass(frozen=True, slots=True)
class AllOf:
    items: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Rule


@dataclass(frozen=True, slots=True)
class AtLeast:
    k: int
    items: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class ComponentRef:
    id: str


@dataclass(frozen=True, slots=True)
class Constant:
    verdict: Verdict


Rule = Compare | AllOf | AnyOf | Not | AtLeast | ComponentRef | Constant


@dataclass(frozen=True, slots=True)
class Component:
    id: str
    text: str
    rule: Rule


@dataclass(frozen=True, slots=True)
class Criterion:
    id: str
    type: str  # inclusion | exclusion
    text: str
    rule: Rule
    gate: bool = False
    applies_when: Rule | None = None
    components: tuple[Component, ...] = ()


@dataclass(frozen=True, slots=True)
class Trial:
    study: str
    title: str
    version: str
    criteria: tuple[Criterion, ...]


@dataclass(frozen=True, slots=True)
class Mappings:
    concepts: Mapping[str, Concept]
    units: UnitTable
    facts: Mapping[str, FactSpec]
    medications: MedicationRules
    trial: Trial
    files: tuple[str, ...] = ()
    fingerprint: str = ""  # hash of every loaded file: goes into the result and the Provenance
    extra: Mapping[str, Any] = field(default_factory=dict)
    notes: NoteSettings = field(default_factory=NoteSettings)

    def concept(self, name: str) -> Concept:
        return self.concepts[name]
