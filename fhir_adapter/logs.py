"""Logging setup: plain text on a terminal, JSON lines otherwise (cron, systemd, Kubernetes).

Log records carry resource ids and counts only. Names, MRNs and birth dates never reach a log call,
and urllib3 stays at WARNING because its DEBUG lines print full URLs with query values.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path

from fhir_adapter.output.printable import printable


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": printable(record.getMessage()),
        }
        return json.dumps(body, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def where(exc: BaseException) -> str:
    """An exception's type and stack (file:line in function), without its message: messages may quote
    the patient data that triggered them, and logs must never carry that."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    stack = " <- ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(frames[-6:]))
    return f"{type(exc).__name__} at {stack}" if stack else type(exc).__name__


def setup(verbosity: int, json_lines: bool | None = None) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    use_json = (not sys.stderr.isatty()) if json_lines is None else json_lines
    handler.setFormatter(
        JsonFormatter() if use_json else TextFormatter("%(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
