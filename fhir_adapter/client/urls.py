"""URL hygiene for the FHIR client: the base URL, origins, ids in paths, and URLs fit for logs.

Query strings carry patient identifiers, so what goes into logs and exception messages is the URL
without its query (:func:`no_query`); see the PHI rule in :mod:`fhir_adapter.client.http`.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

from fhir_adapter.errors import ConfigError

LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1"})

_TYPE_RE: Final = re.compile(r"[A-Z][A-Za-z]{1,63}")
_ID_RE: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def normalise_base(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"FHIR base URL must be an absolute http(s) URL, got {base_url!r}")
    if parts.username or parts.password:
        raise ConfigError("FHIR base URL must not contain credentials; configure auth instead")
    if parts.query or parts.fragment:
        raise ConfigError("FHIR base URL must not have a query or fragment")
    return base_url.rstrip("/") + "/"


def origin_of(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def no_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def no_query_path(path: str) -> str:
    return path.split("?", 1)[0]


def check_type(resource_type: str) -> str:
    if not _TYPE_RE.fullmatch(resource_type):
        raise ValueError(f"not a FHIR resource type: {resource_type!r}")
    return resource_type


def check_id(resource_id: str) -> str:
    # Ids go into the URL path; the FHIR id grammar also rules out "/" and ".." tricks.
    if not _ID_RE.fullmatch(resource_id) or resource_id in (".", ".."):
        raise ValueError("not a valid FHIR id")
    return resource_id
