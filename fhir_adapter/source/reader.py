"""Turn paths into a stream of FHIR resources: single resources, Bundles of any type, bulk NDJSON, gzip.

Nothing here raises for a bad input: each problem becomes an ``InputProblem`` in the stream, so one bad
file or line never stops the others. Nothing an input controls is unbounded either: only regular files
are opened (a FIFO or a device would block or never end), folders are walked without recursion and
without visiting one twice (symlink loops), a line, a document and a decompressed file each have a size
cap (``ReadLimits``), and Bundles nested in Bundles are unpacked without recursion, to a fixed depth.
"""

from __future__ import annotations

import errno
import gzip
import io
import logging
import os
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, cast

import orjson

from fhir_adapter.model import InputProblem, Resource
from fhir_adapter.settings import ReadLimits
from fhir_adapter.source.references import localise_bundle

log = logging.getLogger(__name__)

LineFilter = tuple[bytes, ...] | None
FHIR_SUFFIXES = (".json", ".ndjson", ".jsonl", ".json.gz", ".ndjson.gz", ".jsonl.gz")
MAX_BUNDLE_DEPTH = 8
_CHUNK = 1 << 20
_BLOCK = 1 << 22  # filtered reads search this much at a time


@dataclass(frozen=True, slots=True)
class Item:
    resource: Resource
    file: str
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Line:
    """One NDJSON line as bytes, for callers that decide from the bytes whether to parse it."""

    data: bytes
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class LineBlock:
    """Consecutive NDJSON lines as bytes, without their newlines: ``lines[0]`` is line ``first``. A
    line too long to hold is reported on its own and is ``b""`` here (blank lines are ``b""`` too)."""

    file: str
    first: int
    lines: list[bytes]


def display(path: Path | str) -> str:
    """A path as text that any JSON writer accepts: undecodable bytes of a file name become escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def input_files(paths: Iterable[Path]) -> Iterator[Path | InputProblem]:
    """Every FHIR file under ``paths``, in a stable order. Folders are walked with an explicit stack (any
    depth), links to folders are followed once (a folder reached twice, as by a link loop, is skipped and
    reported), and only regular files are yielded: anything else is reported and skipped."""
    for path in paths:
        try:
            info = path.stat()
        except OSError as exc:
            yield InputProblem(display(path), _no_such(exc))
            continue
        if stat.S_ISDIR(info.st_mode):
            yield from _walk(path)
        elif stat.S_ISREG(info.st_mode):
            yield path
        else:
            yield InputProblem(display(path), f"not a regular file ({kind_of(info.st_mode)}): skipped")


def _walk(top: Path) -> Iterator[Path | InputProblem]:
    seen: set[tuple[int, int]] = set()
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            info = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            yield InputProblem(
                display(folder), f"cannot list the folder ({exc.strerror or type(exc).__name__})"
            )
            continue
        key = (info.st_dev, info.st_ino)
        if key in seen:
            yield InputProblem(display(folder), "folder reached twice (a link loop?): skipped")
            continue
        seen.add(key)
        subfolders = []
        for entry in entries:
            path = Path(entry.path)
            try:
                mode = entry.stat(follow_symlinks=True).st_mode
            except OSError:
                if entry.name.lower().endswith(FHIR_SUFFIXES):
                    yield InputProblem(display(path), "broken link or unreadable entry: skipped")
                continue
            if stat.S_ISDIR(mode):
                subfolders.append(path)
            elif entry.name.lower().endswith(FHIR_SUFFIXES):
                if stat.S_ISREG(mode):
                    yield path
                else:
                    yield InputProblem(display(path), f"not a regular file ({kind_of(mode)}): skipped")
        stack.extend(reversed(subfolders))  # depth first, in name order


def irregular(mode: int) -> str | None:
    """None for a regular file or a folder; else what it is (``"a FIFO"``, ...), as problems name it."""
    return None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else kind_of(mode)


def kind_of(mode: int) -> str:
    """What a file that is not a regular one is, as problems name it."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def _no_such(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "no such file or folder"
    return f"cannot read ({exc.strerror or type(exc).__name__})"


