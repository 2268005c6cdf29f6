"""The HAPI FHIR sandbox the integration tests run against (FHIR_SANDBOX_URL), its profiles and the
separate research server.

- ``sandbox_url``: the main HAPI (profile ``full``): ``FHIR_SANDBOX_URL``, else whatever answers at
  ``http://127.0.0.1:8089/fhir`` (what ``bash sandbox/hapi/sandbox.sh start`` starts).
- ``bulk_only_url``, ``search_only_url``, ``throttled_url``: the profile proxies
  (``FHIR_SANDBOX_BULK_ONLY_URL``, ``FHIR_SANDBOX_SEARCH_ONLY_URL``, ``FHIR_SANDBOX_THROTTLED_URL``);
  ``research_url``: the second, independent HAPI (``FHIR_RESEARCH_SANDBOX_URL``). Unset, each is looked
  for at the port ``sandbox.sh start-all`` gives it: the main port + 2, + 3, + 4 and + 1.
- ``throttle_rps``: the throttled profile's limit (``FHIR_SANDBOX_THROTTLE_RPS``, default 10).

Skipped when no sandbox answers, unless FHIR_REQUIRE_SANDBOX=1 (CI): then a missing or silent sandbox
fails the run instead of passing it quietly. The skip message says what to run or export.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable

import pytest
import requests

DEFAULT_SANDBOX_URL = "http://127.0.0.1:8089/fhir"
START = "bash sandbox/hapi/sandbox.sh start"
START_ALL = "bash sandbox/hapi/sandbox.sh start-all"

# fixture -> (environment variable, offset from the main port in `sandbox.sh start-all`, how to start it)
_SERVERS = {
    "research": ("FHIR_RESEARCH_SANDBOX_URL", 1, "bash sandbox/hapi/sandbox.sh start --name research"),
    "bulk-only": ("FHIR_SANDBOX_BULK_ONLY_URL", 2, "bash sandbox/hapi/sandbox.sh start --profile bulk-only"),
    "search-only": (
        "FHIR_SANDBOX_SEARCH_ONLY_URL",
        3,
        "bash sandbox/hapi/sandbox.sh start --profile search-only",
    ),
    "throttled": ("FHIR_SANDBOX_THROTTLED_URL", 4, "bash sandbox/hapi/sandbox.sh start --profile throttled"),
}


def _required() -> bool:
    return os.environ.get("FHIR_REQUIRE_SANDBOX") == "1"


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url.rstrip('/')}/metadata", timeout=10).status_code == 200
    except requests.RequestException:
        return False


def _unavailable(message: str) -> None:
    if _required():
        pytest.fail(f"FHIR_REQUIRE_SANDBOX=1 but {message}")
    pytest.skip(message)


def _main_url() -> str:
    return (os.environ.get("FHIR_SANDBOX_URL") or DEFAULT_SANDBOX_URL).rstrip("/")


def _offset_url(base: str, offset: int) -> str:
    parts = urllib.parse.urlsplit(base)
    port = (parts.port or 80) + offset
    return urllib.parse.urlunsplit((parts.scheme, f"{parts.hostname}:{port}", parts.path, "", ""))


def _resolve(kind: str) -> str:
    env, offset, start_one = _SERVERS[kind]
    url = os.environ.get(env)
    if url:
        if not _answers(url):
            _unavailable(f"{env}={url} does not answer GET metadata")
        return url.rstrip("/")
    guess = _offset_url(_main_url(), offset)
    if _answers(guess):
        return guess
    _unavailable(
        f"no {kind} sandbox: {env} is not set and nothing answers at {guess}/metadata."
        f" Run `{START_ALL}` (main HAPI, research HAPI and the profile proxies; it prints the"
        f" variables to export), or `{start_one}`, or export {env}=<base URL>"
    )
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def sandbox_url() -> str:
    url = os.environ.get("FHIR_SANDBOX_URL")
    if not url:
        if _answers(DEFAULT_SANDBOX_URL):
            return DEFAULT_SANDBOX_URL
        _unavailable(
            f"FHIR_SANDBOX_URL is not set and nothing answers at {DEFAULT_SANDBOX_URL}/metadata."
            f" Run `{START}` (or `{START_ALL}` for the profiles too), or export FHIR_SANDBOX_URL=<base URL>"
        )
    assert url is not None
    if not _answers(url):
        _unavailable(f"the FHIR sandbox at {url} does not answer GET metadata")
    return url.rstrip("/")


@pytest.fixture(scope="module")
def research_url() -> str:
    """The second HAPI: a separate server with its own database (the research write target)."""
    return _resolve("research")


@pytest.fixture(scope="module")
def bulk_only_url() -> str:
    return _resolve("bulk-only")


@pytest.fixture(scope="module")
def search_only_url() -> str:
    return _resolve("search-only")


@pytest.fixture(scope="module")
def throttled_url() -> str:
    return _resolve("throttled")


@pytest.fixture(scope="session")
def throttle_rps() -> float:
    """Requests per second the throttled profile accepts before it answers 429."""
    return float(os.environ.get("FHIR_SANDBOX_THROTTLE_RPS") or 10)


@pytest.fixture(scope="session")
def fhir_answers() -> Callable[[str], bool]:
    """``fhir_answers(url)``: whether a FHIR server answers GET metadata (for servers a test starts)."""
    return _answers
