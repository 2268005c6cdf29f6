"""Both passes of the file index on several processes: each reads pieces of the export
(:mod:`fhir_adapter.source.pieces`), the main process merges what they found in reading order.

Pass 1 gives, per piece, the patients its gate lines admit, the counts of the gate's types and the
number of lines (so pass 2 can number each piece's lines as a sequential read would). Pass 2 gives,
per piece, the :class:`~fhir_adapter.source.intake.Intake` tallies; the candidates' rows stay in the
reader's own part file (tagged with their piece, so they can be read back in reading order) and never
cross to the main process. Results are taken in piece order (``fetch_pool.in_order``), with no more
than two pieces per process read ahead, so memory is bounded by the pieces in flight, not by the export.
"""

from __future__ import annotations

import gc
import os
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_adapter.model import InputProblem
from fhir_adapter.screening import Gate
from fhir_adapter.settings import ReadLimits
from fhir_adapter.source.fetch_pool import in_order
from fhir_adapter.source.grouping import Row
from fhir_adapter.source.intake import GateTally, Intake
from fhir_adapter.source.pieces import Piece, piece_blocks, piece_lines
from fhir_adapter.source.row_chunks import SPOOL_PAGES, pack


@dataclass(frozen=True, slots=True)
class Gated:
    """Pass 1 of one piece."""

    lines: int
    found: frozenset[str]
    counts: Counter[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Taken:
    """Pass 2 of one piece: an Intake's tallies, and where the rows it kept are."""

    problems: list[InputProblem]
    read: int
    skipped: Counter[str]
    patients: list[tuple[str]]
    medications: list[tuple[str, bytes]]
    part: str  # the part file the kept rows were written to ("" for none: none kept, or kept here)
    others: set[str]  # patients whose resources were dropped (Intake.others)

    @classmethod
    def of(cls, intake: Intake, part: str) -> Taken:
        return cls(
            intake.problems,
            intake.read,
            intake.skipped,
            intake.patients,
            intake.medications,
            part,
            intake.others,
        )


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# -- the worker side ---------------------------------------------------------------------------------------
_STATE: dict[str, Any] = {}


def _start(state: dict[str, Any]) -> None:
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)  # parsed JSON is acyclic: collecting it is pure overhead
    _STATE.update(state)


def _gate_piece(piece: Piece) -> Gated:
    tally = GateTally(_STATE["gate"])
    lines = [0]
    for item in piece_lines(piece, _STATE["wanted"], _STATE["limits"], lines):
        if not isinstance(item, InputProblem):  # problems are reported by pass 2, which reads every line
            tally.add(item)
    return Gated(lines[0], frozenset(tally.found), tally.counts)


def _take_piece(job: tuple[Piece, int, int]) -> Taken:
    piece, line_offset, number = job
    rows: dict[str, list[Row]] = {}  # by patient, in reading order: one chunk each
    intake = Intake(
        _STATE["types"],
        _STATE["candidates"],
        lambda pid, row: rows.setdefault(pid, []).append(row),
        line_offset,
    )
    for item in piece_blocks(piece, _STATE["limits"]):
        intake.add(item)
    path = ""
    if rows:  # written here, not sent back: the main process only learns where they are
        db, path = _part()
        db.executemany(
            "INSERT INTO res VALUES (?, ?, ?, ?)", ((p, *pack(r), number) for p, r in rows.items())
        )
        db.commit()  # the process may be ended at any point once the piece is answered
    return Taken.of(intake, path)


def _part() -> tuple[sqlite3.Connection, str]:
    """This process's part file, made on first use beside the index."""
    if "part" not in _STATE:
        path = str(Path(_STATE["folder"]) / f"part-{os.getpid()}.sqlite")
        db = sqlite3.connect(path)
        db.executescript(
            f"PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; {SPOOL_PAGES}"
            "CREATE TABLE res (pid TEXT, meta BLOB, body BLOB, piece INTEGER);"
            # Indexed as it is written, by this process: one index built afterwards by the main process
            # would be serial work on every kept row.
            "CREATE INDEX res_pid ON res (pid);"
        )
        _STATE["part"] = (db, path)
    part: tuple[sqlite3.Connection, str] = _STATE["part"]
    return part


# -- the main side -----------------------------------------------------------------------------------------
def gate_pieces(
    pieces: Sequence[Piece], processes: int, gate: Gate, wanted: tuple[bytes, ...], limits: ReadLimits
) -> Iterator[Gated]:
    """Pass 1 of each piece, in order."""
    state = {"gate": gate, "wanted": wanted, "limits": limits}
    with ProcessPoolExecutor(processes, initializer=_start, initargs=(state,)) as pool:
        yield from in_order(pool, _gate_piece, pieces, processes * 2)


def take_pieces(
    pieces: Sequence[tuple[Piece, int, int]],
    processes: int,
    types: frozenset[str] | None,
    candidates: frozenset[str] | None,
    limits: ReadLimits,
    folder: Path,
) -> Iterator[Taken]:
    """Pass 2 of each ``(piece, lines before it, its number)``, in order; the kept rows are written to
    part files in ``folder`` (one per process), the rows of piece ``number`` tagged with it."""
    state = {"types": types, "candidates": candidates, "limits": limits, "folder": str(folder)}
    with ProcessPoolExecutor(processes, initializer=_start, initargs=(state,)) as pool:
        yield from in_order(pool, _take_piece, pieces, processes * 2)
