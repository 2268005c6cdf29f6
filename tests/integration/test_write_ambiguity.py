"""Issue 8, class 3 against a real HAPI: writes whose outcome is unknown never duplicate and never lose a
Provenance.

A fault-injecting proxy (``tests/faultserver.py`` with ``upstream``) sits in front of the sandbox: it lets
a write reach HAPI and then answers 500, stays silent, or resets the connection. What HAPI holds
afterwards is read directly: one ResearchSubject per patient, one Provenance per version, found by the
tag the adapter keys Provenances with (HAPI strips versions from stored references, so ``target`` alone
could not tell versions apart; this is also checked here).
"""

from __future__ import annotations

import contextlib
import io
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from faultserver import FaultServer, Reply, Reset, Silence, Stored

from fhir_adapter.cli import main
from fhir_adapter.writeback.resources import PROVENANCE_TAG_SYSTEM, SUBJECT_ID_SYSTEM

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "patients"
STUDY = "NCT05495321"
STEMS = ("dm01", "dm02")


def cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


@pytest.fixture
def patients(sandbox_url: str, tmp_path: Path) -> list[str]:
    """Fresh copies of two example candidates under ids unique to this test."""
    prefix = f"w{uuid.uuid4().hex[:8]}"
    data = tmp_path / "data"
    data.mkdir()
    for stem in STEMS:
        text = (EXAMPLES / f"{stem}.json").read_text(encoding="utf-8")
        (data / f"{stem}.json").write_text(re.sub(rf"\b{stem}\b", f"{prefix}-{stem}", text), encoding="utf-8")
    code, err = cli("load", "--server", sandbox_url, str(data))
    assert code == 0, err
    return [f"{prefix}-{stem}" for stem in STEMS]


@pytest.fixture
def proxy(sandbox_url: str) -> Iterator[FaultServer]:
    with FaultServer(upstream=sandbox_url) as server:
        yield server


def screen(proxy: FaultServer, patients: list[str], tmp_path: Path, *extra: str) -> tuple[int, str]:
    given = [arg for pid in patients for arg in ("--patient", pid)]
    out = str(tmp_path / "result.json")
    return cli(
        "screen",
        "--server",
        proxy.base,
        "--as-of",
        "2026-06-15",
        "--out",
        out,
        "--write-back",
        *given,
        *extra,
    )


def search(sandbox_url: str, rtype: str, **params: str) -> list[dict[str, object]]:
    bundle = requests.get(f"{sandbox_url}/{rtype}", params={**params, "_count": "100"}, timeout=30).json()
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]


def assert_one_subject_and_one_provenance_per_version(sandbox_url: str, patients: list[str]) -> None:
    for pid in patients:
        subjects = search(sandbox_url, "ResearchSubject", identifier=f"{SUBJECT_ID_SYSTEM}|{STUDY}:{pid}")
        assert len(subjects) == 1, pid
        subject = subjects[0]
        version = int(subject["meta"]["versionId"])  # type: ignore[index]
        for n in range(1, version + 1):
            tag = f"{PROVENANCE_TAG_SYSTEM}|ResearchSubject/{subject['id']}/_history/{n}"
            assert len(search(sandbox_url, "Provenance", _tag=tag)) == 1, (pid, n)
        # HAPI keeps the tag but (by default) not the version in the stored target.
        everything = search(sandbox_url, "Provenance", target=f"ResearchSubject/{subject['id']}")
        assert len(everything) == version, pid


LOST = {"500": Reply(500), "silence": Silence(), "reset": Reset()}


@pytest.mark.parametrize("lost", sorted(LOST))
def test_a_subject_stored_by_hapi_but_answered_badly_is_not_created_twice(
    lost: str, sandbox_url: str, proxy: FaultServer, patients: list[str], tmp_path: Path
) -> None:
    proxy.on("POST", "ResearchSubject", Stored(then=LOST[lost]))

    code, err = screen(proxy, patients, tmp_path, "--timeout", "2")

    assert code == 0, err
    assert len(proxy.requests_to("POST", "ResearchSubject")) == 2  # the lost one was not resent blindly
    assert_one_subject_and_one_provenance_per_version(sandbox_url, patients)


@pytest.mark.parametrize("lost", sorted(LOST))
def test_a_provenance_stored_by_hapi_but_answered_badly_is_not_written_twice(
    lost: str, sandbox_url: str, proxy: FaultServer, patients: list[str], tmp_path: Path
) -> None:
    proxy.on("POST", "Provenance", Stored(then=LOST[lost]))

    code, err = screen(proxy, patients, tmp_path, "--timeout", "2")

    assert code == 0, err
    assert_one_subject_and_one_provenance_per_version(sandbox_url, patients)


def test_a_subject_left_without_provenance_is_repaired_by_the_next_screen_and_then_left_alone(
    sandbox_url: str, proxy: FaultServer, patients: list[str], tmp_path: Path
) -> None:
    proxy.on("POST", "Provenance", *[Reply(500)] * 6)  # never reaches HAPI: a crash between the writes

    first, _ = screen(proxy, patients, tmp_path)
    assert first == 3
    assert (
        search(sandbox_url, "Provenance", target=f"ResearchSubject/{_subject_id(sandbox_url, patients[0])}")
        == []
    )

    second, err = screen(proxy, patients, tmp_path)
    assert second == 0, err
    assert "missing Provenance written 2" in err
    assert_one_subject_and_one_provenance_per_version(sandbox_url, patients)

    writes_before = len([r for r in proxy.requests if r.method in ("POST", "PUT")])
    third, err = screen(proxy, patients, tmp_path)
    assert third == 0, err
    # HAPI answered _revinclude=Provenance:target: the Provenances were seen, nothing was written.
    assert len([r for r in proxy.requests if r.method in ("POST", "PUT")]) == writes_before
    assert_one_subject_and_one_provenance_per_version(sandbox_url, patients)


def _subject_id(sandbox_url: str, pid: str) -> str:
    (subject,) = search(sandbox_url, "ResearchSubject", identifier=f"{SUBJECT_ID_SYSTEM}|{STUDY}:{pid}")
    return str(subject["id"])
