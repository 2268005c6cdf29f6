"""When the FHIR client may resend a request, and how long it waits first.

Which statuses and transport failures are worth a resend (a POST only when the server cannot have
processed it), full-jitter exponential backoff, and the server's ``Retry-After`` (seconds or an
HTTP-date; anything else is ignored). The budgets and the counting stay with the client, which owns the
clock: a ``Retry-After`` longer than what is left of the retry budget means giving up at once.
"""

from __future__ import annotations

import email.utils
import random
from datetime import UTC, datetime
from typing import Final

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
# POST (create) is not idempotent: after a 5xx the server or a backend behind the gateway may already
# have committed it, and a blind resend would create a duplicate (a 503 from a gateway says nothing
# about the backend behind it). Only 429 means "turned away before processing". The write-back resends
# a create itself, after searching for what the first attempt may have stored.
POST_RETRY_STATUSES: Final = frozenset({429})
# Answers that mean "slow down": their waits count against the run's throttling budget.
THROTTLE_STATUSES: Final = frozenset({429, 503})
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})

TRANSPORT_ERRORS: Final = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


def backoff(retries: int, base: float, maximum: float, rng: random.Random) -> float:
    # Full jitter (uniform in [0, cap]) spreads many clients hitting one recovering server.
    cap = min(maximum, base * 2.0 ** min(retries, 32))
    return rng.uniform(0.0, cap)


def retry_after_seconds(resp: requests.Response) -> float | None:
    """The wait the server asks for, in seconds (>= 0); None when absent or not a valid value
    (RFC 9110: delta-seconds or an HTTP-date). Not capped: the caller compares it with its budget."""
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value)
    else:
        when = http_date(value)
        if when is None:
            return None
        # Measure against the server's own Date so clock skew between us and it does not matter.
        now = http_date(resp.headers.get("Date")) or datetime.now(UTC)
        seconds = (when - now).total_seconds()
    return max(seconds, 0.0)


def http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
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
