"""A failed FHIR response as a readable exception: the OperationOutcome's issues as text, and the
status as the error type (401/403 ``AuthError``, 409/412 ``PreconditionFailed``, else ``ServerError``).

Messages hold the method, the path without its query, the status and OperationOutcome text only
(the PHI rule of :mod:`fhir_adapter.client.http`).
"""

from __future__ import annotations

from typing import Any, Final

import requests

from fhir_adapter.client.urls import no_query
from fhir_adapter.errors import AuthError, PreconditionFailed, ServerError
from fhir_adapter.model import Resource

_MAX_ISSUES: Final = 5
_MAX_ISSUE_TEXT: Final = 300


def http_error(resp: requests.Response, method: str, display: str, url: str, *, attempts: int) -> ServerError:
    """The exception for a response the client will not retry; ``display`` is the path for messages."""
    status = resp.status_code
    message = f"HTTP {status} on {method} {display}"
    outcome = outcome_text(json_or_none(resp))
    if outcome:
        message += f": {outcome}"
    elif resp.reason:
        message += f" ({resp.reason})"
    if attempts > 1:
        message += f" [after {attempts} attempts]"
    error_type: type[ServerError] = ServerError
    if status in (401, 403):
        error_type = AuthError
    elif status in (409, 412):
        error_type = PreconditionFailed
    return error_type(message, status=status, url=no_query(url))


def json_or_none(resp: requests.Response) -> Any:
    try:
        return resp.json() if resp.content else None
    except ValueError:
        return None


def outcome_text(body: Any) -> str:
    """``severity/code: diagnostics (details.text)`` for each issue, joined with ``; ``."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    issues = [i for i in body.get("issue") or [] if isinstance(i, dict)]
    parts = []
    for issue in issues[:_MAX_ISSUES]:
        details = issue.get("details")
        texts = [issue.get("diagnostics"), details.get("text") if isinstance(details, dict) else None]
        clean = list(dict.fromkeys(_clip(t) for t in texts if isinstance(t, str) and t.strip()))
        label = f"{issue.get('severity') or '?'}/{issue.get('code') or '?'}"
        if len(clean) == 2:
            parts.append(f"{label}: {clean[0]} ({clean[1]})")
        elif clean:
            parts.append(f"{label}: {clean[0]}")
        else:
            parts.append(label)
    if len(issues) > _MAX_ISSUES:
        parts.append(f"and {len(issues) - _MAX_ISSUES} more issue(s)")
    return "; ".join(parts)


def issue_codes(outcome: Resource) -> str:
    """``severity/code`` of each issue, for the warning about a search's outcome entry."""
    issues = outcome.get("issue") or []
    return (
        ", ".join(f"{i.get('severity', '?')}/{i.get('code', '?')}" for i in issues if isinstance(i, dict))
        or "(no issues)"
    )


def _clip(text: str) -> str:
    # Servers put stack traces and multi-line dumps in diagnostics; keep one readable line.
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_ISSUE_TEXT else flat[: _MAX_ISSUE_TEXT - 1] + "…"
