"""Does a CodeableConcept belong to a concept (value set)? Codes first, text patterns as a last resort."""

from __future__ import annotations

from typing import Any

from fhir_adapter.config.types import Concept
from fhir_adapter.facts.fhirjson import codings, texts


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
    if not concept.text:
        return False
    if any(system in concept.systems for system, _, _ in codings(cc)):
        return False
    return text_matches(concept, texts(cc))


def text_matches(concept: Concept, candidates: list[str]) -> bool:
    for text in candidates:
        low = text.lower()
        if any(x in low for x in concept.text_exclude):
            continue
        if any(t in low for t in concept.text):
            return True
    return False
