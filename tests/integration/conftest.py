"""The HAPI FHIR sandbox the integration tests run against (FHIR_SANDBOX_URL).

Skipped when no sandbox is configured, unless FHIR_REQUIRE_SANDBOX=1 (CI): then a missing or silent
sandbox fails the run instead of passing it quietly.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import requests


def _required() -> bool:
    return os.environ.get("FHIR_REQUIRE_SANDBOX") == "1"


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url.rstrip('/')}/metadata", timeout=10).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def sandbox_url() -> str:
    url = os.environ.get("FHIR_SANDBOX_URL")
    if not url:
        if _required():
            pytest.fail("FHIR_REQUIRE_SANDBOX=1 but FHIR_SANDBOX_URL is not set")
        pytest.skip("FHIR_SANDBOX_URL is not set (start one with sandbox/hapi/sandbox.sh start)")
    if not _answers(url):
        message = f"the FHIR sandbox at {url} does not answer GET metadata"
        if _required():
            pytest.fail(message)
        pytest.skip(message)
    return url.rstrip("/")


@pytest.fixture(scope="session")
def fhir_answers() -> Callable[[str], bool]:
    """``fhir_answers(url)``: whether a FHIR server answers GET metadata (for servers a test starts)."""
    return _answers
