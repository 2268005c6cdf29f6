"""The byte scan that lets most NDJSON lines go unparsed: when it answers, it gives exactly what parsing
gives; when the bytes leave any doubt it declines; and escaped JSON screens exactly like plain JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhirdata import REPO

from fhir_adapter.facts.fhirjson import patient_of
from fhir_adapter.source.reader import Item, read_all
from fhir_adapter.source.scan import scan


def _spellings(resource: dict[str, Any]) -> list[bytes]:
    return [
        orjson.dumps(resource),
        json.dumps(resource).encode(),  # blanks after separators
        json.dumps(resource, indent=None, separators=(" , ", " : ")).encode(),
        json.dumps(resource, ensure_ascii=True).encode(),  # non-ASCII escaped
        json.dumps(dict(reversed(list(resource.items())))).encode(),  # another key order
        # A narrative with quotes and backslashes, as real exports carry (escapes the scan reads past).
        orjson.dumps({**resource, "text": {"div": '<div a="b">C:\\ "q" \\</div>'}}),
        orjson.dumps({"text": {"div": '"subject":{"reference":"Patient/zz"}'}, **resource}),
    ]


def _resources() -> list[dict[str, Any]]:
    paths = [REPO / "examples" / "patients", REPO / "tests" / "data" / "public"]
    return [i.resource for i in read_all(paths) if isinstance(i, Item)]


def test_what_the_scan_answers_is_what_parsing_gives_for_every_real_resource() -> None:
    answered = declined = 0
    for resource in _resources():
        for line in _spellings(resource):
            hit = scan(line)
            if hit is None:
                declined += 1
                continue
            answered += 1
            assert hit.resource_type == resource["resourceType"]
            if hit.patient is not None:
                assert hit.patient == patient_of(resource)
    assert answered > 1000 and declined > 100  # both paths are exercised


@pytest.mark.parametrize(
    "line",
    [
        b'{"resourceType":"Observation","subject":{"reference":"Patient/p\\u0031"}}',  # escapes
        b'{"resourceType":"Observation","subject":{"reference":"https://x.org/fhir/_history/Patient/p1"}}',
        b'{"resourceType":"Observation","subject":{"reference":"https://x.org/fhir/Patient/p1?x=1"}}',
        b'{"resourceType":"Observation","subject":{"reference":"Patient/p\\"1"}}',  # an escaped quote
        b'{"resourceType":"Observation","subject":{"reference":"Patient\\/p1"}}',  # an escaped slash
        b'{"resourceType":"Observation","sub\\"ject":{"reference":"Patient/p1"}}',
        b'{"resourceType":"Observation","\\u0073ubject":{"reference":"Patient/p2"},"subject":{"reference":"Patient/p1"}}',
        b'{"resourceType":"Observation","text":{"div":"\\"subject\\":{\\"reference\\":\\"Patient/p2\\"}"},"note":"\\u00e9"}',
        b'{"resourceType":"Observation","subject":{"reference":"Patient/p1/_history/2"}}',
        b'{"resourceType":"Observation","subject":{"reference":"urn:uuid:1234"}}',
        b'{"resourceType":"Observation","subject":{"identifier":{"value":"x"},"reference":"Patient/p1"}}',
        b'{"resourceType":"Observation","subject":{"reference":"Patient/p1"},"subject":{"reference":"Patient/p2"}}',
        b'{"resourceType":"Observation","contained":[{"resourceType":"Patient","id":"x"}],"subject":{"reference":"Patient/p1"}}',
        b'{"resourceType":"Observation","code":{"text":"subject"},"subject":"Patient/p1"}',
        b'{"resourceType":"Observation","subject":{"reference":"Group/g1"},"patient":{"reference":"Patient/p1"}}',
        b'{"resourceType":"Observation"}',
        b'{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Observation"}}]}',
        b"not json at all",
    ],
)
def test_the_scan_declines_whenever_the_bytes_leave_doubt(line: bytes) -> None:
    assert scan(line) is None


@pytest.mark.parametrize(
    ("line", "patient"),
    [
        (b'{"resourceType":"Observation","subject":{"reference":"https://x.org/fhir/Patient/p1"}}', "p1"),
        (b'{"resourceType":"Observation","subject": {"reference": "http://h:8080/Patient/p1"}}', "p1"),
        (b'{"resourceType":"Observation","subject":{"reference":"https://h/Patient/x/Patient/p1"}}', "p1"),
    ],
)
def test_the_scan_reads_absolute_references_as_parsing_does(line: bytes, patient: str) -> None:
    hit = scan(line)
    assert hit is not None and hit.patient == patient
    assert patient_of(orjson.loads(line)) == patient


def test_a_patient_line_is_recognised_but_its_id_is_left_to_the_parser() -> None:
    hit = scan(b'{"resourceType":"Patient","id":"p1"}')
    assert hit is not None and hit.resource_type == "Patient" and hit.patient is None


def test_escaped_json_screens_exactly_like_plain_json(tmp_path: Path) -> None:
    from fhir_adapter.cli import main

    results = {}
    for name, ensure_ascii in (("plain", False), ("escaped", True)):
        folder = tmp_path / name
        folder.mkdir()
        by_type: dict[str, list[str]] = {}
        for resource in read_all([REPO / "examples" / "patients"]):
            assert isinstance(resource, Item)
            text = json.dumps(resource.resource, ensure_ascii=ensure_ascii)
            if ensure_ascii:  # escape the type names too: "\\u0043ondition"
                text = text.replace('"Condition"', '"\\u0043ondition"').replace(
                    '"Patient/', '"\\u0050atient/'
                )
            by_type.setdefault(resource.resource["resourceType"], []).append(text)
        for rtype, lines in by_type.items():
            (folder / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
        out = tmp_path / f"{name}.json"
        assert main(["screen", str(folder), "--as-of", "2026-06-15", "--out", str(out)]) == 0
        results[name] = json.loads(out.read_text())["subjects"]
    assert results["escaped"] == results["plain"]
    assert len(results["plain"]) == 28
