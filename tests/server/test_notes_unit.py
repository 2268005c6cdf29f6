"""Notes from a server: DocumentReference and DiagnosticReport are fetched only when notes are on, and
attachment URLs are read only from the same server (a Binary), within the size cap, before screening."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses

from fhir_adapter.client.http import FhirClient
from fhir_adapter.config.loader import load_mappings
from fhir_adapter.facts.derive import context
from fhir_adapter.model import PatientRecord
from fhir_adapter.screening import Screener
from fhir_adapter.source.attachments import binary_id, fetch_attachments
from fhir_adapter.source.base import Screenable
from fhir_adapter.source.records import fetch_record
from fhir_adapter.source.server import ServerSource

BASE = "https://fhir.example.org/r4"
AS_OF = dt.date(2026, 6, 15)
REPO = Path(__file__).resolve().parents[2]
NOTES_ON = REPO / "examples" / "notes-on.toml"
Res = dict[str, Any]
NOTE_TEXT = "Clinic note. MMT-8: 118/150, PGA 4/10. Zhang Weiling, phone 5555 0101."


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def document(url: str | None = None, data: str | None = None, size: int | None = None, id: str = "n1") -> Res:
    attachment: Res = {"contentType": "text/plain"}
    if url is not None:
        attachment["url"] = url
    if data is not None:
        attachment["data"] = data
    if size is not None:
        attachment["size"] = size
    return {
        "resourceType": "DocumentReference",
        "id": id,
        "status": "current",
        "subject": {"reference": "Patient/p1"},
        "date": "2026-06-01T10:00:00Z",
        "content": [{"attachment": attachment}],
    }


def patient_record(*docs: Res) -> PatientRecord:
    return PatientRecord(
        patient_id="p1",
        patient={"resourceType": "Patient", "id": "p1"},
        resources={"DocumentReference": tuple(docs)},
    )


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


@pytest.fixture
def client() -> FhirClient:
    return FhirClient(BASE, sleep=lambda _: None, rng=random.Random(1), max_retries=0)


def binary(text: str) -> Res:
    return {"resourceType": "Binary", "id": "b1", "contentType": "text/plain", "data": b64(text)}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Binary/b1", "b1"),
        (f"{BASE}/Binary/b1", "b1"),
        ("https://fhir.example.org:443/r4/Binary/b1", "b1"),
        ("https://other.example.org/r4/Binary/b1", None),  # another host would get our token
        ("http://fhir.example.org/r4/Binary/b1", None),  # another scheme is another origin
        ("https://fhir.example.org/other/Binary/b1", None),  # not under the FHIR base
        (f"{BASE}/Binary/b1?x=1", None),
        (f"{BASE}/DocumentReference/n1", None),
        ("Binary/../Patient/p1", None),
        ("/notes/n1.txt", None),
        ("file:///etc/passwd", None),
    ],
)
def test_only_a_binary_on_the_same_server_is_fetched(url: str, expected: str | None) -> None:
    assert binary_id(BASE + "/", url) == expected


def test_a_same_server_binary_is_fetched_and_read(mocked: responses.RequestsMock, client: FhirClient) -> None:
    mocked.get(f"{BASE}/Binary/b1", json=binary(NOTE_TEXT))
    record = fetch_attachments(
        client, patient_record(document(url="Binary/b1")), load_mappings(overlays=[NOTES_ON]).notes
    )
    assert record.attachments["Binary/b1"]["data"] == b64(NOTE_TEXT)


def test_other_urls_inline_data_and_oversized_attachments_are_not_fetched(
    mocked: responses.RequestsMock, client: FhirClient, caplog: pytest.LogCaptureFixture
) -> None:
    notes = load_mappings(overlays=[NOTES_ON]).notes
    docs = (
        document(url="https://evil.example.org/Binary/b1", id="a"),
        document(url="Binary/b2", data=b64("inline"), id="b"),
        document(url="Binary/b3", size=notes.max_attachment_bytes + 1, id="c"),
    )
    with caplog.at_level(logging.INFO):
        record = fetch_attachments(client, patient_record(*docs), notes)
    assert record.attachments == {} and len(mocked.calls) == 0  # nothing was requested
    assert "DocumentReference/a: attachment URL not read (not a Binary on this server)" in caplog.text
    assert "DocumentReference/c: attachment URL not read (larger than max_attachment_bytes)" in caplog.text


def test_a_refused_or_too_large_binary_is_skipped_and_logged_without_its_content(
    mocked: responses.RequestsMock, client: FhirClient, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    overlay = tmp_path / "small.toml"
    overlay.write_text("[notes]\nenabled = true\nmax_attachment_bytes = 16\n", encoding="utf-8")
    notes = load_mappings(overlays=[overlay]).notes
    mocked.get(f"{BASE}/Binary/b1", status=403, json={"resourceType": "OperationOutcome"})
    mocked.get(f"{BASE}/Binary/b2", json=binary(NOTE_TEXT))
    docs = (document(url="Binary/b1", id="a"), document(url="Binary/b2", id="b"))
    with caplog.at_level(logging.DEBUG):
        record = fetch_attachments(client, patient_record(*docs), notes)
    assert record.attachments == {}
    assert "DocumentReference/a: attachment URL not read (HTTP 403)" in caplog.text
    assert "DocumentReference/b: attachment URL not read (larger than max_attachment_bytes)" in caplog.text
    assert "Zhang" not in caplog.text and "MMT-8" not in caplog.text


def _capabilities() -> Res:
    return {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "rest": [{"mode": "server"}]}


def _searches(mocked: responses.RequestsMock, notes_on: bool) -> list[str]:
    screener = Screener([load_mappings(overlays=[NOTES_ON] if notes_on else [])], AS_OF)
    mocked.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    for rtype in sorted(screener.needed_types - {"Patient", "Medication"}):
        body: list[Res] = [document(url="Binary/b1")] if rtype == "DocumentReference" else []
        mocked.get(
            f"{BASE}/{rtype}",
            json={"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in body]},
        )
    return sorted(screener.needed_types - {"Patient", "Medication"})


def test_typed_searches_ask_for_notes_only_when_notes_are_on(
    mocked: responses.RequestsMock, client: FhirClient
) -> None:
    off = _searches(mocked, notes_on=False)
    assert "DocumentReference" not in off and "DiagnosticReport" not in off
    fetch_record(client, "p1", "typed", Screener([load_mappings()], AS_OF).needed_types)
    asked = {urlsplit(c.request.url).path.rsplit("/", 1)[-1] for c in mocked.calls}
    assert not {"DocumentReference", "DiagnosticReport"} & asked


def test_the_server_source_fetches_notes_and_their_binaries_and_counts_the_requests(
    mocked: responses.RequestsMock, client: FhirClient
) -> None:
    mocked.get(f"{BASE}/metadata", json=_capabilities())
    on = _searches(mocked, notes_on=True)
    assert {"DocumentReference", "DiagnosticReport"} <= set(on)
    mocked.get(f"{BASE}/Binary/b1", json=binary(NOTE_TEXT))
    screener = Screener([load_mappings(overlays=[NOTES_ON])], AS_OF)
    source = ServerSource(client, screener, patients=["p1"])
    (item,) = list(source.records())
    assert isinstance(item, Screenable)
    assert item.record.attachments["Binary/b1"]["data"] == b64(NOTE_TEXT)
    assert item.requests == 1 + len(on) + 1  # the patient, each type, the Binary
    ctx = context(item.record, screener.trials[0], AS_OF)
    assert [s.value for s in ctx.fact("mmt8").suggestions] == ["118"]
