"""One local Spark session for the Spark engine's tests (``local[2]``), shared by every test.

Skipped when PySpark (the ``spark`` extra) or Java is missing, unless FHIR_REQUIRE_SPARK=1 (CI's Spark
step): then a missing engine fails the run instead of passing it quietly. The engine reuses an active
session, so the command line run in-process screens on this one.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest


def _required() -> bool:
    return os.environ.get("FHIR_REQUIRE_SPARK") == "1"


def _unavailable() -> str | None:
    if importlib.util.find_spec("pyspark") is None:
        return "PySpark is not installed (pip install -e '.[spark]')"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "Java is not installed (Spark needs Java 17 or later)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/spark/" in item.nodeid.replace(os.sep, "/"):
            item.add_marker(pytest.mark.spark)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    missing = _unavailable()
    if missing is not None:
        if _required():
            pytest.fail(f"FHIR_REQUIRE_SPARK=1 but {missing}")
        pytest.skip(missing)
    from fhir_adapter.spark.session import build

    scratch = tempfile.mkdtemp(prefix="fhir-adapter-spark-tests-")
    session = build("local[2]", scratch)
    try:
        yield session
    finally:
        session.stop()
        os.environ.pop("SPARK_LOCAL_DIRS", None)
        shutil.rmtree(scratch, ignore_errors=True)
