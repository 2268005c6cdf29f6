"""Shared fixtures. FHIR fixtures are built with the helpers in ``tests/fhirdata.py``."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

import pytest
from fhirdata import AS_OF as _AS_OF
from fhirdata import default_mappings

from fhir_adapter.config.types import Mappings

AS_OF: dt.date = _AS_OF  # 2026-06-15: the examples and every fixture count back from it


@pytest.fixture(scope="session")
def mappings() -> Mappings:
    """The shipped mappings/, loaded once (load_mappings() with no overlay)."""
    return default_mappings()


@pytest.fixture(scope="session")
def as_of() -> dt.date:
    return AS_OF


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """cli.main() replaces the root logger's handlers with one bound to the (captured) stderr; undo it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
