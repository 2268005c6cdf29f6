"""The servers hospitals run, played by the sandbox profiles: the strategies chosen from each
CapabilityStatement give the file verdicts everywhere, `check` names the strategies the runs use, and
sync works without a history feed (changes by `_lastUpdated`, deletions at the full reconciliation)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sqlite3
import textwrap
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from fhir_adapter.cli import main
from fhir_adapter.client.http import FhirClient
from fhir_adapter.sync.changes import server_now
from fhir_adapter.sync.state import State

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "patients"
AS_OF = "2026-06-15"
STEMS = ("dm01", "dm02", "dm07", "dm08", "dm11", "dm13", "pd20", "pm05")
Res = dict[str, Any]


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(argv))
    return code, out.getvalue()


def verdicts(path: Path) -> dict[str, Any]:
    out = {}
    for s in json.loads(path.read_text(encoding="utf-8"))["subjects"]:
        out[s["patient"]] = (s["status"], [(c["id"], c["verdict"], c["reason"]) for c in s["criteria"]])
    return out


@pytest.fixture(scope="module")
def loaded(sandbox_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path, str]:
    """Copies of some example patients under fresh ids, and a Group of them; the server clock before."""
    with FhirClient(sandbox_url, max_retries=2) as client:
        before = server_now(client).isoformat()
    prefix = f"p{uuid.uuid4().hex[:8]}"
    data = tmp_path_factory.mktemp("profiles")
    ids = []
    for stem in STEMS:
        text = re.sub(
            rf"\b{stem}\b", f"{prefix}-{stem}", (EXAMPLES / f"{stem}.json").read_text(encoding="utf-8")
        )
        (data / f"{stem}.json").write_text(text, encoding="utf-8")
        ids.append(f"{prefix}-{stem}")
    code, err = cli("load", "--server", sandbox_url, str(data))
    assert code == 0, err
    group = {
        "resourceType": "Group",
        "id": prefix,
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{pid}"}} for pid in ids],
    }
    response = requests.put(f"{sandbox_url}/Group/{prefix}", json=group, timeout=30)
    assert response.status_code in (200, 201), response.text
    return ids, data, before


@pytest.fixture(scope="module")
def by_files(loaded: tuple[list[str], Path, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("files") / "result.json"
    code, err = cli("screen", str(loaded[1]), "--as-of", AS_OF, "--out", str(out))
    assert code == 0, err
    return verdicts(out)


PROFILES = {
    "full": ("sandbox_url", "everything"),
    "bulk-only": ("bulk_only_url", "typed"),
    "search-only": ("search_only_url", "typed"),
    "throttled": ("throttled_url", "everything"),
}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_gives_the_file_verdicts_with_the_strategy_its_capabilities_choose(
    profile: str,
    request: pytest.FixtureRequest,
    loaded: tuple[list[str], Path, str],
    by_files: dict[str, Any],
    tmp_path: Path,
) -> None:
    fixture, records = PROFILES[profile]
    url = request.getfixturevalue(fixture)
    ids, _, _ = loaded
    out = tmp_path / "server.json"
    given = [arg for pid in ids for arg in ("--patient", pid)]

    code, text = cli("screen", "--server", url, *given, "--as-of", AS_OF, "--out", str(out))

    assert code == 0, text
    assert verdicts(out) == by_files
    assert f"Strategies: candidates: given, records: {records}" in text
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        code = main(["check", "--server", url, "--json"])
    assert code in (0, 3), stdout.getvalue()
    assert json.loads(stdout.getvalue())["strategies"]["screen"]["records"] == records


def test_the_candidate_search_pages_through_a_capped_server(
    bulk_only_url: str, loaded: tuple[list[str], Path, str], by_files: dict[str, Any], tmp_path: Path
) -> None:
    # bulk-only caps pages at 100 entries: the candidate search must follow every next link.
    out = tmp_path / "all.json"
    code, text = cli("screen", "--server", bulk_only_url, "--as-of", AS_OF, "--out", str(out))
    assert code in (0, 3), text
    found = verdicts(out)
    ours = {p: v for p, v in by_files.items() if len(v[1]) > 1}
    assert {p: found[p] for p in ours} == ours


def subjects(path: Path) -> list[Any]:
    return list(json.loads(path.read_text(encoding="utf-8"))["subjects"])


def test_four_fetches_at_a_time_give_the_result_file_of_one_at_a_time(
    sandbox_url: str, loaded: tuple[list[str], Path, str], tmp_path: Path
) -> None:
    ids, _, _ = loaded
    given = [arg for pid in ids for arg in ("--patient", pid)]
    runs = {}
    for concurrency in ("1", "4"):
        out = tmp_path / f"c{concurrency}.json"
        code, text = cli(
            "screen", "--server", sandbox_url, *given, "--as-of", AS_OF, "--out", str(out),
            "--concurrency", concurrency,
        )  # fmt: skip
        assert code == 0, text
        runs[concurrency] = (out.read_bytes(), text)
    # Byte for byte, but for the time the file was written: the pool hands records over in request order.
    one, four = (re.sub(rb'"generated":"[^"]*"', b"", runs[c][0]) for c in ("1", "4"))
    assert four == one
    assert [s["patient"] for s in subjects(tmp_path / "c4.json")] == [f"Patient/{p}" for p in sorted(ids)]
    assert "; 4 at a time" in runs["4"][1]


def _requests(text: str) -> tuple[int, int]:
    found = re.search(r"Requests sent: (\d+) in all \((\d+) resent\)", text)
    assert found, text
    return int(found[1]), int(found[2])


def test_a_throttled_server_is_screened_whole_and_max_rps_below_its_limit_avoids_every_429(
    throttled_url: str,
    throttle_rps: float,
    loaded: tuple[list[str], Path, str],
    by_files: dict[str, Any],
    tmp_path: Path,
) -> None:
    ids, _, _ = loaded
    given = [arg for pid in ids for arg in ("--patient", pid)]
    # Unpaced, four threads run into the limit: the 429s are retried and every patient is screened.
    out = tmp_path / "burst.json"
    code, text = cli(
        "screen", "--server", throttled_url, *given, "--as-of", AS_OF, "--out", str(out), "--concurrency", "4"
    )  # fmt: skip
    assert code == 0, text
    assert verdicts(out) == by_files
    sent, resent = _requests(text)
    assert resent <= sent // 2, text  # the shared pause keeps the retries a fraction of the work
    # Paced below the limit, the server never has to say no (once the burst has left its window).
    time.sleep(1.5)
    out = tmp_path / "paced.json"
    pace = f"{max(1.0, throttle_rps * 0.8):g}"
    code, text = cli(
        "screen", "--server", throttled_url, *given, "--as-of", AS_OF, "--out", str(out),
        "--concurrency", "4", "--max-rps", pace,
    )  # fmt: skip
    assert code == 0, text
    assert verdicts(out) == by_files
    assert _requests(text)[1] == 0, text
    assert "paused" not in text, text


# -- sync without a history feed (search-only: changes by _lastUpdated) ---------------------------------
@pytest.fixture
def site(search_only_url: str, loaded: tuple[list[str], Path, str], tmp_path: Path) -> Path:
    ids, _, before = loaded
    config = tmp_path / "site.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [server]
            url = "{search_only_url}"
            group = "{ids[0].split("-")[0]}"

            [study]
            as_of = "{AS_OF}"

            [state]
            path = "state/state.sqlite"
            """
        ),
        encoding="utf-8",
    )
    state = State(tmp_path / "state" / "state.sqlite")
    state.put("watermark", before)  # the last run ended just before the patients were loaded
    state.close()
    return config


