"""Lines a fuzzer found mishandled (one test per finding): each costs its own line, never the run, and
reads the same whoever spells it, at one worker and at two."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fhirdata import HGB, baseline, ndjson_lines, observation, without

from fhir_adapter.cli import main
from fhir_adapter.facts.fhirjson import patient_of


def _screen(folder: Path, out: Path, workers: int) -> tuple[int, dict[str, Any], str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(
            ["screen", str(folder), "--as-of", "2026-06-15", "--out", str(out), "--workers", str(workers)]
        )
    return code, json.loads(out.read_text(encoding="utf-8")), err.getvalue()


def _two_files(folder: Path, extra: list[str]) -> None:
    """A candidate's record in one file and ``extra`` lines in a second: two files are two pieces, so two
    workers read them in two processes."""
    folder.mkdir()
    (folder / "a.ndjson").write_text(ndjson_lines(baseline()), encoding="utf-8")
    (folder / "b.ndjson").write_text("".join(line + "\n" for line in extra), encoding="utf-8")


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("rtype", [["Condition"], {"a": 1}, 7])
def test_a_resource_type_that_is_not_a_string_costs_its_line_not_the_run(
    tmp_path: Path, workers: int, rtype: object
) -> None:
    line = json.dumps({"resourceType": rtype, "id": "x", "subject": {"reference": "Patient/p1"}})
    _two_files(tmp_path / "in", [line])
    code, result, err = _screen(tmp_path / "in", tmp_path / "r.json", workers)
    assert code == 3, err
    assert [s["status"] for s in result["subjects"]] == ["candidate"]
    reasons = [e["reason"] for e in result["errors"]]
    wanted = "has no resourceType" if rtype is None else "resourceType that is not a string"
    assert any(wanted in r for r in reasons), reasons


def test_free_text_in_a_resource_type_is_not_repeated_on_the_terminal(tmp_path: Path) -> None:
    line = json.dumps({"resourceType": "Jane Roe MRN 4711 1981-03-02", "id": "x"})
    _two_files(tmp_path / "in", [line, json.dumps({"resourceType": "Observation ", "id": "y"})])
    code, result, err = _screen(tmp_path / "in", tmp_path / "r.json", 1)
    assert code == 3
    assert "Jane" not in err and "4711" not in err and "Jane" not in json.dumps(result["errors"])
    reasons = [e["reason"] for e in result["errors"]]
    assert "resourceType (not a name) is not a FHIR resource type" in reasons
    assert "resourceType 'Observation ' is not a FHIR resource type" in reasons  # a word is still shown


@pytest.mark.parametrize(
    "reference", ["Patient/p1 ", "Patient/p1?_format=json", "Patient/p1\t", "http://h/fhir/Patient/p1"]
)
def test_a_patient_reference_reads_the_same_on_the_fast_path_and_the_general_one(reference: str) -> None:
    resource = {"resourceType": "Observation", "subject": {"reference": reference}}
    assert patient_of(resource) == "p1"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_padded_reference_is_its_patient_not_a_second_one(tmp_path: Path, workers: int) -> None:
    resources = without(baseline(), HGB)
    for r in resources:
        if r["resourceType"] == "Condition":
            r["subject"]["reference"] = "Patient/p1 "
    hb = observation(HGB, 79, "g/L")
    hb["subject"]["reference"] = "Patient/p1?x=1"
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.ndjson").write_text(ndjson_lines(resources), encoding="utf-8")
    (folder / "b.ndjson").write_text(ndjson_lines([hb]), encoding="utf-8")
    code, result, err = _screen(folder, tmp_path / "r.json", workers)
    assert [s["patient"] for s in result["subjects"]] == ["Patient/p1"], err
    assert code == 0, err
    assert result["subjects"][0]["status"] == "ineligible"  # the diagnosis and the Hb 79 g/L are its own


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("first", ["", '{"resourceType": "Observation", broken'])
def test_ndjson_named_json_behind_a_blank_or_broken_first_line_costs_that_line_not_the_file(
    tmp_path: Path, workers: int, first: str
) -> None:
    _two_files(tmp_path / "in", [])
    (tmp_path / "in" / "a.ndjson").rename(tmp_path / "in" / "a.json")
    body = (tmp_path / "in" / "a.json").read_text(encoding="utf-8")
    (tmp_path / "in" / "a.json").write_text(first + "\n" + body, encoding="utf-8")
    code, result, err = _screen(tmp_path / "in", tmp_path / "r.json", workers)
    assert [s["status"] for s in result["subjects"]] == ["candidate"], err
    errors = [(e["reason"], e.get("line")) for e in result["errors"]]
    assert errors == ([("not valid JSON", 1)] if first else [])
    assert code == (3 if first else 0)


def test_a_broken_pretty_printed_bundle_is_still_one_problem_not_a_line_each(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    text = json.dumps(
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in baseline()]},
        indent=2,
    )
    (folder / "b.json").write_text(text[:-40], encoding="utf-8")  # cut short
    code, result, _ = _screen(folder, tmp_path / "r.json", 1)
    assert code == 3
    assert [e["reason"].split(" (")[0] for e in result["errors"]] == ["not valid JSON"]


def test_control_characters_in_a_file_name_reach_the_terminal_as_escapes_not_as_controls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bad\x1b[31m\x9bred.ndjson").write_text("garbage\n", encoding="utf-8")
    code = main(["screen", str(folder), "--as-of", "2026-06-15", "--out", str(tmp_path / "r.json")])
    assert code == 3
    shown = capsys.readouterr()
    assert "\x1b" not in shown.err + shown.out and "\x9b" not in shown.err + shown.out
    assert "bad\\x1b[31m\\x9bred.ndjson:1: not valid JSON" in shown.err + shown.out


def test_the_text_log_format_escapes_control_characters() -> None:
    import logging

    from fhir_adapter.logs import JsonFormatter, TextFormatter

    record = logging.LogRecord("x", logging.WARNING, "f", 1, "file %s", ("a\x1b]0;owned\x07",), None)
    assert TextFormatter("%(message)s").format(record) == "file a\\x1b]0;owned\\x07"
    assert "\\\\x1b]0;owned\\\\x07" in JsonFormatter().format(record)


def test_a_bundle_entry_that_lost_its_resource_is_reported_but_a_deletion_or_response_is_not(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    entries: list[dict[str, Any]] = [{"resource": r} for r in baseline()]
    entries += [
        {"fullUrl": "urn:uuid:1"},
        {"resource": None},
        {"request": {"method": "DELETE", "url": "Observation/x"}},
        {"response": {"status": "201 Created"}},
    ]
    (folder / "b.json").write_text(
        json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})
    )
    code, result, _ = _screen(folder, tmp_path / "r.json", 1)
    assert code == 3
    assert [s["status"] for s in result["subjects"]] == ["candidate"]
    n = len(baseline())
    assert [e["reason"] for e in result["errors"]] == [
        f"entry[{n}]: entry has no resource",
        f"entry[{n + 1}]: entry has no resource",
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_resources_of_patients_the_input_does_not_hold_are_counted_not_dropped_in_silence(
    tmp_path: Path, workers: int
) -> None:
    ghost = json.dumps(
        {
            "resourceType": "Observation",
            "id": "g",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/ghost"},
        }
    )
    other = json.dumps(
        {
            "resourceType": "Condition",
            "id": "c",
            "code": {"text": "asthma"},
            "subject": {"reference": "Patient/g2"},
        }
    )
    listed = json.dumps({"resourceType": "Observation", "id": "o", "subject": {"reference": "Patient/p1"}})
    _two_files(tmp_path / "in", [ghost, other, ghost.replace('"g"', '"g3"'), listed])
    code, result, _ = _screen(tmp_path / "in", tmp_path / "r.json", workers)
    assert code == 3
    assert [s["patient"] for s in result["subjects"]] == ["Patient/p1"]
    assert [e["reason"] for e in result["errors"]] == [
        "2 patient(s) have resources but no Patient resource in the input and nothing a trial's gate "
        "admits: not listed or screened"
    ]
