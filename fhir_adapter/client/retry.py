"""When the FHIR client may resend a request, and how long it waits first.

Which statuses and transport failures are worth a resend (a POST only when the server cannot have
processed it), full-jitter exponential backoff, and the server's ``Retry-After`` (seconds or an
HTTP-date). The budget and the counting stay with the client, which owns the clock.
"""

from __future__ import annotations

import email.utils
import random
from datetime import UTC, datetime
from typing import Final

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
# POST (create, transaction) is not idempotent: after a 500/502/504 the server or a backend behind
# the gateway may already have committed it, and a blind resend would create a duplicate
# ResearchSubject. 429 and 503 mean the request was turned away before processing, so they are safe.
POST_RETRY_STATUSES: Final = frozenset({429, 503})

TRANSPORT_ERRORS: Final = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


def backoff(retries: int, base: float, maximum: float, rng: random.Random) -> float:
    # Full jitter (uniform in [0, cap]) spreads many clients hitting one recovering server.
    cap = min(maximum, base * 2.0 ** min(retries, 32))
    return rng.uniform(0.0, cap)


def retry_after_seconds(resp: requests.Response, maximum: float) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        when = http_date(value)
        if when is None:
            return None
        # Measure against the server's own Date so clock skew between us and it does not matter.
        now = http_date(resp.headers.get("Date")) or datetime.now(UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), maximum)


def http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    # HTTP-dates are always GMT; a naive result only means the zone was written as "-0000".
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def failed_before_sending(exc: requests.exceptions.RequestException) -> bool:
    """True when the connection was never established, so the server cannot have seen the request."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError) and exc.args:
        cause = exc.args[0]
        # urllib3 reports DNS failures and refused connections as NewConnectionError, a
        # ConnectTimeoutError subclass; a dropped keep-alive mid-request is a ProtocolError instead.
        return isinstance(cause, MaxRetryError) and isinstance(cause.reason, ConnectTimeoutError)
    return False


def describe_transport_error(exc: Exception) -> str:
    """The exception's class (and urllib3 cause), never its text: that embeds the URL with its query."""
    name = type(exc).__name__
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, MaxRetryError) and cause.reason is not None:
        return f"{name} ({type(cause.reason).__name__})"
    return name
