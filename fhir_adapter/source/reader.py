"""Turn paths into a stream of FHIR resources: single resources, Bundles of any type, bulk NDJSON, gzip.

Nothing here raises for a bad input: each problem becomes an ``InputProblem`` in the stream, so one bad
file or line never stops the others.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from fhir_adapter.model import InputProblem, Resource
from fhir_adapter.source.references import localise_bundle

log = logging.getLogger(__name__)

LineFilter = tuple[bytes, ...] | None
FHIR_SUFFIXES = (".json", ".ndjson", ".jsonl", ".json.gz", ".ndjson.gz", ".jsonl.gz")


@dataclass(frozen=True, slots=True)
class Item:
    resource: Resource
    file: str
    line: int | None = None


def input_files(paths: Iterable[Path]) -> Iterator[Path | InputProblem]:
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if name.lower().endswith(FHIR_SUFFIXES):
                        yield Path(root) / name
        elif path.is_file():
            yield path
        else:
            yield InputProblem(str(path), "no such file or folder")


def _open(path: Path) -> IO[bytes]:
    raw = path.open("rb")
    head = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


def _is_ndjson(path: Path, first_line: bytes) -> bool:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".ndjson", ".jsonl")):
        return True
    # A .json file that is really NDJSON: the first line is a complete object.
    stripped = first_line.strip()
    if stripped.startswith(b"{") and stripped.endswith(b"}"):
        try:
            orjson.loads(stripped)
        except orjson.JSONDecodeError:
            return False
        return True
    return False


def read_file(path: Path, line_filter: LineFilter = None) -> Iterator[Item | InputProblem]:
    """Resources of one file. ``line_filter``: NDJSON lines containing none of these byte strings are
    skipped unparsed."""
    name = str(path)
    try:
        with _open(path) as fh:
            first = fh.readline().removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM (Windows exports)
            if b"\x00" in first[:1024]:
                yield InputProblem(name, "binary file, not FHIR JSON")
                return
            if _is_ndjson(path, first):
                yield from _ndjson(name, first, fh, line_filter)
                return
            data = first + fh.read()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        yield InputProblem(name, f"cannot read: {type(exc).__name__}: {exc}")
        return
    if not data.strip():
        yield InputProblem(name, "empty file")
        return
    if b"\x00" in data[:4096]:
        yield InputProblem(name, "binary file, not FHIR JSON")
        return
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        yield InputProblem(name, f"not valid JSON ({str(exc).split(':')[0]})")
        return
    yield from _document(name, doc)


def _ndjson(name: str, first: bytes, fh: IO[bytes], line_filter: LineFilter) -> Iterator[Item | InputProblem]:
    lineno = 0
    for line in _chain(first, fh):
        lineno += 1
        if not line.strip() or (line_filter is not None and not any(f in line for f in line_filter)):
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield InputProblem(name, "not valid JSON", line=lineno)
            continue
        yield from _document(name, doc, lineno)


def _chain(first: bytes, fh: IO[bytes]) -> Iterator[bytes]:
    yield first
    yield from fh


def _document(name: str, doc: Any, line: int | None = None) -> Iterator[Item | InputProblem]:
    if not isinstance(doc, dict):
        yield InputProblem(name, "JSON is not a FHIR resource (not an object)", line=line)
        return
    rtype = doc.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        yield InputProblem(name, "JSON object has no resourceType", line=line)
        return
    if rtype == "Bundle":
        yield from _bundle(name, doc, line)
        return
    yield Item(doc, name, line)


def _bundle(name: str, bundle: Resource, line: int | None) -> Iterator[Item | InputProblem]:
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        yield InputProblem(name, "Bundle.entry is not a list", line=line)
        return
    resources = localise_bundle(entries)
    for index, resource in enumerate(resources):
        if isinstance(resource, InputProblem):
            yield InputProblem(name, f"entry[{index}]: {resource.reason}", line=line)
        elif resource is not None:
            if resource.get("resourceType") == "Bundle":
                yield from _bundle(name, resource, line)
            else:
                yield Item(resource, name, line)


def read_all(paths: Iterable[Path], line_filter: LineFilter = None) -> Iterator[Item | InputProblem]:
    for entry in input_files(paths):
        if isinstance(entry, InputProblem):
            yield entry
        else:
            log.debug("reading %s", entry)
            yield from read_file(entry, line_filter)
