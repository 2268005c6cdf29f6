"""Cut an export into pieces that processes can read at the same time, and read one piece.

A piece is a whole file, or a byte range of a large plain NDJSON file that holds the lines *starting*
in it: the reader of a range skips the line the range opens inside (the previous range reads it) and
reads on past its end to finish its last line. So every line is read exactly once, wherever the cuts
fall, and a piece's lines are numbered from 1; the caller adds the lines of the pieces before it (known
once pass 1 has counted them) so that problems cite the same line numbers as a sequential read.
Compressed files and JSON documents cannot be cut: they are one piece each.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fhir_adapter.model import InputProblem
from fhir_adapter.settings import ReadLimits
from fhir_adapter.source.reader import (
    BOM,
    Item,
    Line,
    LineBlock,
    NotRegular,
    blocks_of,
    display,
    filtered_lines,
    first_line,
    input_files,
    is_binary,
    is_ndjson,
    open_regular,
    read_file,
    read_file_blocks,
    read_problem,
)


@dataclass(frozen=True, slots=True)
class Piece:
    """``path`` whole (``end`` None), or the lines starting in ``[start, end)`` of a plain NDJSON file."""

    path: Path
    start: int = 0
    end: int | None = None


def plan(paths: Iterable[Path], piece_bytes: int, limits: ReadLimits) -> list[Piece | InputProblem]:
    """The input in reading order: pieces, and the problems of what cannot be read at all (in place)."""
    planned: list[Piece | InputProblem] = []
    for entry in input_files(paths):
        if isinstance(entry, InputProblem):
            planned.append(entry)
            continue
        size = _splittable_size(entry, limits)
        if size is None or size <= piece_bytes:
            planned.append(Piece(entry))
            continue
        cuts = list(range(0, size, piece_bytes))
        planned += [Piece(entry, start, min(start + piece_bytes, size)) for start in cuts]
    return planned


def _splittable_size(path: Path, limits: ReadLimits) -> int | None:
    """The size of a plain (uncompressed) NDJSON file; None for anything else, or a file that cannot be
    opened now (read whole, it reports its own problem exactly as a sequential read does)."""
    try:
        fh, size = open_regular(path)
        with fh:
            head = fh.read(2)
            if head == b"\x1f\x8b":
                return None
            fh.seek(0)
            first = first_line(fh, min(limits.max_line_bytes, 1 << 20))
            one_line = fh.tell() >= size
    except (OSError, NotRegular):
        return None
    if is_binary(first) or one_line:
        # Binary: read whole, it is reported as such. One line: nothing to cut, and the whole read parses
        # it once where this would parse it to tell.
        return None
    return size if is_ndjson(path.name, first) else None


def piece_lines(
    piece: Piece, wanted: tuple[bytes, ...], limits: ReadLimits, tally: list[int]
) -> Iterator[Item | Line | InputProblem]:
    """Pass 1's read of a piece: the lines holding a ``wanted`` string (documents whole); ``tally[0]``
    is set to the number of lines starting in a byte range (what the ranges after it are numbered past)."""
    if piece.end is None:
        if wanted:  # () only counts lines, and a whole file's count is never needed
            yield from read_file(piece.path, wanted, limits, raw=True)
        return
    try:
        with _range(piece) as (fh, first):
            yield from filtered_lines(display(piece.path), first, fh, wanted, limits.max_line_bytes, tally)
    except (OSError, NotRegular):
        return  # pass 2 reports it


def piece_blocks(piece: Piece, limits: ReadLimits) -> Iterator[Item | LineBlock | InputProblem]:
    """Pass 2's read of a piece: every line, in blocks, numbered from the piece's first line."""
    if piece.end is None:
        yield from read_file_blocks(piece.path, limits)
        return
    try:
        with _range(piece) as (fh, first):
            yield from blocks_of(display(piece.path), first, fh, limits.max_line_bytes)
    except (NotRegular, OSError) as exc:  # replaced or gone since it was planned
        yield read_problem(display(piece.path), exc)


class _range:
    """The file positioned at the piece's first line; reads end with the line that crosses ``end``."""

    def __init__(self, piece: Piece) -> None:
        assert piece.end is not None
        self._piece = piece
        self._fh: IO[bytes] | None = None

    def __enter__(self) -> tuple[IO[bytes], bytes]:
        piece = self._piece
        assert piece.end is not None
        raw, _ = open_regular(piece.path)
        self._fh = raw
        start = piece.start
        if start > 0:
            raw.seek(start - 1)
            if raw.read(1) != b"\n":  # the range opens inside a line: the previous piece reads it
                while True:
                    chunk = raw.read(1 << 16)
                    nl = chunk.find(b"\n")
                    if not chunk or nl >= 0:
                        start = raw.tell() - len(chunk) + nl + 1 if chunk else raw.tell()
                        break
            raw.seek(start)
        bounded = io.BufferedReader(_Bounded(raw, max(piece.end - start, 0)), 1 << 20)
        first = b"" if start else bounded.read(3)
        return bounded, first.removeprefix(BOM)

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()


class _Bounded(io.RawIOBase):
    """``inner`` up to ``left`` bytes, then on to the end of the line under way, then end of file."""

    def __init__(self, inner: IO[bytes], left: int) -> None:
        self._inner = inner
        self._left = left
        self._done = left == 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        if self._done:
            return 0
        if self._left > 0:
            data = self._inner.read(min(len(view), self._left))
            if not data:
                self._done = True
                return 0
            self._left -= len(data)
            if self._left == 0 and data.endswith(b"\n"):
                self._done = True  # the range ends on a line end: nothing to finish
            view[: len(data)] = data
            return len(data)
        data = self._inner.read(min(len(view), 1 << 16))
        nl = data.find(b"\n")
        if not data:
            self._done = True
            return 0
        if nl >= 0:
            data = data[: nl + 1]
            self._done = True
        view[: len(data)] = data
        return len(data)
