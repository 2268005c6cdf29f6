"""One test per class of hostile file (issue: hostile and failing inputs, file readers): each is reported
and skipped in bounded time and memory, and the other patients are screened as usual."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from fhirdata import DM, bundle, condition, observation, patient

from fhir_adapter.facts.fhirjson import to_decimal
from fhir_adapter.model import InputProblem
from fhir_adapter.settings import ReadLimits
from fhir_adapter.source.reader import Item, display, read_all


def good(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "good.json"
    path.write_text(json.dumps(bundle([patient(id="good"), condition(DM, pid="good")])), encoding="utf-8")
    return path


def read(folder: Path, limits: ReadLimits | None = None) -> tuple[list[Item], list[InputProblem]]:
    out = list(read_all([folder], limits=limits))
    return [i for i in out if isinstance(i, Item)], [i for i in out if isinstance(i, InputProblem)]


def test_a_fifo_is_reported_not_opened(tmp_path: Path) -> None:
    good(tmp_path)
    os.mkfifo(tmp_path / "pipe.ndjson")  # opening it for reading would block for ever
    items, problems = read(tmp_path)
    assert [p.reason for p in problems] == ["not a regular file (a FIFO): skipped"]
    assert {i.resource["id"] for i in items} >= {"good"}


def test_a_link_to_a_device_is_reported_not_read(tmp_path: Path) -> None:
    good(tmp_path)
    (tmp_path / "zero.ndjson").symlink_to("/dev/zero")  # reading it would never end
    _, problems = read(tmp_path)
    assert [p.reason for p in problems] == ["not a regular file (a device): skipped"]


def test_a_folder_link_loop_is_walked_once(tmp_path: Path) -> None:
    good(tmp_path / "data")
    (tmp_path / "data" / "again").symlink_to(tmp_path / "data")
    items, problems = read(tmp_path)
    assert len([i for i in items if i.resource["resourceType"] == "Patient"]) == 1
    assert any("link loop" in p.reason for p in problems)


def test_a_very_deep_folder_tree_is_walked_without_recursion(tmp_path: Path) -> None:
    deep = tmp_path
    for _level in range(1200):  # deeper than Python's recursion limit
        deep = deep / "d"
        try:
            deep.mkdir()
        except OSError:  # the path got longer than the OS allows: deep enough
            deep = deep.parent
            break
    good(deep)
    try:
        items, problems = read(tmp_path)
        assert problems == [] and {i.resource["id"] for i in items} >= {"good"}
    finally:  # shutil.rmtree (pytest's clean-up) recurses: take the tree down from the bottom
        (deep / "good.json").unlink()
        while deep != tmp_path:
            deep.rmdir()
            deep = deep.parent


def test_a_compression_bomb_is_cut_at_the_ratio(tmp_path: Path) -> None:
    line = b'{"resourceType":"Observation","subject":{"reference":"Patient/x"}}\n'
    with gzip.open(tmp_path / "bomb.ndjson.gz", "wb") as fh:
        for _ in range(64):
            fh.write(line * 16000)  # ~64 MiB that compress to a few hundred KiB
    items, problems = read(tmp_path, ReadLimits(max_compression_ratio=20))
    size = (tmp_path / "bomb.ndjson.gz").stat().st_size
    assert len(items) * len(line) <= 20 * size + len(line)
    assert any("decompresses to more" in p.reason for p in problems)


def test_an_endless_line_is_skipped_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "long.ndjson"
    path.write_bytes(
        b'{"resourceType":"Observation","note":"'
        + b"a" * 3_000_000
        + b'"}\n{"resourceType":"Patient","id":"after"}\n'
    )
    items, problems = read(tmp_path, ReadLimits(max_line_bytes=1_000_000))
    assert [p.line for p in problems] == [1] and "longer than" in problems[0].reason
    assert [i.resource["id"] for i in items] == ["after"]  # the next line is read as usual


def test_a_document_larger_than_the_cap_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "big.json").write_text(json.dumps(bundle([patient(id="big")]), indent=1), encoding="utf-8")
    items, problems = read(tmp_path, ReadLimits(max_document_bytes=100))
    assert items == [] and "larger than 100 bytes" in problems[0].reason


def test_a_file_name_that_is_not_utf8_is_reported_printably(tmp_path: Path) -> None:
    odd = tmp_path / os.fsdecode(b"caf\xe9.json")
    odd.write_bytes(b"not json")
    _, problems = read(tmp_path)
    assert problems[0].file == display(odd) and "\\xe9" in problems[0].file
    json.dumps([p.to_json() for p in problems], ensure_ascii=False).encode("utf-8")  # writable


def test_bundles_nested_in_bundles_stop_at_a_depth(tmp_path: Path) -> None:
    doc: dict[str, object] = bundle([patient(id="inner")])
    for _ in range(30):
        doc = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": doc}]}
    (tmp_path / "nested.json").write_text(json.dumps(doc), encoding="utf-8")
    items, problems = read(tmp_path)
    assert items == [] and "nested deeper than" in problems[0].reason


def test_deeply_nested_json_is_a_problem_or_screened_never_a_crash(tmp_path: Path) -> None:
    from fhir_adapter.cli import main

    deep = '{"n":[' * 900 + "1" + "]}" * 900
    obs = json.dumps(observation(("http://loinc.org", "2157-6"), 100, "U/L", pid="good")).replace(
        '"status"', f'"extension": [{{"url": "x", "deep": {deep}}}], "status"', 1
    )
    good(tmp_path)
    (tmp_path / "deep.ndjson").write_text(obs + "\n", encoding="utf-8")
    assert main(["screen", str(tmp_path), "--as-of", "2026-06-15", "--out", str(tmp_path / "r.json")]) in (
        0,
        3,
    )


@pytest.mark.parametrize(
    "value", ["NaN", "Infinity", "-Infinity", "1e999999", "9" * 400, True, None, [1], "abc"]
)
def test_values_no_measurement_has_are_not_numbers(value: object) -> None:
    assert to_decimal(value) is None


@pytest.mark.parametrize(("value", "expected"), [(52.0, "52.0"), ("1,5", "1.5"), (-0.0, "-0.0"), ("7", "7")])
def test_real_numbers_stay_exact(value: object, expected: str) -> None:
    assert str(to_decimal(value)) == expected


@pytest.mark.parametrize("text", ["1,280", "-1,280", "12,500", "999,999"])
def test_a_comma_before_three_digits_is_not_read_as_a_decimal_comma(text: str) -> None:
    # 1,280 g/L of hemoglobin read as 1.28 would be an anemia; read as 1280, none: neither is a guess to make.
    assert to_decimal(text) is None


@pytest.mark.parametrize(("text", "expected"), [("0,125", "0.125"), ("1,2805", "1.2805"), ("12,5", "12.5")])
def test_a_decimal_comma_that_cannot_be_a_thousands_separator_is_read(text: str, expected: str) -> None:
    assert str(to_decimal(text)) == expected


def test_a_misspelled_or_padded_resource_type_is_counted_or_reported(tmp_path: Path) -> None:
    from fhir_adapter.cli import main

    good(tmp_path)
    lines = [
        {"resourceType": "Obsevation", "id": "x1", "subject": {"reference": "Patient/good"}},
        {"resourceType": "Observation ", "id": "x2", "subject": {"reference": "Patient/good"}},
        {"resourceType": "Patient", "id": 7},
    ]
    (tmp_path / "odd.ndjson").write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    out = tmp_path / "r.json"
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["screen", str(tmp_path), "--as-of", "2026-06-15", "--out", str(out)]) == 3
    reasons = [e["reason"] for e in json.loads(out.read_text())["errors"]]
    assert any("'Observation ' is not a FHIR resource type" in r for r in reasons)
    assert any("Patient/? has no valid id" in r for r in reasons)
    assert "Skipped 1 of types no criterion reads: Obsevation 1" in err.getvalue()
