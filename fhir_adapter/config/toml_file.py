"""Reading a TOML file a site wrote (mappings, overlays, criteria, site files) as what it is, or a
``ConfigError`` naming the file (and the key, where one is at fault): never a hang, never exit 70.

A FIFO or a device is refused before it is read (``/dev/zero`` would never end, a FIFO would wait for
a writer); a file larger than any configuration is refused unread; the bytes must be UTF-8 (TOML's own
rule); nesting deeper than a parser's stack is an error, not a crash; and a number must be finite: TOML
allows ``nan`` and ``inf``, which no threshold, factor, limit or timeout can mean.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Final

from fhir_adapter.errors import ConfigError
from fhir_adapter.source.reader import NotRegular, open_regular

# A configuration is a few hundred kB at most (an overlay with 300,000 local codes is 5 MB).
MAX_BYTES: Final = 64 * 1024 * 1024


def read_toml(path: Path) -> dict[str, Any]:
    try:
        fh, size = open_regular(path)
        with fh:
            if size > MAX_BYTES:
                raise ConfigError(
                    f"{path}: larger than {MAX_BYTES // (1024 * 1024)} MB: not a configuration file"
                )
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except NotRegular as exc:
        raise ConfigError(f"{path}: not a regular file ({exc})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start}): TOML files are UTF-8") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{path}: nested too deeply") from exc
    _finite(doc, path)
    return doc


def _finite(doc: dict[str, Any], path: Path) -> None:
    """Every float of the document finite (an explicit stack: the depth is the file's, not Python's)."""
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path}: {where}: {value} is not a finite number")
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
