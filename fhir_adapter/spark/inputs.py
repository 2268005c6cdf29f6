"""Which files a Spark run reads, in the local engine's order, named as the local engine names them.

The local reader walks each PATH (``os.walk``: a folder's files by name, then its subfolders by name) and
cites files as ``PATH/relative``; problems and duplicate resolution ("the first occurrence wins") follow
that order. A Spark run lists the same files through Hadoop's file systems (so ``s3a://``, ``abfss://``,
``gs://``, ``hdfs://`` and local paths all work) and gives each one its position in that order.

How each file is read:

- ``lines``: plain NDJSON (``.ndjson``, ``.jsonl``) that starts like text. Spark splits it into blocks
  and lines on the executors; line numbers are put back together from the per-block line counts.
- ``whole``: everything else (Bundles and other ``.json``, every ``.gz``, NDJSON that starts with a byte
  order mark, gzip bytes or a NUL): one task reads the whole file with the local reader's own code, so
  it is read exactly as locally (a corrupt gzip or a binary file is one problem, not a failed job). Such
  a file has to fit in a task's memory (Spark caps one file at 2 GB).
- ``driver``: what Spark's file sources skip (names starting with ``_`` or ``.``, empty files): read on
  the driver, as a whole file, up to :data:`DRIVER_READ_LIMIT` bytes (larger ones are a problem that says
  to rename them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from fhir_adapter.model import InputProblem
from fhir_adapter.source.reader import FHIR_SUFFIXES, NotRegular, read_problem

BOM = b"\xef\xbb\xbf"

How = Literal["lines", "whole", "driver"]
DRIVER_READ_LIMIT = 256 * 1024 * 1024
HEAD_BYTES = 1024 + len(BOM) + 1  # enough to judge the first line the way the local reader does
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # two letters at least: "C:" is a drive, not a scheme


@dataclass(frozen=True, slots=True)
class Entry:
    """A file or folder as a file system lists it: ``uri`` is its qualified Hadoop path."""

    uri: str
    name: str
    is_dir: bool
    size: int


class FileSystem(Protocol):
    def stat(self, path: str) -> Entry | None:
        """The file or folder at ``path`` (a local path or a URI), None when there is none."""
        ...

    def children(self, uri: str) -> list[Entry]: ...

    def head(self, uri: str, n: int) -> bytes:
        """The first ``n`` bytes of a file (fewer for a shorter file)."""
        ...

    def special(self, uri: str) -> str | None:
        """What a listed file really is when it is not a regular file on a local disk (``"a FIFO"``, ``"a
        device"``, ``"a socket"``), else None. Hadoop lists such a file as an empty file, and opening a
        FIFO waits for a writer for ever."""
        ...


@dataclass(frozen=True, slots=True)
class InputFile:
    index: int  # position in the local engine's reading order (missing paths take a position too)
    uri: str
    display: str  # how the local engine cites the file in problems
    name: str
    size: int
    how: How


@dataclass(frozen=True, slots=True)
class InputPlan:
    files: tuple[InputFile, ...]
    problems: tuple[tuple[int, InputProblem], ...]  # (position, problem): paths that do not exist

    def by_how(self, how: How) -> tuple[InputFile, ...]:
        return tuple(f for f in self.files if f.how == how)


def is_uri(path: str) -> bool:
    return bool(_SCHEME.match(path))


def spark_skips(name: str) -> bool:
    """Names Spark's file sources leave out even when given explicitly (Hadoop's hidden files)."""
    return name.startswith(("_", ".")) or name.endswith("._COPYING_")


def plan_inputs(fs: FileSystem, paths: Sequence[str], threads: int = 16) -> InputPlan:
    """Every input file in the local engine's order, each with how Spark reads it."""
    found: list[tuple[str, Entry] | InputProblem] = []
    seen: set[str] = set()
    for path in paths:
        top = fs.stat(path)
        if top is None:
            found.append(InputProblem(_display(path, ()), "no such file or folder"))
            continue
        walked = _walk(fs, top, ()) if top.is_dir else iter([((), top)])
        for rel, entry in walked:
            # The same file named twice is read once: its resources would only be duplicates.
            if entry.uri in seen:
                continue
            seen.add(entry.uri)
            kind = fs.special(entry.uri)
            if kind is not None:  # as the local reader says it, and never opened
                found.append(read_problem(_display(path, rel), NotRegular(kind)))
            else:
                found.append((_display(path, rel), entry))
    heads = _heads(fs, [f[1] for f in found if isinstance(f, tuple) and _may_be_lines(f[1])], threads)
    files: list[InputFile] = []
    problems: list[tuple[int, InputProblem]] = []
    for position, item in enumerate(found):
        if isinstance(item, InputProblem):
            problems.append((position, item))
            continue
        display, entry = item
        how = _how(entry, heads)
        if how == "driver" and entry.size > DRIVER_READ_LIMIT:
            problems.append((position, InputProblem(display, _TOO_LARGE)))
        else:
            files.append(InputFile(position, entry.uri, display, entry.name, entry.size, how))
    return InputPlan(tuple(files), tuple(problems))


_TOO_LARGE = (
    "not read: Spark skips names starting with '_' or '.', and the file is too large to read on the "
    "driver; rename it"
)


def _walk(fs: FileSystem, folder: Entry, rel: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Entry]]:
    """os.walk's order: the folder's FHIR files by name, then each subfolder by name."""
    entries = sorted(fs.children(folder.uri), key=lambda e: e.name)
    for entry in entries:
        if not entry.is_dir and entry.name.lower().endswith(FHIR_SUFFIXES):
            yield (*rel, entry.name), entry
    for entry in entries:
        if entry.is_dir:
            yield from _walk(fs, entry, (*rel, entry.name))


def _display(path: str, rel: tuple[str, ...]) -> str:
    if is_uri(path):
        return "/".join([path.rstrip("/"), *rel]) if rel else path
    return str(Path(path).joinpath(*rel))


def _may_be_lines(entry: Entry) -> bool:
    return entry.name.lower().endswith((".ndjson", ".jsonl")) and not spark_skips(entry.name)


def _heads(fs: FileSystem, entries: list[Entry], threads: int) -> dict[str, bytes]:
    if not entries:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(entries)))) as pool:
        heads = list(pool.map(lambda e: fs.head(e.uri, HEAD_BYTES), entries))
    return {e.uri: head for e, head in zip(entries, heads, strict=True)}


def _how(entry: Entry, heads: dict[str, bytes]) -> How:
    if spark_skips(entry.name) or entry.size == 0:
        return "driver"  # Spark's file sources also leave empty files out
    head = heads.get(entry.uri)
    if head is None:
        return "whole"
    first = head.split(b"\n", 1)[0]
    # What read_file treats apart: gzip bytes (it sniffs them), a byte order mark (it strips it), a NUL
    # in the first line (one "binary file" problem): all read whole, by read_file's own code.
    if head.startswith((b"\x1f\x8b", BOM)) or b"\x00" in first[:1024]:
        return "whole"
    return "lines"
