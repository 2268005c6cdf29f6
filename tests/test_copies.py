"""The same resource read twice: the newer copy stands for it, copies that agree are one, and copies that
differ with nothing to order them are reported, the first read kept (source/copies.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fhirdata import HGB, baseline, ndjson_lines, observation, without

from fhir_adapter.cli import main
from fhir_adapter.source.copies import choose
from fhir_adapter.source.grouping import Row, record_from_rows


def _obs(value: float, **meta: str) -> dict[str, Any]:
    obs = observation(HGB, value, "g/L", id="hb")
    if meta:
        obs["meta"] = meta
    return obs


def _record(*copies: dict[str, Any]) -> tuple[list[float], list[str]]:
    rows = [Row("Observation", json.dumps(c).encode(), "f.ndjson", n) for n, c in enumerate(copies, 1)]
    record, problems = record_from_rows("p1", rows, lambda _key: None)
    values = [o["valueQuantity"]["value"] for o in record.resources["Observation"]]
    return values, [p.reason for p in problems]


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [
        ({"versionId": "2"}, {"versionId": "10"}, 128),  # numbers, not text: 10 > 2
        ({"versionId": "3"}, {"versionId": "1"}, 70),
        ({"lastUpdated": "2026-06-06T10:00:00Z"}, {"lastUpdated": "2026-06-05T10:00:00Z"}, 70),
        ({"lastUpdated": "2026-06-05T10:00:00+02:00"}, {"lastUpdated": "2026-06-05T09:00:00Z"}, 128),
        # equal versions: the later lastUpdated decides
        (
            {"versionId": "1", "lastUpdated": "2026-06-05T10:00:00Z"},
            {"versionId": "1", "lastUpdated": "2026-06-06T10:00:00Z"},
            128,
        ),
    ],
)
def test_the_newer_of_two_differing_copies_is_kept_whichever_is_read_first(
    first: dict[str, str], second: dict[str, str], kept: float
) -> None:
    values, problems = _record(_obs(70, **first), _obs(128, **second))
    assert values == [kept] and problems == []


def test_copies_that_differ_only_in_meta_or_narrative_are_one_resource_without_a_problem() -> None:
    plain = _obs(70)
    tagged = dict(_obs(70, source="#bundle"), text={"status": "generated", "div": "<div>x</div>"})
    assert _record(plain, tagged) == ([70], [])


def test_differing_copies_with_nothing_to_order_them_keep_the_first_and_say_so() -> None:
    values, problems = _record(_obs(70), _obs(128))
    assert values == [70]
    assert problems == [
        "Observation/hb: copies of it differ and neither is newer (meta.versionId, meta.lastUpdated): "
        "the first read is used"
    ]


def test_a_version_that_is_not_a_number_does_not_order_copies() -> None:
    assert choose(_obs(70, versionId="b"), _obs(128, versionId="a")) == "unordered"


def _screen(folder: Path, out: Path, workers: int) -> tuple[int, dict[str, Any]]:
    code = main(
        ["screen", str(folder), "--as-of", "2026-06-15", "--out", str(out), "--workers", str(workers)]
    )
    return code, json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_newer_copy_in_a_later_file_decides_the_criterion(tmp_path: Path, workers: int) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    old = _obs(70, versionId="1")
    (folder / "a.ndjson").write_text(ndjson_lines([*without(baseline(), HGB), old]), encoding="utf-8")
    (folder / "b.ndjson").write_text(ndjson_lines([_obs(128, versionId="2")]), encoding="utf-8")
    code, result = _screen(folder, tmp_path / "r.json", workers)
    assert code == 0 and result["errors"] == []
    assert [s["status"] for s in result["subjects"]] == ["candidate"]  # Hb 128 g/L, not the old 70


@pytest.mark.parametrize("workers", [1, 2])
def test_two_differing_unordered_copies_of_a_medication_are_reported_at_any_worker_count(
    tmp_path: Path, workers: int
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    med = {"resourceType": "Medication", "id": "m1", "code": {"text": "prednisone"}}
    other = {**med, "code": {"text": "amlodipine"}}
    (folder / "a.ndjson").write_text(ndjson_lines([*baseline(), med]), encoding="utf-8")
    (folder / "b.ndjson").write_text(ndjson_lines([other]), encoding="utf-8")
    code, result = _screen(folder, tmp_path / "r.json", workers)
    assert code == 3
    assert [(e["reason"], e.get("resource")) for e in result["errors"]] == [
        (
            "Medication/m1: copies of it differ and neither is newer (meta.versionId, meta.lastUpdated): "
            "the first read is used",
            "Medication/m1",
        )
    ]


@pytest.mark.parametrize(
    ("first", "second", "expected"), [(b"{x", b'{"id": "m"}', "second"), (b'{"id": "m"}', b"[1]", "first")]
)
def test_of_two_medication_bodies_the_one_that_is_a_json_object_wins(
    first: bytes, second: bytes, expected: str
) -> None:
    from fhir_adapter.source.copies import choose_bodies

    assert choose_bodies(first, second) == expected


def test_a_conflict_of_copies_whose_id_is_not_a_fhir_id_does_not_repeat_the_id() -> None:
    first, second = _obs(70), _obs(128)
    first["id"] = second["id"] = "Jane Roe 1981"
    _, problems = _record(first, second)
    assert problems == [
        "Observation with an id that is not a FHIR id: copies of it differ and neither is newer "
        "(meta.versionId, meta.lastUpdated): the first read is used"
    ]
