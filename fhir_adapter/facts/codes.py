"""Does a CodeableConcept belong to a concept (value set)? Codes first, text patterns as a last resort."""

from __future__ import annotations

from typing import Any

from fhir_adapter.config.types import Concept
from fhir_adapter.facts.fhirjson import codings, texts
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


class CodeIndex:
    """One patient's resources of one type, indexed by coding, so each concept is matched once per
    record instead of once per fact (an export's routine labs would otherwise dominate the run time)."""

    def __init__(self, resources: tuple[Resource, ...], key: str = "code") -> None:
        self._resources = resources
        self._key = key
        self._codings: list[list[tuple[str, str, str]]] = [list(codings(r.get(key))) for r in resources]
        self._systems = [frozenset(system for system, _, _ in found) for found in self._codings]
        self._by_code: dict[tuple[str, str], list[int]] = {}
        for i, found in enumerate(self._codings):
            for system, code, _ in found:
                self._by_code.setdefault((system, code), []).append(i)
        self._cache: dict[str, tuple[Resource, ...]] = {}
        self._texts: dict[int, list[str]] = {}

    def _lower_texts(self, i: int) -> list[str]:
        found = self._texts.get(i)
        if found is None:
            found = self._texts[i] = [t.lower() for t in texts(self._resources[i].get(self._key))]
        return found

    def matching(self, concept: Concept) -> tuple[Resource, ...]:
        cached = self._cache.get(concept.name)
        if cached is not None:
            return cached
        hits: set[int] = set()
        for key in concept.codes:
            hits.update(self._by_code.get(key, ()))
        if concept.prefixes:
            for (system, code), idx in self._by_code.items():
                upper = code.upper()
                if any(system == s and upper.startswith(p) for s, p in concept.prefixes):
                    hits.update(idx)
        if concept.text or concept.text_exact:
            for i, systems in enumerate(self._systems):
                if i in hits or not concept.systems.isdisjoint(systems):
                    continue
                if lowered_text_matches(concept, self._lower_texts(i)):
                    hits.add(i)
        result = tuple(self._resources[i] for i in sorted(hits))
        self._cache[concept.name] = result
        return result
