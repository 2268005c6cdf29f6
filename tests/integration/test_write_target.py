"""Write-back to a second HAPI (the research server) while reading from the first (issue 10, deliverable 5).

Reads from the main sandbox (``FHIR_SANDBOX_URL``), writes ResearchStudy, ResearchSubjects, Provenance and
the Device to the research sandbox (``FHIR_RESEARCH_SANDBOX_URL``; ``sandbox.sh start-all`` starts both).
Both servers are shared by the whole test session, so this module loads copies of the example patients
under ids (and MRNs) unique to the run and asserts about those only; "nothing written to the read server"
is the read server's count of resource versions, unchanged across a run.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from fhir_adapter.cli import main
from fhir_adapter.client.http import FhirClient
from fhir_adapter.sync.changes import server_now
from fhir_adapter.sync.state import State
from fhir_adapter.writeback.references import subject_token
from fhir_adapter.writeback.subjects import PROVENANCE_TAG_SYSTEM, SUBJECT_ID_SYSTEM

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "patients"
AS_OF = "2026-06-15"
STUDY = "NCT05495321"
MRN = "http://hospital.example.org/mrn"
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
Res = dict[str, Any]


# -- helpers -----------------------------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, err.getvalue()


def history_total(url: str) -> int:
    """Resource versions on the server: every create and update adds one."""
    return int(requests.get(f"{url}/_history", params={"_summary": "count"}, timeout=30).json()["total"])


def load_copies(url: str, root: Path, prefix: str) -> list[str]:
    """Copies of the DM example patients as ``<prefix>-dm01``... (their MRNs too); returns the ids."""
    root.mkdir(parents=True)
    ids = []
    for path in sorted(EXAMPLES.glob("dm*.json")):
        text = re.sub(rf"\b{path.stem}\b", f"{prefix}-{path.stem}", path.read_text(encoding="utf-8"))
        (root / path.name).write_text(text, encoding="utf-8")
        ids.append(f"{prefix}-{path.stem}")
    code, err = cli("load", "--server", url, str(root))
    # dm14-obs5 has a deliberately bad status ("entered-in-error "), which HAPI rejects: exit 3.
    assert code in (0, 3), err
    return ids


def search(url: str, rtype: str, params: dict[str, str]) -> list[Res]:
    with FhirClient(url, max_retries=2) as fhir:
        return [r for r in fhir.search(rtype, params) if r["resourceType"] == rtype]


def subjects(url: str, key: str) -> list[Res]:
    return search(url, "ResearchSubject", {"identifier": subject_token(SUBJECT_ID_SYSTEM, f"{STUDY}:{key}")})


def the_subject(url: str, key: str) -> Res:
    found = subjects(url, key)
    assert len(found) == 1, f"{len(found)} ResearchSubjects keyed {key}"
    return found[0]


def provenances(url: str, subject: Res) -> list[Res]:
    target = f"ResearchSubject/{subject['id']}/_history/{subject['meta']['versionId']}"
    return search(url, "Provenance", {"_tag": f"{PROVENANCE_TAG_SYSTEM}|{target}"})


def staff_put(url: str, resource: Res) -> str:
    """PUT as a coordinator's tool would: no adapter meta. Returns the new versionId."""
    body = {k: v for k, v in resource.items() if k != "meta"}
    response = requests.put(
        f"{url}/ResearchSubject/{resource['id']}", json=body, headers=FHIR_JSON, timeout=30
    )
    assert response.status_code == 200, response.text
    return str(response.json()["meta"]["versionId"])


def counts(err: str) -> dict[str, int]:
    line = next(line for line in err.splitlines() if line.startswith(f"Write-back {STUDY}:"))
    return {k: int(n) for k, n in re.findall(r"(created|updated|unchanged|staff-managed|failed) (\d+)", line)}


@dataclass
class Run:
    """A screen of this module's copies, read from the main sandbox, written to the research one."""

    read: str
    write: str
    ids: list[str]
    work: Path

    def screen(self, *extra: str) -> tuple[int, str, Res]:
        out = self.work / f"r-{uuid.uuid4().hex[:6]}.json"
        argv = ["screen", "--server", self.read, "--as-of", AS_OF, "--out", str(out), "--write-back"]
        argv += ["--write-server", self.write, *extra]
        for pid in self.ids:
            argv += ["--patient", pid]
        code, err = cli(*argv)
        return code, err, json.loads(out.read_text()) if out.exists() else {}

    def candidates(self, result: Res) -> list[str]:
        """The copies the screen found a DM diagnosis for (they get a ResearchSubject)."""
        return sorted(
            s["patient"].removeprefix("Patient/") for s in result["subjects"] if len(s["criteria"]) > 1
        )


