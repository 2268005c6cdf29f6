"""A .json file that is one line holding one object (a server's response saved as it came) is read from
a single parse, and gives what the NDJSON read of the same line gives: the same resources and problems,
numbered line 1, in every reading mode and through the whole screen."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhirdata import REPO

from fhir_adapter.model import InputProblem
from fhir_adapter.source import reader
from fhir_adapter.source.reader import Item, Line, LineBlock, ReadLimits

BUNDLE = {
    "resourceType": "Bundle",
    "type": "searchset",
    "entry": [
        {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "id": "p1"}},
        {
            "fullUrl": "urn:uuid:c",
            "resource": {"resourceType": "Condition", "id": "c1", "subject": {"reference": "urn:uuid:p"}},
        },
        {"resource": {"id": "broken"}},
        {"fullUrl": "urn:uuid:o", "resource": {"resourceType": "Observation", "id": "o1"}},
    ],
}
ONE_RESOURCE = {"resourceType": "Observation", "id": "o2", "subject": {"reference": "Patient/p1"}}


def _flat(items: Iterator[Any]) -> list[Any]:
    """Items and problems, with Lines and LineBlocks parsed as their consumers parse them."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, Line):
            out += _flat(reader.parse_line(item))
        elif isinstance(item, LineBlock):
            for lineno, data in enumerate(item.lines, item.first):
                if data.strip():
                    out += _flat(reader.parse_line(Line(data, item.file, lineno)))
        elif isinstance(item, Item):
            out.append(("item", item.resource, item.line))
        else:
            assert isinstance(item, InputProblem)
            out.append(("problem", item.reason, item.line))
    return out


def _modes(path: Path) -> dict[str, list[Any]]:
    return {
        "parsed": _flat(reader.read_file(path)),
        "raw": _flat(reader.read_file(path, raw=True)),
        "filtered": _flat(reader.read_file(path, (b'"Condition"',), raw=True)),
        "blocks": _flat(reader.read_file_blocks(path)),
    }


@pytest.mark.parametrize("doc", [BUNDLE, ONE_RESOURCE], ids=["bundle", "resource"])
@pytest.mark.parametrize("ending", ["", "\n", "\r\n"])
def test_a_one_line_json_file_reads_as_the_same_line_named_ndjson(
    tmp_path: Path, doc: Any, ending: str
) -> None:
    text = json.dumps(doc) + ending
    (tmp_path / "a.json").write_text(text)
    (tmp_path / "a.ndjson").write_text(text)
    as_json, as_ndjson = _modes(tmp_path / "a.json"), _modes(tmp_path / "a.ndjson")
    for mode in as_json:
        assert as_json[mode] == [(k, v, n) for k, v, n in as_ndjson[mode]], mode
    assert all(n == 1 for _, _, n in as_json["parsed"])
    assert ("problem", "entry[2]: entry.resource has no resourceType", 1) in as_json[
        "parsed"
    ] or doc is ONE_RESOURCE


def test_a_one_line_json_file_is_parsed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.json").write_text(json.dumps(BUNDLE))
    calls: list[int] = []
    loads = orjson.loads

    def counting(data: Any) -> Any:
        calls.append(len(data))
        return loads(data)

    monkeypatch.setattr(reader.orjson, "loads", counting)
    items = [i for i in reader.read_file(tmp_path / "a.json") if isinstance(i, Item)]
    assert len(items) == 3 and len(calls) == 1


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"resourceType": "Bundle", "entry": [}', "not valid JSON"),  # broken: the whole file's problem
        ('{"resourceType": "Observation"} {"x": 1}', "not valid JSON"),
    ],
)
def test_a_one_line_file_that_is_not_one_object_is_reported_as_before(
    tmp_path: Path, text: str, expected: str
) -> None:
    (tmp_path / "a.json").write_text(text)
    problems = [i for i in reader.read_file(tmp_path / "a.json") if isinstance(i, InputProblem)]
    assert len(problems) == 1 and problems[0].reason.startswith(expected) and problems[0].line is None


def test_a_one_line_file_longer_than_the_line_limit_is_reported_like_the_ndjson_line(tmp_path: Path) -> None:
    text = json.dumps(BUNDLE)
    (tmp_path / "a.json").write_text(text)
    (tmp_path / "a.ndjson").write_text(text)
    limits = ReadLimits(max_line_bytes=len(text) - 1)
    got = _flat(reader.read_file(tmp_path / "a.json", limits=limits))
    assert got == _flat(reader.read_file(tmp_path / "a.ndjson", limits=limits))
    assert got == [("problem", f"line longer than {len(text) - 1} bytes: skipped", 1)]


def test_the_examples_screen_alike_saved_as_one_line_or_pretty(tmp_path: Path) -> None:
    from fhir_adapter.config.loader import load_trials
    from fhir_adapter.screening import Screener
    from fhir_adapter.source.files import FileSource
    from fhir_adapter.workers import evaluate

    def screened(folder: Path) -> list[Any]:
        import datetime as dt

        screener = Screener(load_trials(), dt.date(2026, 6, 15))
        out = []
        with FileSource([folder], screener) as source:
            for item in source.records():
                if isinstance(item, InputProblem):
                    out.append(item.reason)
                else:
                    done = evaluate(item.raw, screener, item.medication)  # type: ignore[attr-defined]
                    out.append([r.to_json() for r in done.results or ()])
        return out

    pretty, compact = tmp_path / "pretty", tmp_path / "compact"
    pretty.mkdir()
    compact.mkdir()
    for path in sorted((REPO / "examples" / "patients").glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        (pretty / path.name).write_text(json.dumps(doc, indent=2))
        (compact / path.name).write_text(json.dumps(doc))
    assert screened(compact) == screened(pretty)
