"""At the most verbose level (-vv) the logs carry no patient name, MRN or birth date.

Everything the run logs is collected twice: the CLI's own handler on stderr (capsys) and every log record
at DEBUG (caplog, re-attached after the CLI installs its handler). The result file itself may hold PHI
(evidence quotes birth dates by design), so it goes to --out and is not inspected here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhirdata import HGB, REPO, baseline, bundle, for_patient, observation, patient

import fhir_adapter.logs
from fhir_adapter.cli import main

EXAMPLES = REPO / "examples" / "patients"

NAMES = ["Zhang", "Weiling", "Quimby", "Harriet"]
MRNS = ["MRN-8841-2207", "HQ-55-0192"]
BIRTH_DATES = ["1979-08-23", "1975-04-11"]


def _phi_patients(folder: Path) -> Path:
    zhang = patient(
        "1979-08-23",
        "female",
        id="phi1",
        name=[{"family": "Zhang", "given": ["Weiling"], "text": "Zhang Weiling"}],
        identifier=[
            {"type": {"text": "MRN"}, "system": "http://hospital.example.org/mrn", "value": "MRN-8841-2207"}
        ],
        telecom=[{"system": "phone", "value": "+86 10 5555 0101"}],
    )
    quimby = patient(
        "1975-04-11",
        "female",
        id="phi2",
        name=[{"family": "Quimby", "given": ["Harriet"]}],
        identifier=[{"system": "http://hospital.example.org/mrn", "value": "HQ-55-0192"}],
    )
    first = [zhang, *[r for r in for_patient(baseline(), "phi1") if r["resourceType"] != "Patient"]]
    second = [quimby, *[r for r in for_patient(baseline(), "phi2") if r["resourceType"] != "Patient"]]
    # A malformed Observation (coding not a list) must be tolerated, not logged with its content.
    broken = observation(HGB, 70, "g/L", pid="phi2", id="phi2-broken")
    broken["code"]["coding"] = 7
    second.append(broken)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.json").write_text(json.dumps(bundle(first)), encoding="utf-8")
    (folder / "b.json").write_text(json.dumps(bundle(second)), encoding="utf-8")
    (folder / "c.ndjson").write_text(
        '{"resourceType": "Observation", "id": "cut", "subject": {"refer\n', encoding="utf-8"
    )
    return folder


def _example_phi() -> tuple[list[str], list[str], list[str]]:
    names, mrns, births = [], [], []
    for path in sorted(EXAMPLES.glob("*.json")):
        for entry in json.loads(path.read_text(encoding="utf-8"))["entry"]:
            r = entry["resource"]
            if r["resourceType"] == "Patient":
                for n in r.get("name", []):
                    names += [n["family"], *n.get("given", [])]
                mrns += [i["value"] for i in r.get("identifier", [])]
                births.append(r["birthDate"])
    return names, mrns, births


@pytest.fixture
def all_log_text(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """Run the CLI at -vv and return everything logged: stderr plus every LogRecord (message + traceback)."""
    original_setup = fhir_adapter.logs.setup

    def setup_keeping_caplog(verbosity: int, json_lines: bool | None = None) -> None:
        original_setup(verbosity, json_lines)
        logging.getLogger().addHandler(caplog.handler)

    monkeypatch.setattr(fhir_adapter.logs, "setup", setup_keeping_caplog)
    caplog.set_level(logging.DEBUG)

    def run(tmp_path: Path, *paths: Path, extra: tuple[str, ...] = ()) -> tuple[str, int]:
        code = main(
            [
                "screen",
                *map(str, paths),
                "--as-of",
                "2026-06-15",
                "--out",
                str(tmp_path / "r.json"),
                "-vv",
                *extra,
            ]
        )
        captured = capsys.readouterr()
        formatter = logging.Formatter()
        records = "\n".join(
            r.getMessage() + (formatter.formatException(r.exc_info) if r.exc_info else "")
            for r in caplog.records
        )
        assert caplog.records, "nothing was logged at -vv: the test would prove nothing"
        return captured.err + "\n" + captured.out + "\n" + records, code

    yield run


def _assert_absent(text: str, values: list[str]) -> None:
    leaked = sorted({v for v in values if v and v in text})
    assert not leaked, f"PHI in the logs: {leaked}"


def test_vv_logs_of_the_examples_hold_no_name_mrn_or_birth_date(all_log_text: Any, tmp_path: Path) -> None:
    names, mrns, births = _example_phi()
    assert len(births) == 28 and mrns and names
    text, code = all_log_text(tmp_path, EXAMPLES)
    assert code == 0
    assert "reading" in text  # the debug lines really were captured
    _assert_absent(text, names)
    _assert_absent(text, mrns)
    _assert_absent(text, births)


def test_vv_logs_hold_no_note_text_when_notes_are_read(all_log_text: Any, tmp_path: Path) -> None:
    # Clinical text is patient data: it may reach the result file (a suggestion's sentence), never a log.
    overlay = REPO / "examples" / "notes-decide.toml"
    text, code = all_log_text(tmp_path, EXAMPLES, extra=("--mappings", str(overlay)))
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    sentences = [
        e["detail"]
        for s in result["subjects"]
        for c in s["criteria"]
        for comp in c.get("components", [])
        for e in comp["evidence"]
        if "from note" in e["detail"]
    ]
    assert sentences, "no value was read from a note: the test would prove nothing"
    fragments = ["118/150", "Weakness of hip flexors", "皮疹较前好转", "徒手肌力", "HAQ-DI评分", "declined"]
    _assert_absent(text, fragments)
    names, mrns, births = _example_phi()
    _assert_absent(text, names + mrns + births)


def test_vv_logs_hold_no_phi_even_when_facts_fail_and_inputs_are_bad(
    all_log_text: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fact that fails with the patient's name and MRN in its exception message (as a careless
    # ValueError(f"...{resource}") would): the log may say where it failed, never what the data was.
    import fhir_adapter.facts.derive as derive

    def leaky(ctx: Any, spec: Any) -> Any:
        raise ValueError(f"cannot read {NAMES[0]} {MRNS[0]} born {BIRTH_DATES[0]}")

    kind = derive.KINDS["inpatient-stay"]
    monkeypatch.setitem(derive.KINDS, "inpatient-stay", derive.Kind(leaky, kind.reads))
    folder = _phi_patients(tmp_path / "in")
    text, code = all_log_text(tmp_path, folder)
    assert code == 3  # the broken NDJSON line
    assert "failed for a patient: ValueError at" in text  # the failure was logged, with its location
    _assert_absent(text, NAMES)
    _assert_absent(text, MRNS)
    _assert_absent(text, BIRTH_DATES)
    _assert_absent(text, ["+86 10 5555 0101"])
    result = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert {s["patient"] for s in result["subjects"]} == {"Patient/phi1", "Patient/phi2"}


def test_the_phi_check_would_notice_a_leak(all_log_text: Any, tmp_path: Path) -> None:
    # Guard: a log call that quotes a birth date is caught by the same collection.
    folder = _phi_patients(tmp_path / "in")
    logging.getLogger("fhir_adapter.test").debug("leak %s", BIRTH_DATES[0])
    text, _ = all_log_text(tmp_path, folder)
    with pytest.raises(AssertionError, match="PHI in the logs"):
        _assert_absent(text, BIRTH_DATES)