def manifest(config: Path) -> dict[str, Any]:
    runs = sorted((config.parent / "state" / "runs").glob("run-*.json"))
    return dict(json.loads(runs[-1].read_text()))


def first_group(config: Path) -> str:
    return str(tomllib.loads(config.read_text(encoding="utf-8"))["server"]["group"])


def mark_screened(config: Path) -> None:
    """Set every stored result's screening time to a mark: a re-screen shows even within the same second."""
    with contextlib.closing(sqlite3.connect(config.parent / "state" / "state.sqlite")) as db, db:
        db.execute("UPDATE result SET screened_at = 'mark'")


def rescreened(config: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(config.parent / "state" / "state.sqlite")) as db:
        return {p for p, at in db.execute("SELECT patient, screened_at FROM result") if at != "mark"}


def test_sync_without_history_finds_changes_by_last_updated_and_deletions_at_the_full_run(
    site: Path, search_only_url: str, sandbox_url: str, loaded: tuple[list[str], Path, str]
) -> None:
    ids, _, _ = loaded
    code, text = cli("sync", "--config", str(site))
    assert code == 0, text
    first = manifest(site)
    assert first["strategies"] == {"candidates": "group", "records": "typed", "changes": "last-updated"}
    dm = [pid for pid in ids if not pid.endswith("pm05")]
    assert first["counts"]["evaluated"] == len(dm)

    code, text = cli("sync", "--config", str(site))
    assert code == 0 and manifest(site)["counts"]["evaluated"] == 0, text  # nothing changed

    dm08 = next(p for p in ids if p.endswith("dm08"))
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]},
        "subject": {"reference": f"Patient/{dm08}"},
        "effectiveDateTime": "2026-06-14",
        "valueQuantity": {
            "value": 41,
            "unit": "10*9/L",
            "system": "http://unitsofmeasure.org",
            "code": "10*9/L",
        },
    }
    created = requests.post(f"{sandbox_url}/Observation", json=observation, timeout=30)
    assert created.status_code == 201, created.text
    mark_screened(site)
    code, text = cli("sync", "--config", str(site))
    changed = manifest(site)["counts"]
    assert code == 0 and (changed["queued"], changed["evaluated"]) == (1, 1), text
    assert rescreened(site) == {dm08}  # exactly that patient

    # A deletion is invisible to _lastUpdated searches; the full reconciliation catches it.
    gone = requests.delete(
        f"{sandbox_url}/Observation/{created.json()['id']}", params={"_cascade": "delete"}, timeout=30
    )
    assert gone.status_code in (200, 204), gone.text
    code, text = cli("sync", "--config", str(site))
    assert code == 0 and manifest(site)["counts"]["evaluated"] == 0, text
    code, text = cli("sync", "--config", str(site), "--full")
    full = manifest(site)["counts"]
    assert code == 0 and full["evaluated"] == len(dm) and full["written"] >= 1, text

    # `check` (with the same Group) names the strategies the sync used.
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        code = main(["check", "--server", search_only_url, "--group", first_group(site), "--json"])
    assert code in (0, 3), stdout.getvalue()
    assert json.loads(stdout.getvalue())["strategies"]["sync"] == first["strategies"]
