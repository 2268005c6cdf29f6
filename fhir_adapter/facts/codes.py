"""Does a CodeableConcept belong to a concept (value set)? Codes first, text patterns as a last resort."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from fhir_adapter.config.types import Concept
from fhir_adapter.facts.fhirjson import codings, kept, texts
from fhir_adapter.model import Resource


def code_matches(concept: Concept, cc: Any) -> bool:
    for system, code, _ in codings(cc):
        if (system, code) in concept.codes:
            return True
        upper = code.upper()
        for p_system, prefix in concept.prefixes:
            if system == p_system and upper.startswith(prefix):
                return True
    return False


def matches(concept: Concept, cc: Any) -> bool:
    """True when any coding is in the value set, or (only if no coding is from a system the concept
    codes in) when code.text or a display contains one of the concept's text patterns."""
    if code_matches(concept, cc):
        return True
    if not concept.text and not concept.text_exact:
        return False
    if any(system in concept.systems for system, _, _ in codings(cc)):
        return False
    return text_matches(concept, texts(cc))


def text_matches(concept: Concept, candidates: list[str]) -> bool:
    return lowered_text_matches(concept, [t.lower() for t in candidates])


def lowered_text_matches(concept: Concept, lowered: list[str]) -> bool:
    """The concept's text rule over already lower-cased texts: a whole-text token ("iv") matches; else a
    pattern must occur and no exclusion ("a1c", "volume") anywhere in the resource's texts."""
    if any(low.strip() in concept.text_exact for low in lowered):
        return True
    if any(x in low for low in lowered for x in concept.text_exclude):
        return False
    return any(t in low for low in lowered for t in concept.text)


_NONE: frozenset[str] = frozenset()
_MAX_KEY = 1024


class ConceptMatcher:
    """Every concept of the mappings, compiled once: the concepts a CodeableConcept belongs to.

    Exact codes are one dict lookup, prefixes one lookup per distinct prefix length of the system, and
    the text rules run once per distinct set of texts (a hospital sends the same lab names over and over),
    so a record costs time linear in its size, not in its size times the number of concepts. Same answers
    as :func:`matches`, concept by concept.
    """

    _CACHE_LIMIT = 200_000

    def __init__(self, concepts: Mapping[str, Concept]) -> None:
        self._concepts = concepts
        self._exact: dict[tuple[str, str], list[str]] = {}
        self._prefixes: dict[str, dict[int, dict[str, list[str]]]] = {}
        for concept in concepts.values():
            for key in concept.codes:
                self._exact.setdefault(key, []).append(concept.name)
            for system, prefix in concept.prefixes:
                by_length = self._prefixes.setdefault(system, {}).setdefault(len(prefix), {})
                by_length.setdefault(prefix, []).append(concept.name)
        self._text_concepts = tuple(c for c in concepts.values() if c.text or c.text_exact)
        self._code_cache: dict[tuple[str, str], frozenset[str]] = {}
        self._text_cache: dict[tuple[str, ...], frozenset[str]] = {}
        self._cc_cache: dict[bytes, frozenset[str]] = {}

    def concepts_of(self, cc: Any) -> frozenset[str]:
        if not isinstance(cc, dict):
            return _NONE
        # The same lab, drug or diagnosis code arrives thousands of times: its serialised form is a
        # cheaper key than walking its codings again (bounded: long texts are not cached).
        try:
            key = orjson.dumps(cc)
        except orjson.JSONEncodeError:  # nested too deeply to serialise: no cache, same answer
            return self._compute(cc)
        if len(key) <= _MAX_KEY:
            hit = self._cc_cache.get(key)
            if hit is None:
                hit = self._compute(cc)
                if len(self._cc_cache) >= self._CACHE_LIMIT:
                    self._cc_cache.clear()
                self._cc_cache[kept(key)] = hit
            return hit
        return self._compute(cc)

    def _compute(self, cc: Any) -> frozenset[str]:
        found: set[str] = set()
        systems: set[str] = set()
        for system, code, _ in codings(cc):
            systems.add(system)
            found.update(self._of_code(system, code))
        if self._text_concepts:
            lowered = tuple(t.lower() for t in texts(cc))
            if lowered:
                for name in self._of_texts(lowered):
                    if self._concepts[name].systems.isdisjoint(systems):
                        found.add(name)
        return frozenset(found)

    def _of_code(self, system: str, code: str) -> frozenset[str]:
        key = (system, code)
        hit = self._code_cache.get(key)
        if hit is None:
            names = set(self._exact.get(key, ()))
            upper = code.upper()
            for length, prefixes in self._prefixes.get(system, {}).items():
                names.update(prefixes.get(upper[:length], ()))
            hit = frozenset(names)
            if len(self._code_cache) >= self._CACHE_LIMIT:
                self._code_cache.clear()
            self._code_cache[key] = hit
        return hit

    def _of_texts(self, lowered: tuple[str, ...]) -> frozenset[str]:
        hit = self._text_cache.get(lowered)
        if hit is None:
            hit = frozenset(c.name for c in self._text_concepts if lowered_text_matches(c, list(lowered)))
            if len(self._text_cache) >= self._CACHE_LIMIT:
                self._text_cache.clear()
            self._text_cache[lowered] = hit
        return hit


_MATCHERS: dict[int, tuple[Mapping[str, Concept], ConceptMatcher]] = {}


def matcher_for(concepts: Mapping[str, Concept]) -> ConceptMatcher:
    """The compiled matcher of a concept table, built once per table (and once per worker process)."""
    hit = _MATCHERS.get(id(concepts))
    if hit is None or hit[0] is not concepts:
        if len(_MATCHERS) > 8:
            _MATCHERS.clear()
        hit = (concepts, ConceptMatcher(concepts))
        _MATCHERS[id(concepts)] = hit
    return hit[1]


class CodeIndex:
    """One patient's resources of one type by the concepts their ``code`` belongs to, computed once per
    record, so a fact's lookup is a dict access whatever the number of concepts."""

    def __init__(self, resources: tuple[Resource, ...], matcher: ConceptMatcher, key: str = "code") -> None:
        self._resources = resources
        self._by_concept: dict[str, list[int]] = {}
        for i, resource in enumerate(resources):
            for name in matcher.concepts_of(resource.get(key)):
                self._by_concept.setdefault(name, []).append(i)

    def matching(self, concept: Concept) -> tuple[Resource, ...]:
        return tuple(self._resources[i] for i in self._by_concept.get(concept.name, ()))
