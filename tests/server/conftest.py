"""Fixtures for the fault-injection tests: loopback fault servers and a CLI run with a wall clock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from faultserver import FaultServer

import fhir_adapter.client.factory as factory

from .faultrun import TOKEN


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


@pytest.fixture
def elsewhere() -> Iterator[FaultServer]:
    """Another origin (another port on the same host): nothing may reach it."""
    with FaultServer() as s:
        yield s


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's own backoff in milliseconds, so retried faults do not make slow tests. Waits a
    server asks for (Retry-After) are still waited in full."""
    real = factory.FhirClient

    def make(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("backoff_base", 0.01)
        kwargs.setdefault("backoff_max", 0.05)
        return real(*args, **kwargs)

    monkeypatch.setattr(factory, "FhirClient", make)


@pytest.fixture
def bearer(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("FAULT_TOKEN", TOKEN)
    return ["--auth", "bearer", "--token", "env:FAULT_TOKEN"]
