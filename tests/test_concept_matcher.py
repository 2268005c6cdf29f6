"""The compiled concept matcher gives exactly the answers of matching concept by concept, on every coded
element of the examples and the public data, including local codes, text-only codes and prefixes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fhirdata import REPO, default_mappings

from fhir_adapter.facts.codes import CodeIndex, ConceptMatcher, matcher_for, matches
from fhir_adapter.source.reader import Item, read_all


def _codeable(node: Any) -> Iterator[Any]:
    """Every dict in a resource that looks like a CodeableConcept (has coding or text)."""
    if isinstance(node, dict):
        if "coding" in node or isinstance(node.get("text"), str):
            yield node
        for value in node.values():
            yield from _codeable(value)
    elif isinstance(node, list):
        for value in node:
            yield from _codeable(value)


def _resources() -> list[dict[str, Any]]:
    paths = [REPO / "examples" / "patients", REPO / "tests" / "data" / "public"]
    return [i.resource for i in read_all(paths) if isinstance(i, Item)]


def test_the_compiled_matcher_agrees_with_each_concept_on_real_shapes() -> None:
    mappings = default_mappings()
    matcher = ConceptMatcher(mappings.concepts)
    checked = 0
    for resource in _resources():
        for cc in _codeable(resource):
            expected = {name for name, concept in mappings.concepts.items() if matches(concept, cc)}
            assert matcher.concepts_of(cc) == expected, cc
            checked += 1
    assert checked > 2000


def test_edge_shapes_agree_too() -> None:
    mappings = default_mappings()
    matcher = matcher_for(mappings.concepts)
    shapes: list[Any] = [
        None,
        5,
        {"coding": 5},
        {"coding": [None, 3, {"system": 3, "code": ["x"]}]},
        {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "m33.12"}]},  # prefixes ignore case
        {"coding": [{"system": "http://loinc.org", "code": "9999-9", "display": "Platelets"}]},  # own system
        {"coding": [{"system": "http://hospital.example.org/lis", "code": "X", "display": "Platelets"}]},
        {"text": "Mean platelet volume"},
        {"text": "IV"},
        {"text": "  iv  "},
    ]
    for cc in shapes:
        expected = {name for name, concept in mappings.concepts.items() if matches(concept, cc)}
        assert matcher.concepts_of(cc) == expected, cc


def test_the_index_keeps_the_record_order(tmp_path: Path) -> None:
    mappings = default_mappings()
    a = {"id": "a", "code": {"coding": [{"system": "http://loinc.org", "code": "2157-6"}]}}
    b = {"id": "b", "code": {"text": "creatine kinase"}}
    c = {"id": "c", "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]}}
    index = CodeIndex((a, b, c), matcher_for(mappings.concepts))
    assert index.matching(mappings.concepts["ck"]) == (a, b)
    assert index.matching(mappings.concepts["platelets"]) == ()