@pytest.fixture(scope="module")
def absolute(
    sandbox_url: str, research_url: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Run, Res, str]:
    """First run, absolute references (the default): the result and what it printed."""
    work = tmp_path_factory.mktemp("write-target")
    run = Run(
        sandbox_url, research_url, load_copies(sandbox_url, work / "data", f"w{uuid.uuid4().hex[:8]}"), work
    )
    before = history_total(sandbox_url)
    code, err, result = run.screen()
    assert code == 0, err
    assert history_total(sandbox_url) == before, "the run wrote to the read server"
    return run, result, err


# -- screen --write-back --write-server ----------------------------------------------------------------


def test_subjects_and_provenance_are_written_to_the_research_server_only(
    absolute: tuple[Run, Res, str],
) -> None:
    run, result, err = absolute
    candidates = run.candidates(result)
    assert len(candidates) >= 10, candidates
    assert counts(err)["created"] == len(candidates) and f"Write target: FHIR R4 server {run.write}/" in err
    for pid in candidates:
        patient_url = f"{run.read}/Patient/{pid}"
        subject = the_subject(run.write, patient_url)
        assert subject["individual"] == {"reference": patient_url}
        assert subject["study"]["reference"].startswith("ResearchStudy/")
        (provenance,) = provenances(run.write, subject)
        # Kept versioned by the research sandbox; the evidence cited on the read server, versioned.
        assert provenance["target"] == [{"reference": f"ResearchSubject/{subject['id']}/_history/1"}]
        cited = [e["what"]["reference"] for e in provenance["entity"]]
        assert f"{patient_url}/_history/1" in cited
        assert all(c.startswith(f"{run.read}/") and "/_history/" in c for c in cited), cited
        assert provenance["agent"][0]["who"]["reference"].startswith("Device/")
        # Nothing about this patient on the read server, under either key.
        assert subjects(run.read, patient_url) == [] and subjects(run.read, pid) == []
    (study,) = search(run.write, "ResearchStudy", {"identifier": f"https://clinicaltrials.gov/nctid|{STUDY}"})
    assert all(
        the_subject(run.write, f"{run.read}/Patient/{p}")["study"]["reference"]
        == f"ResearchStudy/{study['id']}"
        for p in candidates
    )


def test_a_second_run_changes_nothing_on_either_server(absolute: tuple[Run, Res, str]) -> None:
    run, result, _ = absolute
    before = (history_total(run.read), history_total(run.write))

    code, err, _ = run.screen()

    assert code == 0, err
    assert (history_total(run.read), history_total(run.write)) == before
    c = counts(err)
    assert (c["created"], c["updated"], c["failed"]) == (0, 0, 0)
    assert c["unchanged"] + c["staff-managed"] == len(run.candidates(result))


def test_a_status_a_coordinator_set_on_the_research_server_is_never_overwritten(
    absolute: tuple[Run, Res, str],
) -> None:
    run, result, _ = absolute
    first, second = (f"{run.read}/Patient/{p}" for p in run.candidates(result)[:2])
    on_study = staff_put(run.write, {**the_subject(run.write, first), "status": "on-study"})
    # A coordinator's "ineligible" is a state the adapter also sets, but their version, not ours.
    by_hand = staff_put(run.write, {**the_subject(run.write, second), "status": "ineligible"})
    before = history_total(run.write)

    code, err, _ = run.screen()

    assert code == 0, err
    assert history_total(run.write) == before
    assert (the_subject(run.write, first)["status"], the_subject(run.write, first)["meta"]["versionId"]) == (
        "on-study",
        on_study,
    )
    assert (
        the_subject(run.write, second)["status"],
        the_subject(run.write, second)["meta"]["versionId"],
    ) == ("ineligible", by_hand)
    assert counts(err)["staff-managed"] >= 2


