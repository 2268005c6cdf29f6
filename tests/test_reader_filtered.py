"""Pass 1's filtered read searches whole blocks: it must keep exactly the lines, with exactly the line
numbers, that reading line by line and testing each line would keep, whatever the block boundaries."""

from __future__ import annotations

import io
import random
import re

import pytest

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


def line_by_line(data: bytes, limit: int) -> list[tuple[int, bytes]]:
    fh = io.BufferedReader(io.BytesIO(data))
    kept = []
    for n, line in enumerate(reader._lines(fh.readline(limit + 1), fh, limit), start=1):
        if line is not None and FILTER.search(line) and line.strip():
            kept.append((n, line))
    return kept


def by_blocks(data: bytes, limit: int) -> list[tuple[int, bytes]]:
    fh = io.BufferedReader(io.BytesIO(data))
    return [(k.line, k.data) for k in reader._filtered("f", fh.readline(limit + 1), fh, WANTED, limit)]


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
    return list(reader._filtered("f", fh.readline(limit + 1), fh, WANTED, limit))
