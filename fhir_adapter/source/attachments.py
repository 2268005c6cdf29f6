"""The attachments a record's notes point at by URL, fetched from the server the record came from.

A DocumentReference (or a DiagnosticReport's ``presentedForm``) may carry its text as ``attachment.url``
instead of ``data``. Before screening, the server source reads those that name a ``Binary`` on the same
FHIR server (``Binary/123``, or an absolute URL under the same base), so the facts stay a pure function of
the record. Anything else is left unread: a URL on another host would receive our credentials, and an
arbitrary URL need not be FHIR. (Files carry no server: there only inline ``data`` is read.) Sizes are capped: an attachment whose declared ``size`` exceeds
``max_attachment_bytes`` is not fetched, and a Binary whose base64 is longer than that cap allows is
dropped (the whole Binary is downloaded before that check: the client reads whole responses). An
attachment the server refuses (403, 404) is skipped and logged by resource id only; a server that stops
answering fails the patient's fetch like any other request.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator
from typing import Any, Final
from urllib.parse import urlsplit

from fhir_adapter.client.http import FhirClient
from fhir_adapter.client.urls import origin_of
from fhir_adapter.config.types import NoteSettings
from fhir_adapter.errors import AuthError, ServerError, ServerUnreachable
from fhir_adapter.model import PatientRecord, Resource

log = logging.getLogger(__name__)

_BINARY: Final = re.compile(r"Binary/([A-Za-z0-9\-.]{1,64})")


def binary_id(base_url: str, url: str) -> str | None:
    """The Binary id ``url`` names on the server at ``base_url``; None for anything else."""
    if "://" not in url:
        found = _BINARY.fullmatch(url.strip())
        return found.group(1) if found else None
    try:
        same = origin_of(url) == origin_of(base_url)
    except ValueError:
        return None
    base_path = urlsplit(base_url).path.rstrip("/") + "/"
    parts = urlsplit(url)
    if not same or parts.query or parts.fragment or not parts.path.startswith(base_path):
        return None
    found = _BINARY.fullmatch(parts.path[len(base_path) :])
    return found.group(1) if found else None


def _attachments(record: PatientRecord) -> Iterator[tuple[str, Resource]]:
    for doc in record.of_type("DocumentReference"):
        for content in _list(doc.get("content")):
            if isinstance(content, dict) and isinstance(content.get("attachment"), dict):
                yield f"DocumentReference/{doc.get('id', '?')}", content["attachment"]
    for report in record.of_type("DiagnosticReport"):
        for form in _list(report.get("presentedForm")):
            if isinstance(form, dict):
                yield f"DiagnosticReport/{report.get('id', '?')}", form


def fetch_attachments(client: FhirClient, record: PatientRecord, settings: NoteSettings) -> PatientRecord:
    """``record`` with ``attachments`` filled for every readable same-server URL attachment."""
    fetched: dict[str, Resource] = {}
    skipped: dict[str, str] = {}
    limit = (settings.max_attachment_bytes + 2) // 3 * 4  # base64 length of the cap
    for owner, attachment in _attachments(record):
        url = attachment.get("url")
        if isinstance(attachment.get("data"), str) or not isinstance(url, str) or url in fetched:
            continue
        size = attachment.get("size")
        if isinstance(size, int) and not isinstance(size, bool) and size > settings.max_attachment_bytes:
            skipped[owner] = "larger than max_attachment_bytes"
            continue
        bid = binary_id(client.base_url, url)
        if bid is None:
            skipped[owner] = "not a Binary on this server"
            continue
        try:
            response = client.read("Binary", bid)
        except AuthError as exc:
            if exc.status != 403:
                raise  # credentials refused: the run stops, as for any request
            # Forbidden: the token's scopes may not cover Binary. The note goes unread, not the patient.
            skipped[owner] = "HTTP 403"
            continue
        except ServerUnreachable:
            raise  # the server, not this attachment: the patient's fetch fails as a whole
        except ServerError as exc:
            skipped[owner] = f"HTTP {exc.status}" if exc.status else "no answer"
            continue
        body = response.body if response is not None else None
        data = body.get("data") if isinstance(body, dict) and body.get("resourceType") == "Binary" else None
        if not isinstance(data, str):
            skipped[owner] = "no Binary data"
            continue
        if len("".join(data.split())) > limit:
            skipped[owner] = "larger than max_attachment_bytes"
            continue
        fetched[url] = {
            "contentType": body.get("contentType") if isinstance(body, dict) else None,
            "data": data,
        }
    for owner, why in sorted(skipped.items()):
        log.info("%s: attachment URL not read (%s)", owner, why)
    return dataclasses.replace(record, attachments=fetched) if fetched else record


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
