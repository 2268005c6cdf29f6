"""Notes on the HAPI sandbox: the examples' DocumentReferences and DiagnosticReports load, the server screen
with notes read gives the file results (suggestions and, where opted in, verdicts), an attachment URL to a
Binary on the same server is fetched and read, and a write-back says when notes decided."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter.cli import main
from fhir_adapter.client.http import FhirClient
from fhir_adapter.writeback.resources import SUBJECT_ID_SYSTEM, XVER_PROGRESS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "patients"
NOTES_ON = REPO / "examples" / "notes-on.toml"
NOTES_DECIDE = REPO / "examples" / "notes-decide.toml"
AS_OF = "2026-06-15"
TRIALS = ("NCT05495321", "NCT02728752")
Res = dict[str, Any]


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(argv))
    return code, out.getvalue()


def results(folder: Path) -> dict[str, dict[str, Res]]:
    out: dict[str, dict[str, Res]] = {}
    for study in TRIALS:
        doc = json.loads((folder / f"{study}.json").read_text(encoding="utf-8"))
        out[study] = {s["patient"]: {k: v for k, v in s.items() if k != "requests"} for s in doc["subjects"]}
    return out


@pytest.fixture(scope="module")
def loaded(sandbox_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, list[str]]:
    prefix = f"n{uuid.uuid4().hex[:8]}"
    data = tmp_path_factory.mktemp("notes")
    ids = []
    for path in sorted(EXAMPLES.glob("*.json")):
        text = re.sub(rf"\b{path.stem}\b", f"{prefix}-{path.stem}", path.read_text(encoding="utf-8"))
        (data / path.name).write_text(text, encoding="utf-8")
        ids.append(f"{prefix}-{path.stem}")
    code, out = cli("load", "--server", sandbox_url, str(data))
    assert code in (0, 3), out
    # Only dm14's deliberately bad status is refused: the notes, reports and contained results all load.
    problems = [line for line in out.splitlines() if "HTTP 4" in line]
    assert problems and all("dm14-obs5" in line for line in problems), out
    assert "DiagnosticReport 1," in out and "DocumentReference 2," in out
    return sandbox_url, data, ids


@pytest.mark.parametrize("overlay", [NOTES_ON, NOTES_DECIDE], ids=["notes-on", "notes-decide"])
def test_the_server_screen_with_notes_gives_the_file_results(
    loaded: tuple[str, Path, list[str]], tmp_path: Path, overlay: Path
) -> None:
    url, data, ids = loaded
    trials = [arg for t in TRIALS for arg in ("--trial", t)]
    common = [*trials, "--mappings", str(overlay), "--as-of", AS_OF]
    code, err = cli("screen", str(data), *common, "--out-dir", str(tmp_path / "files"))
    assert code == 0, err
    patients = [arg for pid in ids for arg in ("--patient", pid)]
    code, err = cli("screen", "--server", url, *patients, *common, "--out-dir", str(tmp_path / "server"))
    assert code == 0, err
    files, server = results(tmp_path / "files"), results(tmp_path / "server")
    wanted = {f"Patient/{pid}" for pid in ids}
    assert server == {s: {p: r for p, r in subjects.items() if p in wanted} for s, subjects in files.items()}
    prefix = ids[0].rsplit("-", 1)[0]
    dm24 = server["NCT05495321"][f"Patient/{prefix}-dm24"]
    active = next(c for c in dm24["criteria"] if c["id"] == "active-disease")
    mmt8 = next(c for c in active["components"] if c["id"] == "mmt8")
    if overlay == NOTES_ON:
        assert dm24["status"] == "potential-candidate" and mmt8["suggestions"][0]["match"] == "MMT-8: 118/150"
    else:
        assert dm24["status"] == "candidate" and "from note" in mmt8["evidence"][0]["detail"]


def test_a_bulk_export_with_notes_gives_the_file_results(
    loaded: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    # _type asks for DocumentReference and DiagnosticReport too; inline attachments are read as in files.
    url, data, ids = loaded
    group = f"{ids[0].rsplit('-', 1)[0]}-group"
    with FhirClient(url, max_retries=2) as client:
        client.update(
            {
                "resourceType": "Group",
                "id": group,
                "type": "person",
                "actual": True,
                "member": [{"entity": {"reference": f"Patient/{pid}"}} for pid in ids],
            }
        )
    overlay = ["--mappings", str(NOTES_DECIDE), "--as-of", AS_OF]
    code, err = cli("screen", str(data), *overlay, "--out", str(tmp_path / "files.json"))
    assert code == 0, err
    code, err = cli(
        "screen", "--server", url, "--bulk", "--single-pass", "--group", group, *overlay,
        "--out", str(tmp_path / "bulk.json"), "--poll-max-wait", "1",
    )  # fmt: skip
    assert code == 0, err

    def subjects(name: str) -> dict[str, Res]:
        doc = json.loads((tmp_path / name).read_text(encoding="utf-8"))
        return {s["patient"]: {k: v for k, v in s.items() if k != "requests"} for s in doc["subjects"]}

    files, bulk = subjects("files.json"), subjects("bulk.json")
    assert bulk == {p: s for p, s in files.items() if p in bulk} and len(bulk) == len(ids)
    assert "from note" in json.dumps(bulk)


def _note_patient(client: FhirClient, pid: str, url: str) -> None:
    """A DM patient whose MMT-8 and two core set measures are only in a note held as a Binary."""
    text = "Myositis clinic. MMT-8: 110/150, PGA 5/10, HAQ-DI 1.0."
    bid = f"{pid}-bin"
    client.update(
        {
            "resourceType": "Binary",
            "id": bid,
            "contentType": "text/plain",
            "data": base64.b64encode(text.encode()).decode(),
        }
    )
    client.update({"resourceType": "Patient", "id": pid, "birthDate": "1980-03-02", "gender": "female"})
    client.update(
        {
            "resourceType": "Condition",
            "id": f"{pid}-dm",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "396230008"}]},
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                ]
            },
            "subject": {"reference": f"Patient/{pid}"},
        }
    )
    for n, link in enumerate(
        (f"Binary/{bid}", f"{url}/Binary/{bid}", f"http://elsewhere.invalid/fhir/Binary/{bid}")
    ):
        client.update(
            {
                "resourceType": "DocumentReference",
                "id": f"{pid}-note{n}",
                "status": "current",
                "subject": {"reference": f"Patient/{pid}"},
                "date": "2026-06-03T10:00:00Z" if n == 2 else "2026-06-02T10:00:00Z",
                "content": [{"attachment": {"contentType": "text/plain", "url": link}}],
            }
        )


def test_an_attachment_url_on_the_same_server_is_fetched_and_a_write_back_says_notes_decided(
    sandbox_url: str, tmp_path: Path
) -> None:
    pid = f"u{uuid.uuid4().hex[:8]}"
    with FhirClient(sandbox_url, max_retries=2) as client:
        _note_patient(client, pid, sandbox_url)
    out = tmp_path / "on.json"
    code, err = cli(
        "screen",
        "--server",
        sandbox_url,
        "--patient",
        pid,
        "--mappings",
        str(NOTES_ON),
        "--as-of",
        AS_OF,
        "--out",
        str(out),
    )
    assert code == 0, err
    (subject,) = json.loads(out.read_text())["subjects"]
    active = next(c for c in subject["criteria"] if c["id"] == "active-disease")
    mmt8 = next(c for c in active["components"] if c["id"] == "mmt8")
    # Notes 0 (relative) and 1 (absolute, same server) were fetched; note 2, newer, names another host and
    # was not (else it would be the only suggestion).
    assert sorted(s["reference"] for s in mmt8["suggestions"]) == [
        f"DocumentReference/{pid}-note0",
        f"DocumentReference/{pid}-note1",
    ]
    assert subject["requests"] >= 3

    out = tmp_path / "decide.json"
    code, err = cli(
        "screen", "--server", sandbox_url, "--patient", pid, "--mappings", str(NOTES_DECIDE), "--as-of", AS_OF,
        "--out", str(out), "--write-back",
    )  # fmt: skip
    assert code == 0, err
    (subject,) = json.loads(out.read_text())["subjects"]
    active = next(c for c in subject["criteria"] if c["id"] == "active-disease")
    assert active["verdict"] == "met"
    with FhirClient(sandbox_url, max_retries=2) as client:
        token = f"{SUBJECT_ID_SYSTEM}|NCT05495321:{pid}"
        (rs,) = list(client.search("ResearchSubject", {"identifier": token}))
    progress = next(e for e in rs["extension"] if e["url"] == XVER_PROGRESS)
    reason = next(e for e in progress["extension"] if e["url"] == "reason")["valueCodeableConcept"]["text"]
    assert "decided from notes: active-disease" in reason
