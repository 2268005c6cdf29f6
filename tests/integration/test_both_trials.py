"""Both shipped trials on the HAPI sandbox: files, the server screen and sync give the same results, and
write-back keeps one ResearchSubject per (study, candidate)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter.cli import main
from fhir_adapter.client.http import FhirClient
from fhir_adapter.sync.changes import server_now
from fhir_adapter.sync.state import State
from fhir_adapter.writeback.resources import SUBJECT_ID_SYSTEM

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "patients"
AS_OF = "2026-06-15"
TRIALS = ("NCT05495321", "NCT02728752")
Res = dict[str, Any]


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(argv))
    return code, out.getvalue()


def trial_args() -> list[str]:
    return [arg for t in TRIALS for arg in ("--trial", t)]


def results(folder: Path) -> dict[str, dict[str, Res]]:
    """Per study, per patient: the subject's result without the per-request count."""
    out: dict[str, dict[str, Res]] = {}
    for study in TRIALS:
        doc = json.loads((folder / f"{study}.json").read_text(encoding="utf-8"))
        out[study] = {s["patient"]: {k: v for k, v in s.items() if k != "requests"} for s in doc["subjects"]}
    return out


@pytest.fixture(scope="module")
def loaded(sandbox_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, list[str], str]:
    """Copies of every example patient under fresh ids; the server clock just before they were loaded."""
    with FhirClient(sandbox_url, max_retries=2) as client:
        before = server_now(client).isoformat()
    prefix = f"b{uuid.uuid4().hex[:8]}"
    data = tmp_path_factory.mktemp("both-trials")
    ids = []
    for path in sorted(EXAMPLES.glob("*.json")):
        text = re.sub(rf"\b{path.stem}\b", f"{prefix}-{path.stem}", path.read_text(encoding="utf-8"))
        (data / path.name).write_text(text, encoding="utf-8")
        ids.append(f"{prefix}-{path.stem}")
    code, err = cli("load", "--server", sandbox_url, str(data))
    assert code in (0, 3), err  # dm14's deliberately bad status is refused by HAPI (exit 3)
    return sandbox_url, data, ids, before


@pytest.fixture(scope="module")
def by_files(
    loaded: tuple[str, Path, list[str], str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Res]]:
    _, data, _, _ = loaded
    out = tmp_path_factory.mktemp("files-out")
    code, err = cli("screen", str(data), *trial_args(), "--as-of", AS_OF, "--out-dir", str(out))
    assert code == 0, err
    return results(out)


def without_refused(files: dict[str, dict[str, Res]], ids: list[str]) -> dict[str, dict[str, Res]]:
    """dm14's entered-in-error result never reached the server; it is ignored by the screen either way, so
    nothing differs, but keep the comparison honest about which patients exist on both sides."""
    wanted = {f"Patient/{pid}" for pid in ids}
    return {study: {p: s for p, s in subjects.items() if p in wanted} for study, subjects in files.items()}


def test_the_server_screen_gives_the_file_results_for_both_trials(
    loaded: tuple[str, Path, list[str], str], by_files: dict[str, dict[str, Res]], tmp_path: Path
) -> None:
    url, _, ids, _ = loaded
    patients = [arg for pid in ids for arg in ("--patient", pid)]

    code, err = cli(
        "screen", "--server", url, *trial_args(), *patients, "--as-of", AS_OF, "--out-dir", str(tmp_path)
    )

    assert code == 0, err
    by_server = results(tmp_path)
    assert by_server == without_refused(by_files, ids)
    assert len(by_server["NCT02728752"]) == len(ids) == 28


def test_sync_keeps_the_file_results_of_every_candidate_for_both_trials(
    loaded: tuple[str, Path, list[str], str], by_files: dict[str, dict[str, Res]], tmp_path: Path
) -> None:
    url, _, ids, before = loaded
    config = tmp_path / "site.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [server]
            url = "{url}"

            [study]
            id = {json.dumps(list(TRIALS))}
            as_of = "{AS_OF}"

            [state]
            path = "state/state.sqlite"

            [report]
            dir = "latest"
            """
        ),
        encoding="utf-8",
    )
    state = State(tmp_path / "state" / "state.sqlite")
    state.put("watermark", before)  # a previous run ended just before the examples were loaded
    state.close()

    code, out = cli("sync", "--config", str(config))

    assert code == 0, out
    latest = results(tmp_path / "latest")
    files = without_refused(by_files, ids)
    for study in TRIALS:
        candidates = {p: s for p, s in files[study].items() if len(s["criteria"]) > 1}
        assert candidates, study
        assert {p: latest[study][p] for p in candidates} == candidates
        assert (tmp_path / "latest" / f"{study}.html").is_file()
    # One ResearchSubject per (study, candidate), none for a patient no trial admits.
    with FhirClient(url, max_retries=2) as client:
        for study in TRIALS:
            pid = next(p for p in ids if p.endswith("dm01"))
            token = f"{SUBJECT_ID_SYSTEM}|{study}:{pid}"
            assert len([r for r in client.search("ResearchSubject", {"identifier": token})]) == 1
            pm05 = next(p for p in ids if p.endswith("pm05"))
            token = f"{SUBJECT_ID_SYSTEM}|{study}:{pm05}"
            assert list(client.search("ResearchSubject", {"identifier": token})) == []
