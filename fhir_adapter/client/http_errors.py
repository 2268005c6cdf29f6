"""A failed FHIR response as an exception: the status as the error type (401 after a token refresh
``AuthError``; 403, or a 401 that cannot be renewed, ``AccessDenied``; 409/412 ``PreconditionFailed``;
else ``ServerError``), a message fit for logs, and the OperationOutcome's free text kept apart.

The message holds the method, the path without its query, the status (with its standard reason
phrase, not the server's) and each issue's ``severity/code``. The OperationOutcome's ``diagnostics``
and ``details.text`` can quote patient data ("Patient Zhang Wei, MRN 8841 already enrolled"): they go
to ``ServerError.server_text``, which only the result file's ``errors`` carry (docs/security.md).
"""

from __future__ import annotations

import codecs
import http
import re
from typing import Any, Final

import orjson
import requests

from fhir_adapter.client.urls import no_query
from fhir_adapter.errors import AccessDenied, AuthError, PreconditionFailed, ServerError
from fhir_adapter.model import Resource

_MAX_ISSUES: Final = 5
_MAX_ISSUE_TEXT: Final = 300
# Issue severity and code are FHIR codes (e.g. error/processing); anything else a server puts there is
# free text and is not repeated.
_CODE_RE: Final = re.compile(r"[a-z][a-z0-9-]{0,39}")


def http_error(
    resp: requests.Response,
    method: str,
    display: str,
    url: str,
    *,
    attempts: int,
    renewed: bool = False,
    note: str | None = None,
) -> ServerError:
    """The exception for a response the client will not retry; ``display`` is the path for messages.

    ``renewed``: the credentials were renewed for this request and the server still answered 401.
    """
    status = resp.status_code
    body = json_or_none(resp)
    message = f"HTTP {status} on {method} {display}"
    codes = issue_summary(body)
    if codes:
        message += f": {codes}"
    else:
        message += f" ({reason_phrase(status)})"
    if note:
        message += f"; {note}"
    if attempts > 1:
        message += f" [after {attempts} attempts]"
    error_type: type[ServerError] = ServerError
    if status == 401:
        error_type = AuthError if renewed else AccessDenied
    elif status == 403:
        error_type = AccessDenied
    elif status in (409, 412):
        error_type = PreconditionFailed
    return error_type(message, status=status, url=no_query(url), server_text=outcome_text(body) or None)


def reason_phrase(status: int) -> str:
    """The standard phrase of a status; the server's own phrase is free text and is not repeated."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "non-standard status"


def json_or_none(resp: requests.Response) -> Any:
    """The body as JSON, or None when it is empty or not UTF-8 JSON (an error page, a broken body)."""
    return json_body(resp.content)


def json_body(content: bytes) -> Any:
    """Strict UTF-8 JSON, as FHIR requires and as files are read (a UTF-8 BOM dropped); None otherwise.

    ``requests``' ``resp.json()`` guesses UTF-16/32 and reads undecodable bytes as U+FFFD, so a Bulk Data
    manifest with a broken byte in a URL would have been followed with an altered URL. orjson also
    refuses NaN and Infinity, which ``json`` accepts.
    """
    if not content:
        return None
    try:
        return orjson.loads(content.removeprefix(codecs.BOM_UTF8))
    except orjson.JSONDecodeError:
        return None


def issue_summary(body: Any) -> str:
    """``severity/code`` of each issue of an OperationOutcome, joined with ``, ``; "" for anything else."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    issues = _issues(body)
    parts = [f"{_code(i.get('severity'))}/{_code(i.get('code'))}" for i in issues[:_MAX_ISSUES]]
    if len(issues) > _MAX_ISSUES:
        parts.append(f"and {len(issues) - _MAX_ISSUES} more issue(s)")
    return ", ".join(parts)


def issue_codes(outcome: Resource) -> str:
    """``severity/code`` of each issue, for the warning about a search's outcome entry."""
    return issue_summary({**outcome, "resourceType": "OperationOutcome"}) or "(no issues)"


def outcome_text(body: Any) -> str:
    """The free text of an OperationOutcome: ``severity/code: diagnostics (details.text)`` per issue.

    For the result file only (it may quote patient data); never for a log or a message.
    """
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    issues = _issues(body)
    parts = []
    for issue in issues[:_MAX_ISSUES]:
        details = issue.get("details")
        texts = [issue.get("diagnostics"), details.get("text") if isinstance(details, dict) else None]
        clean = list(dict.fromkeys(_clip(t) for t in texts if isinstance(t, str) and t.strip()))
        label = f"{_code(issue.get('severity'))}/{_code(issue.get('code'))}"
        if len(clean) == 2:
            parts.append(f"{label}: {clean[0]} ({clean[1]})")
        elif clean:
            parts.append(f"{label}: {clean[0]}")
    return "; ".join(parts)


def _issues(body: dict[str, Any]) -> list[dict[str, Any]]:
    issues = body.get("issue")
    return [i for i in issues if isinstance(i, dict)] if isinstance(issues, list) else []


def _code(value: Any) -> str:
    return value if isinstance(value, str) and _CODE_RE.fullmatch(value) else "?"


def _clip(text: str) -> str:
    # Servers put stack traces and multi-line dumps in diagnostics; keep one readable line.
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_ISSUE_TEXT else flat[: _MAX_ISSUE_TEXT - 1] + "…"
