"""The Spark session of a run: the one the run was started in (``spark-submit``, a test, a notebook), or
one of our own on ``--master`` (default ``local[*]``), set up quietly and privately.

A session of our own on a local master: bound to the loopback interface, no web UI (no port taken on a
shared machine), no console progress bar, quiet Spark logging (``log4j2.properties``), worker processes
on this interpreter, and scratch space (the shuffle holds patient data) in a private temporary folder
removed at the end. Files Hadoop writes are
created owner-only (``fs.permissions.umask-mode = 077``) on every master.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

from fhir_adapter.errors import AdapterError, UsageError

DEFAULT_MASTER = "local[*]"
INSTALL_HINT = "--engine spark needs PySpark: pip install 'fhir-adapter[spark]' (and Java 17 or later)"


class SparkStartError(AdapterError):
    """Spark could not be started (no Java, a bad master URL); exit 4 like any run that cannot start."""


def _session_class() -> Any:
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise UsageError(INSTALL_HINT) from exc
    return SparkSession


def under_spark_submit() -> bool:
    """spark-submit starts the JVM first and tells Python where it is."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def is_local(master: str) -> bool:
    return master == "local" or master.startswith("local[")


@contextmanager
def spark_session(master: str | None = None) -> Iterator[Any]:
    """Yield a SparkSession; stop it at the end only if it was started here."""
    session_class = _session_class()
    active = session_class.getActiveSession()
    if active is not None:
        yield active
        return
    if master is None and not under_spark_submit():
        master = DEFAULT_MASTER
    private = master is not None and is_local(master) and "SPARK_LOCAL_DIRS" not in os.environ
    scratch = tempfile.mkdtemp(prefix="fhir-adapter-spark-") if private else None
    try:
        session = _start(session_class, master, scratch)
        try:
            yield session
        finally:
            session.stop()
    finally:
        if scratch is not None:
            os.environ.pop("SPARK_LOCAL_DIRS", None)
            shutil.rmtree(scratch, ignore_errors=True)


def build(master: str | None = None, scratch: str | None = None) -> Any:
    """A session configured as the command line configures its own (tests keep one for a module)."""
    return _start(_session_class(), master or DEFAULT_MASTER, scratch)


def _start(session_class: Any, master: str | None, scratch: str | None) -> Any:
    logging.getLogger("py4j").setLevel(logging.WARNING)  # one line per connection at INFO
    builder = session_class.builder.appName("fhir-adapter screen")
    builder = builder.config("spark.ui.showConsoleProgress", "false")
    builder = builder.config("spark.hadoop.fs.permissions.umask-mode", "077")
    if master is not None:
        builder = builder.master(master)
        if is_local(master):
            # Workers must import this package: run them on the interpreter the command runs on.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            # A local run talks to itself only: bind the driver to the loopback interface.
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            builder = builder.config("spark.driver.bindAddress", "127.0.0.1")
            builder = builder.config("spark.driver.host", "127.0.0.1")
            log4j = resources.files("fhir_adapter.spark").joinpath("log4j2.properties")
            builder = builder.config("spark.ui.enabled", "false")
            builder = builder.config(
                "spark.driver.extraJavaOptions", f"-Dlog4j.configurationFile=file:{log4j}"
            )
            if scratch is not None:
                os.environ["SPARK_LOCAL_DIRS"] = scratch  # read by the JVM about to start
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # py4j/JVM start-up errors carry no patient data, but stay short
        raise SparkStartError(
            f"could not start Spark on {master or 'the spark-submit master'}: {_first_line(exc)}"
        ) from exc
    session.sparkContext.setLogLevel("ERROR")
    return session


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