class _Capped(io.RawIOBase):
    """A decompressed stream that stops at a size: a small .gz that expands to gigabytes is reported."""

    def __init__(self, inner: IO[bytes], limit: int, underlying: IO[bytes]) -> None:
        self._inner = inner
        self._underlying = underlying  # GzipFile does not close the file it reads
        self._left = limit
        self.exceeded = False

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._underlying.close()
            super().close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            self.exceeded = True
            return 0
        view = memoryview(buffer)[: min(len(buffer), self._left)]
        data = self._inner.read(len(view))
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)


class _TooLarge(Exception):
    pass


def open_regular(path: Path) -> tuple[IO[bytes], int]:
    """Open without blocking and check what was opened is a regular file (the walk's check can be raced)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotRegular(kind_of(info.st_mode))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), info.st_size


class NotRegular(Exception):
    """What was opened is not a regular file (a FIFO or a device would block or never end)."""


def read_problem(name: str, exc: NotRegular | OSError | EOFError | zlib.error) -> InputProblem:
    """A file that could not be opened or read to its end, worded alike wherever it is read (whole, or
    a byte range of it)."""
    if isinstance(exc, NotRegular):
        return InputProblem(name, f"not a regular file ({exc}): skipped")
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return InputProblem(name, f"cannot read: {detail}")


def _open(
    opener: Callable[[], tuple[IO[bytes], int]], limits: ReadLimits
) -> tuple[IO[bytes], _Capped | None]:
    buffered, size = opener()
    if not isinstance(buffered, io.BufferedReader) or buffered.peek(2)[:2] != b"\x1f\x8b":
        return buffered, None
    limit = min(limits.max_decompressed_bytes, max(size, 1) * limits.max_compression_ratio)
    capped = _Capped(gzip.GzipFile(fileobj=buffered), limit, buffered)  # type: ignore[arg-type]
    return io.BufferedReader(capped, _CHUNK), capped


BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, which some exporters write first


def first_line(fh: IO[bytes], limit: int) -> bytes:
    """The file's first line (at most ``limit`` + 1 bytes), without a BOM: what decides how it is read."""
    return fh.readline(limit + 1).removeprefix(BOM)


def is_binary(first_line: bytes) -> bool:
    return b"\x00" in first_line[:1024]


def is_ndjson(filename: str, first_line: bytes) -> bool:
    return named_ndjson(filename) or object_line(first_line) is not None


def named_ndjson(filename: str) -> bool:
    return filename.lower().removesuffix(".gz").endswith((".ndjson", ".jsonl"))


def object_line(line: bytes) -> Any:
    """The JSON object a line holds by itself, else None: a .json file whose first line is one is NDJSON."""
    stripped = line.strip()
    if stripped.startswith(b"{") and stripped.endswith(b"}"):
        try:
            return orjson.loads(stripped)
        except orjson.JSONDecodeError:
            return None
    return None


def read_file(
    path: Path, line_filter: LineFilter = None, limits: ReadLimits | None = None, raw: bool = False
) -> Iterator[Item | Line | InputProblem]:
    """Resources of one file. ``line_filter``: NDJSON lines containing none of these byte strings are
    skipped unparsed. ``raw``: NDJSON lines come as ``Line`` bytes, unparsed (see ``parse_line``)."""
    return cast(
        Iterator[Item | Line | InputProblem],
        _read(display(path), path.name, lambda: open_regular(path), line_filter, limits, raw),
    )


def read_bytes(
    name: str,
    filename: str,
    data: bytes,
    line_filter: LineFilter = None,
    limits: ReadLimits | None = None,
    raw: bool = False,
) -> Iterator[Item | Line | InputProblem]:
    """A whole file already in memory, read exactly as :func:`read_file` reads it from disk (the Spark
    engine hands files over as bytes). ``name``: how problems cite it; ``filename``: its base name."""
    opener = lambda: (io.BufferedReader(io.BytesIO(data)), len(data))  # noqa: E731
    return cast(Iterator[Item | Line | InputProblem], _read(name, filename, opener, line_filter, limits, raw))


