"""The readers that work on whole blocks must give exactly what reading line by line gives, whatever
the block boundaries: pass 1's filtered read keeps the same lines with the same numbers, and pass 2's
block read yields every line, numbered alike, with the same overlong lines reported."""

from __future__ import annotations

import io
import random
import re
from collections.abc import Iterator

import pytest

from fhir_adapter.model import InputProblem
from fhir_adapter.source import reader

WANTED = (b'"Condition"', b"\\u")
FILTER = re.compile(rb'"Condition"|\\u')
PIECES = (
    b'{"resourceType":"Condition","subject":{"reference":"Patient/p1"}}',
    b'{"resourceType":"Observation","subject":{"reference":"Patient/p1"}}',
    b"",
    b"   ",
    b'{"resourceType":"Observation","note":"\\u0043ondition"}',
    b"x" * 50,
    b'"Condition" and "Condition" again',
    b'{"long":"' + b"y" * 120 + b'","resourceType":"Condition"}',
)


def reference_lines(data: bytes, limit: int) -> Iterator[bytes | None]:
    """The plain line-by-line read (``readline``): None for a line longer than ``limit``."""
    fh = io.BufferedReader(io.BytesIO(data))
    line = fh.readline(limit + 1)
    while line:
        if len(line) > limit and not line.endswith(b"\n"):
            while not line.endswith(b"\n"):
                line = fh.readline(1 << 20)
                if not line:
                    break
            yield None
        else:
            yield line
        line = fh.readline(limit + 1)


def line_by_line(data: bytes, limit: int) -> list[tuple[int, bytes]]:
    kept = []
    for n, line in enumerate(reference_lines(data, limit), start=1):
        if line is not None and FILTER.search(line) and line.strip():
            kept.append((n, line))
    return kept


def by_blocks(data: bytes, limit: int) -> list[tuple[int, bytes]]:
    fh = io.BufferedReader(io.BytesIO(data))
    return [(k.line, k.data) for k in reader.filtered_lines("f", fh.readline(limit + 1), fh, WANTED, limit)]


@pytest.mark.parametrize("block", [1, 3, 16, 4096])
def test_block_search_keeps_the_lines_and_numbers_a_line_by_line_read_keeps(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader, "_BLOCK", block)
    rng = random.Random(block)
    for _ in range(400):
        data = b"\n".join(rng.choice(PIECES) for _ in range(rng.randint(0, 25)))
        data += b"\n" if rng.random() < 0.5 else b""
        limit = rng.choice([20, 64, 100, 1000])
        assert by_blocks(data, limit) == line_by_line(data, limit), (data, limit)


def test_an_endless_line_is_passed_over_without_being_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "_BLOCK", 1024)
    data = b'{"resourceType":"Condition"}\n' + b'"Condition"' * 100_000 + b'\n{"resourceType":"Condition"}\n'
    assert [k.line for k in by_blocks_iter(data, 4096)] == [1, 3]


def by_blocks_iter(data: bytes, limit: int) -> list[reader.Line]:
    fh = io.BufferedReader(io.BytesIO(data))
    return list(reader.filtered_lines("f", fh.readline(limit + 1), fh, WANTED, limit))


def every_line(data: bytes, limit: int) -> tuple[list[tuple[int, bytes]], list[int]]:
    """(number, line without its newline) of each non-blank line, and the numbers of overlong lines."""
    kept, long = [], []
    for n, line in enumerate(reference_lines(data, limit), start=1):
        if line is None:
            long.append(n)
        elif line.strip():
            kept.append((n, line.rstrip(b"\n")))
    return kept, long


def block_read(data: bytes, limit: int) -> tuple[list[tuple[int, bytes]], list[int]]:
    fh = io.BufferedReader(io.BytesIO(data))
    kept, long = [], []
    for item in reader.blocks_of("f", fh.readline(limit + 1), fh, limit):
        if isinstance(item, InputProblem):
            assert item.line is not None and "longer than" in item.reason
            long.append(item.line)
            continue
        kept += [(n, line) for n, line in enumerate(item.lines, item.first) if line.strip()]
    return kept, sorted(long)


@pytest.mark.parametrize("block", [1, 3, 16, 4096])
def test_block_read_yields_every_line_and_reports_overlong_ones_as_a_line_by_line_read_does(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader, "_BLOCK", block)
    rng = random.Random(block + 1)
    for _ in range(400):
        data = b"\n".join(rng.choice(PIECES) for _ in range(rng.randint(0, 25)))
        data += b"\n" if rng.random() < 0.5 else b""
        limit = rng.choice([20, 64, 100, 1000])
        assert block_read(data, limit) == every_line(data, limit), (data, limit)


@pytest.mark.parametrize("block", [1, 7, 4096])
def test_the_tally_counts_every_line_of_the_file(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "_BLOCK", block)
    rng = random.Random(block)
    for _ in range(200):
        data = b"\n".join(rng.choice(PIECES) for _ in range(rng.randint(0, 25)))
        data += b"\n" if rng.random() < 0.5 else b""
        limit = rng.choice([20, 1000])
        fh = io.BufferedReader(io.BytesIO(data))
        tally = [0]
        list(reader.filtered_lines("f", fh.readline(limit + 1), fh, WANTED, limit, tally))
        assert tally[0] == sum(1 for _ in reference_lines(data, limit)), (data, limit)
