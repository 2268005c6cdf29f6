"""End to end through ``fhir_adapter.cli.main``: every input shape, bad inputs, exit codes, the result
schema, and the shipped examples."""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fhirdata import (
    DM,
    HGB,
    PLT,
    REPO,
    Res,
    baseline,
    bundle,
    condition,
    days_ago,
    for_patient,
    ndjson_lines,
    observation,
)

from fhir_adapter.cli import main
from fhir_adapter.model import InputProblem
from fhir_adapter.source.reader import Item, read_all

EXAMPLES = REPO / "examples" / "patients"
SCHEMA = json.loads((REPO / "profiles" / "screening-result.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


class Run:
    def __init__(self, code: int, result: dict[str, Any] | None, stderr: str) -> None:
        self.code, self.result, self.stderr = code, result, stderr

    @property
    def subjects(self) -> dict[str, dict[str, Any]]:
        assert self.result is not None
        return {s["patient"]: s for s in self.result["subjects"]}

    @property
    def errors(self) -> list[dict[str, Any]]:
        assert self.result is not None
        return list(self.result["errors"])

    def status(self, pid: str) -> str:
        return str(self.subjects[f"Patient/{pid}"]["status"])

    def criterion(self, pid: str, cid: str) -> dict[str, Any]:
        return next(c for c in self.subjects[f"Patient/{pid}"]["criteria"] if c["id"] == cid)


def screen_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str | Path) -> Run:
    """Run ``fhir-adapter screen ARGS --as-of 2026-06-15 --out tmp``; validate the result against the schema."""
    out = tmp_path / "out" / "result.json"
    code = main(["screen", *map(str, args), "--as-of", "2026-06-15", "--out", str(out)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    result = json.loads(out.read_text(encoding="utf-8")) if out.exists() else None
    if result is not None:
        errors = sorted(VALIDATOR.iter_errors(result), key=str)
        assert not errors, errors[0].message
    return Run(code, result, captured.err)


def write(path: Path, content: str | bytes | Res) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, dict):
        content = json.dumps(content, ensure_ascii=False, indent=1)
    if isinstance(content, str):
        content = content.encode("utf-8")
    if path.suffix == ".gz":
        content = gzip.compress(content)
    path.write_bytes(content)
    return path


def good_patient(pid: str = "good") -> list[Res]:
    return for_patient(baseline(), pid)


def ndjson_by_type(resources: list[Res], folder: Path, files_per_type: int = 1, gz: bool = False) -> Path:
    """Bulk-export layout: one file per type (Type.000.ndjson ...), resources dealt round-robin over files."""
    by_type: dict[str, list[list[Res]]] = defaultdict(lambda: [[] for _ in range(files_per_type)])
    counters: dict[str, int] = defaultdict(int)
    for r in resources:
        t = r["resourceType"]
        by_type[t][counters[t] % files_per_type].append(r)
        counters[t] += 1
    for t, chunks in by_type.items():
        for i, chunk in enumerate(chunks):
            if chunk:
                write(folder / f"{t}.{i:03d}.ndjson{'.gz' if gz else ''}", ndjson_lines(chunk))
    return folder


# --- Bundles ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("btype", ["collection", "transaction", "searchset", "batch-response"])
@pytest.mark.parametrize("refs", ["uuid", "absolute", "relative"])
def test_bundle_types_and_reference_styles_screen_the_same(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, btype: str, refs: str
) -> None:
    resources = good_patient("p1")
    reference = screen_cli(
        capsys, tmp_path / "ref", write(tmp_path / "ref.json", bundle(resources, "collection", "relative"))
    )
    run = screen_cli(capsys, tmp_path / "run", write(tmp_path / "b.json", bundle(resources, btype, refs)))
    assert run.code == 0 and run.errors == []
    assert run.status("p1") == "candidate"
    assert run.result is not None and reference.result is not None
    assert run.result["subjects"] == reference.result["subjects"]


def test_resources_without_id_are_identified_by_their_urn_uuid_full_url(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    resources = good_patient("p1")
    with_ids = screen_cli(
        capsys, tmp_path / "a", write(tmp_path / "a.json", bundle(resources, "transaction", "uuid"))
    )
    no_ids = screen_cli(
        capsys,
        tmp_path / "b",
        write(tmp_path / "b.json", bundle(resources, "transaction", "uuid", keep_ids=False)),
    )
    assert no_ids.code == 0 and no_ids.errors == []
    assert no_ids.status("p1") == "candidate"
    assert no_ids.result is not None and with_ids.result is not None
    assert no_ids.result["subjects"] == with_ids.result["subjects"]


def test_resources_without_id_and_absolute_full_urls(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path / "b.json", bundle(good_patient("p1"), "collection", "absolute", keep_ids=False))
    run = screen_cli(capsys, tmp_path, path)
    assert run.status("p1") == "candidate"
    evidence = [e["reference"] for c in run.subjects["Patient/p1"]["criteria"] for e in c["evidence"]]
    assert any(ref.startswith("Observation/p1-") for ref in evidence)


def test_single_resource_files_in_a_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for r in good_patient("p1"):
        write(tmp_path / "in" / f"{r['resourceType']}-{r['id']}.json", r)
    run = screen_cli(capsys, tmp_path, tmp_path / "in")
    assert run.code == 0
    assert run.status("p1") == "candidate"


def test_several_patients_in_one_bundle_are_kept_apart(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    anemic = [
        *for_patient(baseline(), "anemic"),
        observation(HGB, 70, "g/L", date=days_ago(1), pid="anemic", id="anemic-hb"),
    ]
    resources = [*good_patient("fine"), *anemic]
    run = screen_cli(capsys, tmp_path, write(tmp_path / "b.json", bundle(resources)))
    assert run.status("fine") == "candidate"
    assert run.status("anemic") == "ineligible"
    assert run.criterion("fine", "anemia")["verdict"] == "not-met"


def test_medication_reference_to_a_urn_uuid_medication_in_the_bundle_resolves(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from fhirdata import med_request, medication

    med = medication("pred5", "Prednisone oral tablet", strength_mg=5)
    order = med_request(
        dose=6, unit="{tbl}", medication={"medicationReference": {"reference": "Medication/pred5"}}
    )
    resources = [*baseline(), med, order]
    run = screen_cli(capsys, tmp_path, write(tmp_path / "b.json", bundle(resources, "collection", "uuid")))
    gc = next(c for c in run.subjects["Patient/p1"]["criteria"] if c["id"] == "glucocorticoid-dose")
    assert gc["verdict"] == "not-met"  # 6 x 5 mg = 30 mg / 60 kg = 0.5
    assert "30 mg/d" in gc["reason"]


# --- NDJSON and gzip ----------------------------------------------------------------------------------
def test_bulk_ndjson_one_file_per_type_patients_spread_over_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    resources = [*good_patient("a"), *good_patient("b"), *good_patient("c")]
    folder = ndjson_by_type(resources, tmp_path / "bulk", files_per_type=2)
    assert len(list(folder.glob("Observation.*.ndjson"))) == 2
    run = screen_cli(capsys, tmp_path, folder)
    assert run.code == 0 and run.errors == []
    assert {run.status(p) for p in "abc"} == {"candidate"}
    ref = screen_cli(
        capsys, tmp_path / "ref", write(tmp_path / "ref.json", bundle(resources, refs="relative"))
    )
    assert run.result is not None and ref.result is not None
    assert run.result["subjects"] == ref.result["subjects"]


def test_ndjson_gz_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = ndjson_by_type(good_patient("z"), tmp_path / "bulk", gz=True)
    assert list(folder.glob("*.ndjson.gz"))
    run = screen_cli(capsys, tmp_path, folder)
    assert run.code == 0
    assert run.status("z") == "candidate"


def test_json_gz_bundle(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path / "export.json.gz", bundle(good_patient("z")))
    run = screen_cli(capsys, tmp_path, path)
    assert run.code == 0
    assert run.status("z") == "candidate"


def test_the_same_resource_in_a_bundle_and_in_ndjson_is_counted_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    resources = good_patient("d")
    write(tmp_path / "in" / "bundle.json", bundle(resources, refs="relative"))
    ndjson_by_type(resources, tmp_path / "in" / "bulk")
    run = screen_cli(capsys, tmp_path, tmp_path / "in")
    assert run.status("d") == "candidate"
    assert run.criterion("d", "drug-allergy")["verdict"] == "not-met"


def _examples_as_ndjson(folder: Path) -> Path:
    """The example Bundles converted to bulk NDJSON (references resolved to Type/id by the reader)."""
    items = [i for i in read_all([EXAMPLES]) if isinstance(i, Item)]
    assert items, "no example resources read"
    return ndjson_by_type([i.resource for i in items], folder, files_per_type=3)


def test_examples_as_bundles_and_as_ndjson_give_identical_subjects(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    as_bundles = screen_cli(capsys, tmp_path / "a", EXAMPLES)
    as_ndjson = screen_cli(capsys, tmp_path / "b", _examples_as_ndjson(tmp_path / "ndjson"))
    assert as_bundles.code == as_ndjson.code == 0
    assert as_bundles.result is not None and as_ndjson.result is not None
    assert len(as_bundles.result["subjects"]) == EXAMPLE_PATIENTS
    assert as_ndjson.result["subjects"] == as_bundles.result["subjects"]


def test_examples_as_ndjson_with_notes_read_give_the_bundles_subjects(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Bulk NDJSON (one file per type, DocumentReference and DiagnosticReport among them) reads notes too.
    overlay = str(REPO / "examples" / "notes-decide.toml")
    as_bundles = screen_cli(capsys, tmp_path / "a", EXAMPLES, "--mappings", overlay)
    as_ndjson = screen_cli(
        capsys, tmp_path / "b", _examples_as_ndjson(tmp_path / "ndjson"), "--mappings", overlay
    )
    assert as_bundles.result is not None and as_ndjson.result is not None
    assert (tmp_path / "ndjson" / "DocumentReference.000.ndjson").exists()
    assert as_ndjson.result["subjects"] == as_bundles.result["subjects"]
    assert "from note" in json.dumps(as_ndjson.result["subjects"])


def test_examples_as_gzipped_ndjson_give_identical_subjects(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    items = [i.resource for i in read_all([EXAMPLES]) if isinstance(i, Item)]
    folder = ndjson_by_type(items, tmp_path / "gz", files_per_type=2, gz=True)
    as_bundles = screen_cli(capsys, tmp_path / "a", EXAMPLES)
    as_gz = screen_cli(capsys, tmp_path / "b", folder)
    assert as_bundles.result is not None and as_gz.result is not None
    assert as_gz.result["subjects"] == as_bundles.result["subjects"]


# --- bad input ----------------------------------------------------------------------------------------
def _screen_with_bad(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, content: str | bytes | Res
) -> tuple[Run, Path]:
    """A good patient's Bundle beside one bad file; returns the run and the bad file's path."""
    folder = tmp_path / "in"
    write(folder / "good.json", bundle(good_patient("good")))
    bad = write(folder / name, content)
    return screen_cli(capsys, tmp_path, folder), bad


def _assert_reported(run: Run, bad: Path, phrase: str, line: int | None = None) -> dict[str, Any]:
    assert run.code == 3
    matching = [e for e in run.errors if e["file"] == str(bad)]
    assert matching, run.errors
    assert any(phrase in e["reason"] for e in matching), matching
    if line is not None:
        assert any(e.get("line") == line for e in matching), matching
    assert run.status("good") == "candidate", "the other patients are screened correctly"
    assert "could not be read" in run.stderr
    return matching[0]


def test_truncated_json_is_reported_and_others_screened(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = json.dumps(bundle(good_patient("cut")))
    run, bad = _screen_with_bad(capsys, tmp_path, "truncated.json", text[: len(text) // 2])
    _assert_reported(run, bad, "not valid JSON")
    assert "Patient/cut" not in run.subjects


@pytest.mark.parametrize(
    ("content", "phrase"), [("[1, 2]", "not an object"), ('{"a": 1}', "no resourceType")]
)
def test_non_fhir_json_is_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, phrase: str
) -> None:
    run, bad = _screen_with_bad(capsys, tmp_path, "other.json", content)
    _assert_reported(run, bad, phrase)


def test_binary_file_is_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256)) * 4
    run, bad = _screen_with_bad(capsys, tmp_path, "scan.json", png)
    _assert_reported(run, bad, "binary")


def test_empty_file_is_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run, bad = _screen_with_bad(capsys, tmp_path, "empty.json", "")
    _assert_reported(run, bad, "empty")


def test_corrupt_gzip_is_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write(folder / "good.json", bundle(good_patient("good")))
    bad = folder / "broken.ndjson.gz"
    bad.write_bytes(gzip.compress(b'{"resourceType": "Patient", "id": "x"}\n' * 50)[:40])
    run = screen_cli(capsys, tmp_path, folder)
    _assert_reported(run, bad, "cannot read")


@pytest.mark.parametrize("name", ["Patient.ndjson.gz", "export.json.gz"])
def test_gzip_with_corrupt_deflate_data_is_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    raw = bytearray(
        gzip.compress(b"".join(b'{"resourceType": "Patient", "id": "x%d"}\n' % i for i in range(2000)))
    )
    for i in range(30, 60):
        raw[i] ^= 0x5A  # damage the compressed stream, not the header
    folder = tmp_path / "in"
    write(folder / "good.json", bundle(good_patient("good")))
    bad = folder / name
    bad.write_bytes(bytes(raw))  # written as is: write() would compress it again
    run = screen_cli(capsys, tmp_path, folder)
    _assert_reported(run, bad, "cannot read")


def test_utf8_bom_file_is_read_like_any_other(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Windows tools write a UTF-8 byte-order mark; the file is FHIR all the same.
    content = b"\xef\xbb\xbf" + json.dumps(bundle(good_patient("bom"))).encode()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bom.json").write_bytes(content)
    code = main(["screen", str(tmp_path / "in"), "--as-of", "2026-06-15", "--out", str(tmp_path / "r.json")])
    result = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert code == 0
    assert result["errors"] == []
    assert [s["patient"] for s in result["subjects"]] == ["Patient/bom"]


def test_broken_ndjson_line_among_good_ones_is_reported_with_its_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    resources = for_patient(baseline(), "nd")
    folder = ndjson_by_type([r for r in resources if r["resourceType"] != "Observation"], tmp_path / "in")
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    anemic = observation(HGB, 70, "g/L", date=days_ago(1), pid="nd", id="nd-hb-late")
    lines = ndjson_lines(observations).splitlines()
    lines.insert(1, '{"resourceType": "Observation", "id": "half", "status": "fin')
    lines.append(json.dumps(anemic))
    bad = write(folder / "Observation.000.ndjson", "\n".join(lines) + "\n")
    write(folder / "good.json", bundle(good_patient("good")))
    run = screen_cli(capsys, tmp_path, folder)
    _assert_reported(run, bad, "not valid JSON", line=2)
    # the lines around the broken one were read: the last line's hemoglobin decides anemia
    assert run.criterion("nd", "anemia")["verdict"] == "met"
    assert run.status("nd") == "ineligible"


def test_resource_without_resource_type_in_ndjson_is_reported_with_its_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    content = ndjson_lines([observation(PLT, 200, "10*9/L", pid="good")]) + '{"id": "x", "status": "final"}\n'
    run, bad = _screen_with_bad(capsys, tmp_path, "Observation.ndjson", content)
    _assert_reported(run, bad, "no resourceType", line=2)


def test_bundle_entry_without_resource_type_is_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    b = bundle([observation(PLT, 200, "10*9/L", pid="good")])
    b["entry"].append({"fullUrl": "urn:uuid:nope", "resource": {"id": "nope", "status": "final"}})
    run, bad = _screen_with_bad(capsys, tmp_path, "extra.json", b)
    _assert_reported(run, bad, "no resourceType")


def test_value_abc_makes_that_lab_unknown_with_a_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    resources = [
        r for r in good_patient("abc") if (r.get("code") or {}).get("coding", [{}])[0].get("code") != "777-3"
    ]
    bad_lab = observation(PLT, 59, "10*9/L", pid="abc", id="abc-plt")
    bad_lab["valueQuantity"]["value"] = "abc"
    run = screen_cli(
        capsys, tmp_path, write(tmp_path / "b.json", bundle([*resources, bad_lab, *good_patient("good")]))
    )
    assert run.code == 0  # readable input; the value is what is wrong
    plt = run.criterion("abc", "thrombocytopenia")
    assert plt["verdict"] == "unknown"
    assert "abc" in plt["reason"] and "not a number" in plt["reason"]
    assert run.status("abc") == "potential-candidate"
    assert run.status("good") == "candidate"


def test_reference_to_a_patient_not_in_the_input_is_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    orphan_dm = condition(DM, pid="ghost", id="ghost-dm")
    run = screen_cli(capsys, tmp_path, write(tmp_path / "b.json", bundle([*good_patient("good"), orphan_dm])))
    assert run.code == 3
    assert any("Patient/ghost" in e["reason"] and "not in the input" in e["reason"] for e in run.errors)
    ghost = run.subjects["Patient/ghost"]
    age = next(c for c in ghost["criteria"] if c["id"] == "age")
    assert age["verdict"] == "unknown"
    assert run.status("good") == "candidate"


def test_resource_without_a_patient_reference_is_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    loose = observation(HGB, 70, "g/L", id="loose-hb")
    loose.pop("subject")
    run, bad = _screen_with_bad(capsys, tmp_path, "Observation.ndjson", ndjson_lines([loose]))
    _assert_reported(run, bad, "no patient reference")


def test_missing_path_is_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = write(tmp_path / "good.json", bundle(good_patient("good")))
    run = screen_cli(capsys, tmp_path, good, tmp_path / "nowhere.json")
    assert run.code == 3
    assert any("no such file" in e["reason"] for e in run.errors)
    assert run.status("good") == "candidate"


def test_patient_without_dm_is_listed_ineligible_with_only_the_diagnosis(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    no_dm = [r for r in for_patient(baseline(), "nodm") if r["resourceType"] != "Condition"]
    run = screen_cli(capsys, tmp_path, write(tmp_path / "b.json", bundle([*no_dm, *good_patient("good")])))
    assert run.status("nodm") == "ineligible"
    assert [c["id"] for c in run.subjects["Patient/nodm"]["criteria"]] == ["diagnosis"]


# --- exit codes and messages --------------------------------------------------------------------------
def test_all_inputs_read_exits_0_and_prints_a_summary(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = screen_cli(capsys, tmp_path, write(tmp_path / "b.json", bundle(good_patient("good"))))
    assert run.code == 0
    assert "Screened 1 patient(s)" in run.stderr
    assert "candidate: 1" in run.stderr
    assert run.result is not None
    assert run.result["study"] == "NCT05495321" and run.result["asOf"] == "2026-06-15"


def test_bad_overlay_exits_2_naming_the_file_without_a_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    overlay = write(tmp_path / "site.toml", '[concepts.mmt-eight]\ncodes = ["http://x.org|1"]\n')
    good = write(tmp_path / "b.json", bundle(good_patient("good")))
    run = screen_cli(capsys, tmp_path, good, "--mappings", overlay)
    assert run.code == 2
    assert str(overlay) in run.stderr and "mmt-eight" in run.stderr
    assert run.result is None


def test_good_overlay_via_cli_applies(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from fhirdata import MMT8

    resources = [
        r for r in good_patient("loc") if (r.get("code") or {}).get("coding", [{}])[0].get("code") != MMT8[1]
    ]
    local = observation(MMT8, 100, pid="loc", id="loc-mmt")
    local["code"] = {
        "coding": [{"system": "http://hospital.example.org/fhir/CodeSystem/myositis", "code": "MMT8"}]
    }
    path = write(tmp_path / "b.json", bundle([*resources, local]))
    overlay = write(
        tmp_path / "site.toml",
        '[concepts.mmt8]\ncodes = ["http://hospital.example.org/fhir/CodeSystem/myositis|MMT8"]\n'
        'text = ["manual muscle test"]\n',
    )
    without = screen_cli(capsys, tmp_path / "a", path)
    with_overlay = screen_cli(capsys, tmp_path / "b", path, "--mappings", overlay)
    assert without.status("loc") == "potential-candidate"
    assert with_overlay.status("loc") == "candidate"


def test_no_paths_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["screen", "--as-of", "2026-06-15"]) == 2
    assert "PATH" in capsys.readouterr().err


def test_bad_as_of_date_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["screen", str(tmp_path), "--as-of", "15/06/2026"])
    assert exit_.value.code == 2
    assert "not a date" in capsys.readouterr().err


def test_result_goes_to_stdout_without_out(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path / "b.json", bundle(good_patient("good")))
    code = main(["screen", str(path), "--as-of", "2026-06-15"])
    captured = capsys.readouterr()
    assert code == 0
    result = json.loads(captured.out)
    assert not list(VALIDATOR.iter_errors(result))
    assert result["subjects"][0]["patient"] == "Patient/good"


# --- the shipped examples -----------------------------------------------------------------------------
STATUS = "candidate|potential-candidate|ineligible"


EXAMPLE_PATIENTS = 28


def _patients_md() -> tuple[str, str]:
    """patients.md: the main table, and the table of statuses with clinical notes read."""
    text = (REPO / "examples" / "patients.md").read_text(encoding="utf-8")
    main, _, notes = text.partition("## With clinical notes read")
    return main, notes


def _expected_example_statuses(column: int) -> dict[str, str]:
    """patients.md: | patient | NCT05495321 status | NCT02728752 status | ..."""
    rows = re.findall(rf"^\| (\w+) \| ({STATUS}) \| ({STATUS}) \|", _patients_md()[0], re.MULTILINE)
    return {row[0]: row[column] for row in rows}


def _expected_with_notes(column: int) -> dict[str, str]:
    """Every patient's status in a run with notes read (column 1, 2: notes on; 3, 4: decide), from both tables."""
    base = _expected_example_statuses(1 if column in (1, 3) else 2)
    rows = re.findall(
        rf"^\| (\w+) \| ({STATUS}) \| ({STATUS}) \| ({STATUS}) \| ({STATUS}) \|",
        _patients_md()[1],
        re.MULTILINE,
    )
    assert rows, "patients.md has no table of statuses with notes read"
    return base | {row[0]: row[column] for row in rows}


@pytest.mark.parametrize(("trial", "column"), [("NCT05495321", 1), ("NCT02728752", 2)])
def test_examples_screen_to_exactly_the_statuses_in_patients_md(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, trial: str, column: int
) -> None:
    expected = _expected_example_statuses(column)
    assert len(expected) == EXAMPLE_PATIENTS
    run = screen_cli(capsys, tmp_path, EXAMPLES, "--trial", trial)
    assert run.code == 0 and run.errors == []
    assert run.result is not None and run.result["study"] == trial
    got = {p.removeprefix("Patient/"): s["status"] for p, s in run.subjects.items()}
    assert got == expected
    assert {"candidate", "potential-candidate", "ineligible"} <= set(got.values())


@pytest.mark.parametrize(
    ("trial", "overlay", "column"),
    [
        ("NCT05495321", "notes-on.toml", 1),
        ("NCT02728752", "notes-on.toml", 2),
        ("NCT05495321", "notes-decide.toml", 3),
        ("NCT02728752", "notes-decide.toml", 4),
    ],
)
def test_examples_with_notes_read_change_status_only_where_patients_md_says(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, trial: str, overlay: str, column: int
) -> None:
    expected = _expected_with_notes(column)
    assert len(expected) == EXAMPLE_PATIENTS
    overlay_path = REPO / "examples" / overlay
    run = screen_cli(capsys, tmp_path, EXAMPLES, "--trial", trial, "--mappings", str(overlay_path))
    assert run.code == 0 and run.errors == []
    got = {p.removeprefix("Patient/"): s["status"] for p, s in run.subjects.items()}
    assert got == expected


def test_examples_are_current_with_make_examples(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_examples_under_test", REPO / "examples" / "make_examples.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.OUT = tmp_path / "patients"
    module.__file__ = str(tmp_path / "make_examples.py")  # patients.md is written beside __file__
    assert module.main() == 0
    shipped = sorted(p.name for p in EXAMPLES.glob("*.json"))
    fresh = sorted(p.name for p in module.OUT.glob("*.json"))
    assert fresh == shipped
    for name in shipped:
        assert (module.OUT / name).read_bytes() == (EXAMPLES / name).read_bytes(), f"{name} is stale"
    assert (tmp_path / "patients.md").read_bytes() == (REPO / "examples" / "patients.md").read_bytes()


def test_reader_reports_problems_instead_of_raising(tmp_path: Path) -> None:
    bad = write(tmp_path / "x.ndjson", '{"resourceType": "Patient", "id": "a"}\nnot json\n[1]\n')
    items = list(read_all([bad]))
    problems = [i for i in items if isinstance(i, InputProblem)]
    assert [p.line for p in problems] == [2, 3]
    assert [i.resource["id"] for i in items if isinstance(i, Item)] == ["a"]


def test_bulk_medication_file_resolves_medication_references(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from fhirdata import med_request, medication

    med = medication("pred5", "Prednisone oral tablet", strength_mg=5)
    order = med_request(
        dose=6,
        unit="{tbl}",
        pid="bulk",
        id="bulk-rx",
        medication={"medicationReference": {"reference": "Medication/pred5"}},
    )
    folder = ndjson_by_type([*for_patient(baseline(), "bulk"), med, order], tmp_path / "bulk")
    assert (folder / "Medication.000.ndjson").exists()
    run = screen_cli(capsys, tmp_path, folder)
    gc = run.criterion("bulk", "glucocorticoid-dose")
    assert gc["verdict"] == "not-met"  # 6 tablets x 5 mg from the Medication = 30 mg / 60 kg
    assert "30 mg/d" in gc["reason"]