def _read(
    name: str,
    filename: str,
    opener: Callable[[], tuple[IO[bytes], int]],
    line_filter: LineFilter,
    limits: ReadLimits | None,
    raw: bool,
    blocks: bool = False,
) -> Iterator[Item | Line | LineBlock | InputProblem]:
    limits = limits or ReadLimits()
    capped: _Capped | None = None
    try:
        fh, capped = _open(opener, limits)
        with fh:
            first = first_line(fh, limits.max_line_bytes)
            if is_binary(first):
                yield InputProblem(name, "binary file, not FHIR JSON")
                return
            named = named_ndjson(filename)
            doc = None if named else object_line(first)
            if doc is not None and len(first) <= limits.max_line_bytes:
                rest = fh.read(1)
                if not rest:
                    # The whole file is one line holding one object (a server's response saved as it
                    # came, a Bundle): what the NDJSON read gives, from the parse that just told.
                    if not line_filter or any(w in first for w in line_filter):
                        yield from resources_of(name, doc, 1)
                    return
                first += rest
            if doc is not None or named:
                yield from _ndjson(name, first, fh, line_filter, limits, raw, blocks)
            else:
                data = first + fh.read(limits.max_document_bytes + 1 - len(first))
                if len(data) > limits.max_document_bytes:
                    raise _TooLarge(f"larger than {limits.max_document_bytes} bytes: not read")
                doc = _whole(name, data)
                if isinstance(doc, InputProblem) and _lines_of_resources(data):
                    # NDJSON after all, behind a blank or broken first line: it costs that line, not the file.
                    yield from _ndjson(name, b"", io.BytesIO(data), line_filter, limits, raw, blocks)
                elif isinstance(doc, InputProblem):
                    yield doc
                else:
                    yield from resources_of(name, doc)
    except _TooLarge as exc:
        yield InputProblem(name, str(exc))
        return
    except (NotRegular, OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        yield read_problem(name, exc)
        return
    if capped is not None and capped.exceeded:
        yield InputProblem(
            name,
            "decompresses to more than the limit (max_decompressed_bytes / max_compression_ratio): "
            "the rest of the file was not read",
        )


def _whole(name: str, data: bytes) -> Any:
    """The document, or the problem that it is none."""
    if not data.strip():
        return InputProblem(name, "empty file")
    if b"\x00" in data[:4096]:
        return InputProblem(name, "binary file, not FHIR JSON")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return InputProblem(name, f"not valid JSON ({str(exc).split(':')[0]})")


def _lines_of_resources(data: bytes, look_at: int = 20) -> bool:
    """Whether a document that is not JSON has lines that are whole resources by themselves (so it is
    NDJSON whose first line is blank or broken). A pretty-printed document's lines never are: a line
    that is a whole object is a coding or a reference, without a resourceType."""
    seen = 0
    for line in data.split(b"\n", 4 * look_at)[: 4 * look_at]:
        line = line.strip()
        if not line:
            continue
        seen += 1
        if seen > look_at:
            return False
        if line.startswith(b"{") and line.endswith(b"}"):
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("resourceType"), str):
                return True
    return False


def _ndjson(
    name: str,
    first: bytes,
    fh: IO[bytes],
    line_filter: LineFilter,
    limits: ReadLimits,
    raw: bool,
    blocks: bool = False,
) -> Iterator[Item | Line | LineBlock | InputProblem]:
    if line_filter:
        for kept in filtered_lines(name, first, fh, line_filter, limits.max_line_bytes):
            if raw:
                yield kept
            else:
                yield from parse_line(kept)
        return
    for block in blocks_of(name, first, fh, limits.max_line_bytes):
        if blocks or isinstance(block, InputProblem):
            yield block
            continue
        for lineno, data in enumerate(block.lines, block.first):
            if not data.strip():
                continue
            if raw:
                yield Line(data, name, lineno)
            else:
                yield from parse_line(Line(data, name, lineno))


