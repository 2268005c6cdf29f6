"""What an export's bytes look like never changes what is screened: escaped JSON screens exactly like
plain JSON, and a corrupt line is reported whoever's it is (pass 2 parses every line)."""

from __future__ import annotations

import json
from pathlib import Path

from fhirdata import REPO

from fhir_adapter.source.reader import Item, read_all


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


def test_a_corrupt_line_of_a_patient_no_gate_admits_is_reported(tmp_path: Path) -> None:
    from fhir_adapter.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "Patient.ndjson").write_text('{"resourceType":"Patient","id":"p9"}\n')
    # Cut off after its subject: a byte scan for the patient would have dropped it as Patient/p9's.
    (folder / "Observation.ndjson").write_text(
        '{"resourceType":"Observation","subject":{"reference":"Patient/p9"},"status":\n'
    )
    out = tmp_path / "out.json"
    assert main(["screen", str(folder), "--as-of", "2026-06-15", "--out", str(out)]) == 3
    errors = json.loads(out.read_text())["errors"]
    assert [(e["reason"], e.get("line")) for e in errors] == [("not valid JSON", 1)]
