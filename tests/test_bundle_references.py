"""A Bundle's references to its own fullUrls become ``Type/id`` wherever they sit, however they are
spelled; references to anything else are left as written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fhir_adapter.facts.fhirjson import patient_of
from fhir_adapter.source.reader import Item, read_all

BASE = "https://ehr.example.org/fhir"


def _items(tmp_path: Path, text: str) -> list[dict[str, Any]]:
    path = tmp_path / "bundle.json"
    path.write_text(text, encoding="utf-8")
    return [i.resource for i in read_all([path]) if isinstance(i, Item)]


def _bundle(*entries: tuple[str, dict[str, Any]]) -> str:
    return json.dumps(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"fullUrl": u, "resource": r} for u, r in entries],
        }
    )


PATIENT = ("urn:uuid:5f0c", {"resourceType": "Patient", "id": "p1"})


def test_a_urn_uuid_subject_becomes_the_patients_local_reference(tmp_path: Path) -> None:
    obs = {"resourceType": "Observation", "id": "o1", "subject": {"reference": "urn:uuid:5f0c"}}
    _, got = _items(tmp_path, _bundle(PATIENT, ("urn:uuid:aa", obs)))
    assert got["subject"] == {"reference": "Patient/p1"} and patient_of(got) == "p1"


def test_an_absolute_full_url_cited_deep_in_an_extension_is_rewritten(tmp_path: Path) -> None:
    patient = (f"{BASE}/Patient/p1", {"resourceType": "Patient", "id": "p1"})
    deep = {"url": "x", "extension": [{"url": "y", "valueReference": {"reference": f"{BASE}/Patient/p1"}}]}
    cond = {
        "resourceType": "Condition",
        "id": "c1",
        "subject": {"reference": "Patient/p1"},
        "extension": [deep],
    }
    _, got = _items(tmp_path, _bundle(patient, (f"{BASE}/Condition/c1", cond)))
    assert got["extension"][0]["extension"][0]["valueReference"] == {"reference": "Patient/p1"}


def test_a_reference_spelled_with_a_json_escape_is_rewritten_like_the_plain_one(tmp_path: Path) -> None:
    obs = {"resourceType": "Observation", "id": "o1", "subject": {"reference": "urn:uuid:5f0c"}}
    text = _bundle(PATIENT, ("urn:uuid:aa", obs)).replace(
        '"reference": "urn:uuid:5f0c"', '"reference": "urn:uuid:\\u0035f0c"'
    )
    assert "\\u0035" in text
    _, got = _items(tmp_path, text)
    assert got["subject"] == {"reference": "Patient/p1"}


def test_a_full_url_holding_a_quote_or_a_backslash_is_still_matched(tmp_path: Path) -> None:
    # Written escaped in JSON, so the look at the resource's JSON cannot read such a value: the walk does.
    for odd in ('urn:uuid:a"b', "urn:uuid:a\\b"):
        obs = {"resourceType": "Observation", "id": "o1", "subject": {"reference": odd}}
        _, got = _items(
            tmp_path, _bundle((odd, {"resourceType": "Patient", "id": "p1"}), ("urn:uuid:aa", obs))
        )
        assert got["subject"] == {"reference": "Patient/p1"}, odd


def test_references_to_anything_but_the_bundles_full_urls_are_left_as_written(tmp_path: Path) -> None:
    obs = {
        "resourceType": "Observation",
        "id": "o1",
        "subject": {"reference": "Patient/p1"},
        "performer": [{"reference": "urn:uuid:elsewhere"}, {"reference": f"{BASE}/Practitioner/x"}],
        "note": [{"text": 'says "reference":"urn:uuid:5f0c" in a note'}],
    }
    _, got = _items(tmp_path, _bundle(PATIENT, ("urn:uuid:aa", obs)))
    assert got == obs


def test_a_reference_nested_deeper_than_orjson_writes_is_still_rewritten(tmp_path: Path) -> None:
    node: dict[str, Any] = {"reference": "urn:uuid:5f0c"}
    for _ in range(300):  # orjson writes 255 levels: the look at its JSON cannot decide, the walk does
        node = {"url": "x", "extension": [node]}
    obs = {
        "resourceType": "Observation",
        "id": "o1",
        "subject": {"reference": "urn:uuid:5f0c"},
        "extension": [node],
    }
    _, got = _items(tmp_path, _bundle(PATIENT, ("urn:uuid:aa", obs)))
    inner = got["extension"][0]
    for _ in range(300):
        inner = inner["extension"][0]
    assert inner == {"reference": "Patient/p1"} and got["subject"] == {"reference": "Patient/p1"}