class _Chunks:
    """The file in blocks of whole lines, without copying them out: iterating gives ``(buf, end)``, the
    block being ``buf[:end]``, or ``(b"", -1)`` for a line longer than ``limit`` that was read past
    (never held). A block holds complete lines only, but the file's last may lack its newline. The
    consumer adds the block's lines to ``lineno`` (it counts them anyway: a split, or a search for
    lines); ``lineno`` is then the number of lines before the next block, and of the file at the end."""

    def __init__(self, first: bytes, fh: IO[bytes], limit: int) -> None:
        self._first = first
        self._fh = fh
        self._limit = limit
        self.lineno = 0

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        buf = self._first
        skipping = False  # inside an overlong line: drop bytes up to its end
        while True:
            block = self._fh.read(_BLOCK)
            buf = buf + block if buf else block
            if skipping:
                nl = buf.find(b"\n")
                if nl < 0:
                    buf = b""
                    if block:
                        continue
                    return
                skipping = False
                buf = buf[nl + 1 :]
            end = len(buf) if not block else buf.rfind(b"\n") + 1  # complete lines only, but at the end
            if end:
                yield buf, end
                buf = buf[end:]
            if len(buf) > self._limit + 1:  # no newline in sight: an overlong line, read past, never held
                yield b"", -1
                self.lineno += 1
                buf = b""
                skipping = True
            if not block:
                return


def blocks_of(name: str, first: bytes, fh: IO[bytes], limit: int) -> Iterator[LineBlock | InputProblem]:
    """Every line, a block at a time: what the line-by-line read gives, without its per-line calls."""
    chunks = _Chunks(first, fh, limit)
    for buf, end in chunks:
        if end < 0:
            yield InputProblem(name, f"line longer than {limit} bytes: skipped", line=chunks.lineno + 1)
            continue
        chunk = buf if end == len(buf) else buf[:end]
        lines = chunk.split(b"\n")
        if chunk.endswith(b"\n"):
            lines.pop()
        before = chunks.lineno
        chunks.lineno += len(lines)
        if len(chunk) > limit:  # only then can one of its lines be too long
            for at, line in enumerate(lines):
                if len(line) > limit:
                    yield InputProblem(name, f"line longer than {limit} bytes: skipped", line=before + at + 1)
                    lines[at] = b""
        yield LineBlock(name, before + 1, lines)


def filtered_lines(
    name: str,
    first: bytes,
    fh: IO[bytes],
    wanted: tuple[bytes, ...],
    limit: int,
    tally: list[int] | None = None,
) -> Iterator[Line]:
    """The lines holding one of the ``wanted`` strings, found by searching whole blocks with
    ``bytes.find`` (memchr speed; a regular expression alternation is several times slower) rather than
    line by line: most lines of an export do not mention the gate's types. The same
    lines, with the same numbers, as the line-by-line read, but no problems: a line longer than
    ``limit`` is passed over in silence (a filtered read is pass 1; pass 2 reads every line and reports
    it). ``tally``: its first item is set to the number of lines once the file is read (a byte range's
    lines, for the ranges after it)."""
    chunks = _Chunks(first, fh, limit)
    for buf, end in chunks:
        if end < 0:
            continue
        lineno = chunks.lineno  # lines before ``at``
        at = 0
        for start, stop in _matching_lines(buf, end, wanted):
            lineno += buf.count(b"\n", at, start) + 1
            line = buf[start:stop]
            at = stop
            if len(line) - line.endswith(b"\n") <= limit and line.strip():
                yield Line(line, name, lineno)
        # A last line without its newline (the file's end) counts too.
        chunks.lineno = lineno + buf.count(b"\n", at, end) + (end > at and buf[end - 1] != 10)
    if tally is not None:
        tally[0] = chunks.lineno