def test_identifier_references_refer_by_mrn_and_a_second_run_changes_nothing(
    sandbox_url: str, research_url: str, tmp_path: Path
) -> None:
    prefix = f"i{uuid.uuid4().hex[:8]}"
    run = Run(sandbox_url, research_url, load_copies(sandbox_url, tmp_path / "data", prefix), tmp_path)
    options = ("--write-patient-ref", "identifier", "--write-patient-identifier-system", MRN)
    before = history_total(sandbox_url)

    code, err, result = run.screen(*options)

    assert code == 0, err
    assert history_total(sandbox_url) == before
    candidates = run.candidates(result)
    for pid in candidates:
        subject = the_subject(research_url, f"{MRN}|MRN-{pid}")
        assert subject["individual"] == {
            "type": "Patient",
            "identifier": {"system": MRN, "value": f"MRN-{pid}"},
        }
        (provenance,) = provenances(research_url, subject)
        assert f"{sandbox_url}/Patient/{pid}/_history/1" in [
            e["what"]["reference"] for e in provenance["entity"]
        ]
    versions = history_total(research_url)

    code, err, _ = run.screen(*options)

    assert code == 0, err
    assert history_total(research_url) == versions
    assert counts(err)["unchanged"] == len(candidates)


def test_check_probes_the_research_server_as_the_write_target(sandbox_url: str, research_url: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["check", "--server", sandbox_url, "--write-server", research_url, "--json"])
    report = json.loads(out.getvalue())
    assert code == 0, report
    assert report["writeServer"] == research_url
    target = {f["what"]: f["status"] for f in report["findings"] if f["area"] == "write target"}
    assert target["reach the write server"] == "ok"
    assert target["ResearchSubject?identifier="] == "supported" and target["Provenance?_tag="] == "supported"
    assert target["ResearchSubject create/update"] == "supported"
    assert not [f for f in report["findings"] if f["area"] == "write"]  # the read server is not written


# -- sync with [writeback] ---------------------------------------------------------------------------


def test_sync_with_a_writeback_table_writes_to_the_research_server_and_keeps_staff_decisions(
    sandbox_url: str, research_url: str, tmp_path: Path
) -> None:
    # The state starts where a previous run left it: the watermark is the read server's clock now, so
    # this run's changes are exactly the copies loaded next.
    with FhirClient(sandbox_url, max_retries=2) as client:
        now = server_now(client).isoformat()
    state = State(tmp_path / "state" / "state.sqlite")
    try:
        state.put("watermark", now)
    finally:
        state.close()
    prefix = f"y{uuid.uuid4().hex[:8]}"
    ids = load_copies(sandbox_url, tmp_path / "data", prefix)
    # The candidates are this Group's members: a full run reconciles this test's patients, not every
    # DM patient other tests left on the shared sandbox.
    group = {
        "resourceType": "Group",
        "id": f"{prefix}-cohort",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{pid}"}} for pid in ids],
    }
    response = requests.put(f"{sandbox_url}/Group/{group['id']}", json=group, headers=FHIR_JSON, timeout=30)
    assert response.status_code in (200, 201), response.text
    config = tmp_path / "site.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [server]
            url = "{sandbox_url}"
            group = "{group["id"]}"

            [writeback]
            url = "{research_url}"
            timeout_seconds = 30

            [study]
            id = "{STUDY}"
            as_of = "{AS_OF}"

            [state]
            path = "state/state.sqlite"
            manifests = "runs"
            """
        ),
        encoding="utf-8",
    )

    def sync(*extra: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = main(["sync", "--config", str(config), *extra])
        return code, out.getvalue()

    before = history_total(sandbox_url)
    code, out = sync()
    assert code == 0, out
    assert history_total(sandbox_url) == before
    written = {pid: subjects(research_url, f"{sandbox_url}/Patient/{pid}") for pid in ids}
    candidates = sorted(pid for pid, found in written.items() if found)
    assert len(candidates) >= 10 and all(len(found) == 1 for found in written.values() if found)
    assert f"written {len(candidates)}," in out
    manifest = json.loads(max((tmp_path / "runs").glob("run-*.json")).read_text())
    assert (manifest["server"], manifest["writeServer"]) == (sandbox_url, research_url)

    staff = the_subject(research_url, f"{sandbox_url}/Patient/{candidates[0]}")
    staff_version = staff_put(research_url, {**staff, "status": "screening"})
    versions = history_total(research_url)

    code, out = sync("--full")  # every candidate re-screened and reconciled

    assert code == 0, out
    assert history_total(research_url) == versions
    kept = the_subject(research_url, f"{sandbox_url}/Patient/{candidates[0]}")
    assert (kept["status"], kept["meta"]["versionId"]) == ("screening", staff_version)
    assert "written 0," in out
