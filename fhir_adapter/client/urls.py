"""URL hygiene for the FHIR client: the base URL, origins, ids in paths, and URLs fit for logs.

Every URL is read with urllib3's ``parse_url``, the parser ``requests`` and urllib3 use to open the
connection, so the host we check is the host we connect to: a second parser (``urllib.parse``) can
read ``https://a.example\\@b.example/`` or a URL with control characters differently. What the
server hands us (next links, redirects, Location headers, a token endpoint) must be on the base's
origin and unambiguous (:func:`check_server_url`); what the operator configures must carry no
credentials and use TLS unless the host is loopback or plain http is explicitly allowed
(:func:`check_configured_url`).

Query strings carry patient identifiers, so what goes into logs and exception messages is the URL
without its query (:func:`no_query`); see the PHI rule in :mod:`fhir_adapter.client.http`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from fhir_adapter.errors import ConfigError, UnsafeUrl

LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1"})

_TYPE_RE: Final = re.compile(r"[A-Z][A-Za-z]{1,63}")
_ID_RE: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# C0 controls, space and DEL; other Unicode whitespace is caught by str.isspace.
_CONTROL_RE: Final = re.compile(r"[\x00-\x20\x7f]")
_USERINFO: Final = "it carries user information (user:password@)"

Origin = tuple[str, str, int]


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_problem(url: object) -> str | None:
    """Why ``url`` is ambiguous as a URL (None when it is not): what every URL we open must pass."""
    if not isinstance(url, str) or not url:
        return "it is not a non-empty string"
    if "\\" in url:
        return "it contains a backslash"
    if _CONTROL_RE.search(url) or any(c.isspace() for c in url):
        return "it contains whitespace or control characters"
    try:
        parts = parse_url(url)
    except LocationParseError:
        return "it cannot be parsed"
    if parts.auth is not None or "@" in (parts.netloc or ""):
        return _USERINFO
    if parts.scheme not in ("http", "https") or not parts.host:
        return "it is not an absolute http(s) URL"
    if "%" in parts.host:
        return "its host is percent-encoded"
    return None


def origin_of(url: str) -> Origin:
    """(scheme, host, port) as urllib3 reads them; raises ValueError for a URL that fails the checks."""
    problem = url_problem(url)
    if problem is not None:
        raise ValueError(problem)
    parts = parse_url(url)
    scheme = (parts.scheme or "").lower()
    return scheme, (parts.host or "").lower(), parts.port or (443 if scheme == "https" else 80)


def check_configured_url(url: str, what: str, *, allow_plain_http: bool = False) -> Origin:
    """A URL the operator configured (the FHIR base, the token URL): the origin, or a ConfigError.

    No credentials in it (they would reach logs and process lists); https unless the host is
    loopback or ``allow_plain_http`` is set (patient data and tokens would travel unencrypted).
    """
    problem = url_problem(url)
    if problem == _USERINFO:
        # Not repeated in the message: it holds a password.
        raise ConfigError(f"{what} must not contain credentials (user:password@); configure auth instead")
    if problem is not None:
        raise ConfigError(f"{what} must be an absolute http(s) URL, got {url!r}: {problem}")
    origin = origin_of(url)
    if origin[0] == "http" and not is_loopback(origin[1]) and not allow_plain_http:
        raise ConfigError(
            f"{what} is plain http to {origin[1]}, which is not loopback: patient data and credentials "
            "would travel unencrypted; use https, or set allow_plain_http (--allow-plain-http) if the "
            "network path is protected otherwise"
        )
    return origin


def check_server_url(url: object, origin: Origin) -> str:
    """A URL the server handed us, refused (``UnsafeUrl``) unless it is unambiguous and on ``origin``.

    The message never repeats the URL: it came from the server and may carry anything.
    """
    problem = url_problem(url)
    if problem is not None:
        raise UnsafeUrl(f"refusing a URL from the server: {problem}")
    assert isinstance(url, str)
    scheme, host, port = origin_of(url)
    if scheme != origin[0]:
        raise UnsafeUrl(
            f"refusing a URL from the server: its scheme is {scheme}, the FHIR base's is {origin[0]}"
        )
    if (host, port) != origin[1:]:
        what = "host" if host != origin[1] else "port"
        raise UnsafeUrl(
            f"refusing a URL from the server on another origin (its {what} differs from the FHIR base's "
            f"{origin[1]}:{origin[2]}); fix the server's public base address setting"
        )
    return url


def normalise_base(base_url: str, *, allow_plain_http: bool = False, what: str = "FHIR base URL") -> str:
    check_configured_url(base_url, what, allow_plain_http=allow_plain_http)
    parts = parse_url(base_url)
    if parts.query is not None or parts.fragment is not None:
        raise ConfigError(f"{what} must not have a query or fragment")
    return base_url.rstrip("/") + "/"


def no_query(url: str) -> str:
    try:
        parts = parse_url(url)
    except LocationParseError:
        return "(unparseable URL)"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.host or ''}{port}{parts.path or ''}"


def no_query_path(path: str) -> str:
    return path.split("?", 1)[0]


def is_valid_type(resource_type: str) -> bool:
    """A resource type's spelling (not whether FHIR defines it): what may go into a URL path as it is."""
    return bool(_TYPE_RE.fullmatch(resource_type))


def check_type(resource_type: str) -> str:
    if not is_valid_type(resource_type):
        raise ValueError(f"not a FHIR resource type: {resource_type!r}")
    return resource_type


_VERSION_RE: Final = re.compile(r"\d{1,3}\.\d{1,3}(?:\.\d{1,3})?(?:-[A-Za-z0-9.]{1,20})?")


def fhir_version_of(value: object) -> str:
    """A CapabilityStatement's ``fhirVersion`` when it is one ("4.0.1", "5.0.0-ballot"), else "": it is
    shown on reports and terminals, and a server may put any text there."""
    return value if isinstance(value, str) and _VERSION_RE.fullmatch(value) else ""


def is_valid_id(resource_id: str) -> bool:
    """The FHIR id grammar: what may go into a URL path as it is."""
    return bool(_ID_RE.fullmatch(resource_id)) and resource_id not in (".", "..")


def check_id(resource_id: str) -> str:
    # Ids go into the URL path; the FHIR id grammar also rules out "/" and ".." tricks.
    if not is_valid_id(resource_id):
        raise ValueError("not a valid FHIR id")
    return resource_id