def _matching_lines(buf: bytes, end: int, wanted: tuple[bytes, ...]) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of each line of ``buf[:end]`` holding a wanted string (no string holds a
    newline), in order. Each string is searched again only past the line just taken, so the work is one
    ``find`` per string per matching line, however often a line repeats it."""
    ahead = {text: buf.find(text, 0, end) for text in wanted}  # each one's next occurrence, -1: none left
    while True:
        hits = [at for at in ahead.values() if at >= 0]
        if not hits:
            return
        hit = min(hits)
        start = buf.rfind(b"\n", 0, hit) + 1
        stop = buf.find(b"\n", hit, end)
        stop = end if stop < 0 else stop + 1
        yield start, stop
        for text, at in ahead.items():
            if 0 <= at < stop:
                ahead[text] = buf.find(text, stop, end)


def parse_line(line: Line) -> Iterator[Item | InputProblem]:
    """The resources of one NDJSON line (a Bundle line gives several), or why there are none."""
    try:
        doc = orjson.loads(line.data)
    except orjson.JSONDecodeError:
        yield InputProblem(line.file, "not valid JSON", line=line.line)
        return
    yield from resources_of(line.file, doc, line.line)


def resources_of(name: str, doc: Any, line: int | None = None) -> Iterator[Item | InputProblem]:
    if not isinstance(doc, dict):
        yield InputProblem(name, "JSON is not a FHIR resource (not an object)", line=line)
        return
    rtype = doc.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        what = (
            "has no resourceType"
            if rtype is None or rtype == ""
            else "has a resourceType that is not a string"
        )
        yield InputProblem(name, f"JSON object {what}", line=line)
        return
    if rtype != "Bundle":
        yield Item(doc, name, line)
        return
    # Bundles in Bundles, unpacked with a queue and a depth limit: a self-nesting document cannot recurse.
    pending: list[tuple[Resource, int, str]] = [(doc, 0, "")]
    while pending:
        bundle, depth, where = pending.pop(0)
        entries = bundle.get("entry") or []
        if not isinstance(entries, list):
            yield InputProblem(name, f"{where}Bundle.entry is not a list", line=line)
            continue
        for index, resource in enumerate(localise_bundle(entries)):
            here = f"{where}entry[{index}]"
            if isinstance(resource, InputProblem):
                yield InputProblem(name, f"{here}: {resource.reason}", line=line)
            elif resource is None:
                continue
            elif resource.get("resourceType") == "Bundle":
                if depth + 1 >= MAX_BUNDLE_DEPTH:
                    yield InputProblem(
                        name, f"{here}: Bundles nested deeper than {MAX_BUNDLE_DEPTH}: skipped", line=line
                    )
                else:
                    pending.append((resource, depth + 1, f"{here}."))
            else:
                yield Item(resource, name, line)


def read_all(
    paths: Iterable[Path], line_filter: LineFilter = None, limits: ReadLimits | None = None
) -> Iterator[Item | InputProblem]:
    for item in read_raw(paths, line_filter, limits, raw=False):
        assert not isinstance(item, Line)
        yield item


def read_raw(
    paths: Iterable[Path], line_filter: LineFilter = None, limits: ReadLimits | None = None, raw: bool = True
) -> Iterator[Item | Line | InputProblem]:
    """Like ``read_all``, but NDJSON lines come unparsed as ``Line`` (documents still come as Items)."""
    for entry in input_files(paths):
        if isinstance(entry, InputProblem):
            yield entry
        else:
            log.debug("reading %s", display(entry))
            yield from read_file(entry, line_filter, limits, raw=raw)


def read_blocks(
    paths: Iterable[Path], limits: ReadLimits | None = None
) -> Iterator[Item | LineBlock | InputProblem]:
    """Like ``read_raw``, but NDJSON lines come many at a time, as ``LineBlock`` (blank lines included):
    a loop over every line of an export without a generator step per line."""
    for entry in input_files(paths):
        if isinstance(entry, InputProblem):
            yield entry
        else:
            yield from read_file_blocks(entry, limits)


def read_file_blocks(
    path: Path, limits: ReadLimits | None = None
) -> Iterator[Item | LineBlock | InputProblem]:
    """One file as :func:`read_blocks` reads it."""
    log.debug("reading %s", display(path))
    opener = partial(open_regular, path)
    return cast(
        Iterator[Item | LineBlock | InputProblem],
        _read(display(path), path.name, opener, None, limits, raw=True, blocks=True),
    )
