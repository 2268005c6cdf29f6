"""Reading an export on several processes: wherever the files are cut into pieces, every line is read
once, numbered as in a whole-file read, and the index holds exactly what one process builds (rows in
order, problems with their line numbers, Patients, Medications, counts, skipped types). The same holds
however the rows are spooled: in memory, or on disk in chunks of any size."""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

import pytest

from fhir_adapter.model import InputProblem
from fhir_adapter.screening import Gate
from fhir_adapter.settings import ReadLimits
from fhir_adapter.source.patient_index import PatientIndex
from fhir_adapter.source.pieces import Piece, piece_blocks, piece_lines, plan
from fhir_adapter.source.reader import LineBlock, read_file_blocks

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from populations import write_population  # noqa: E402

LINES = (
    b'{"resourceType":"Condition","id":"c","subject":{"reference":"Patient/p1"}}',
    b'{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/p2"}}',
    b"",
    b"  \r",
    b'{"resourceType":"Observation","note":"\\u0043ondition","subject":{"reference":"Patient/p1"}}',
    b"not json",
    b'{"long":"' + b"y" * 300 + b'","resourceType":"Condition"}',
)
LIMIT = 120  # the long line is over it


def _numbered(
    items: list[LineBlock | object],
) -> tuple[list[tuple[int, bytes]], list[tuple[int | None, str]]]:
    lines, problems = [], []
    for item in items:
        if isinstance(item, LineBlock):
            lines += [(n, line) for n, line in enumerate(item.lines, item.first) if line]
        elif isinstance(item, InputProblem):
            problems.append((item.line, item.reason))
    return lines, problems


@pytest.mark.parametrize("piece_bytes", [1, 2, 5, 17, 64, 333, 10_000])
def test_pieces_cut_anywhere_read_every_line_once_numbered_as_the_whole_file(
    tmp_path: Path, piece_bytes: int
) -> None:
    rng = random.Random(piece_bytes)
    limits = ReadLimits(max_line_bytes=LIMIT)
    for round_ in range(20):
        path = tmp_path / f"r{round_}.ndjson"
        data = b"\n".join(rng.choice(LINES) for _ in range(rng.randint(1, 30)))
        path.write_bytes((b"\xef\xbb\xbf" if round_ % 5 == 0 else b"") + data + b"\n" * (round_ % 2))
        whole = _numbered(list(read_file_blocks(path, limits)))
        pieces = [p for p in plan([path], piece_bytes, limits) if isinstance(p, Piece)]
        read: list[LineBlock | object] = []
        before = 0
        for piece in pieces:
            tally = [0]
            list(piece_lines(piece, (b'"Condition"',), limits, tally))
            for item in piece_blocks(piece, limits):
                if isinstance(item, LineBlock):
                    item = LineBlock(item.file, item.first + before, item.lines)
                elif isinstance(item, InputProblem) and item.line is not None:
                    item = InputProblem(item.file, item.reason, line=item.line + before)
                read.append(item)
            before += tally[0]
        assert _numbered(read) == whole, (piece_bytes, data)


def test_a_compressed_file_or_a_json_document_is_one_piece(tmp_path: Path) -> None:
    (tmp_path / "a.ndjson.gz").write_bytes(gzip.compress(b"\n".join(LINES[:2]) * 50))
    (tmp_path / "b.json").write_text(json.dumps({"resourceType": "Bundle", "entry": []}, indent=1))
    planned = plan([tmp_path], 8, ReadLimits())
    assert planned == [Piece(tmp_path / "a.ndjson.gz"), Piece(tmp_path / "b.json")]


def _hostile(folder: Path) -> Path:
    """A generated population with what a real export also holds: broken and overlong lines, a
    resource without a patient, a Medication twice (copies that differ, nothing to order them: the first is
    kept and the conflict reported), a Bundle, a .gz file."""
    write_population("a", 60, folder)
    with (folder / "Observation.ndjson").open("ab") as fh:
        fh.write(b'{"resourceType": "Observation", "subject": \n')
        fh.write(b'{"resourceType":"Observation","id":"x","code":{"text":"' + b"z" * 5000 + b'"}}\n')
        fh.write(b'{"resourceType":"Observation","id":"nobody","status":"final"}\n\n')
    med = {"resourceType": "Medication", "id": "m1", "code": {"text": "prednisone"}}
    (folder / "Medication.ndjson").write_text(
        json.dumps(med) + "\n" + json.dumps({**med, "code": {"text": "methotrexate"}}) + "\n"
    )
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": med}]}
    (folder / "z-bundle.json").write_text(json.dumps(bundle))
    (folder / "Encounter.ndjson.gz").write_bytes(
        gzip.compress(b'{"resourceType":"Encounter","id":"e","subject":{"reference":"Patient/p0000001"}}\n')
    )
    return folder


def _contents(index: PatientIndex) -> dict[str, object]:
    rows = {pid: index.raw(pid).rows for pid, candidate in index.patients() if candidate}
    return {
        "patients": list(index.patients()),
        "rows": rows,
        "stubs": {pid: index.stub(pid).counts for pid, candidate in index.patients() if not candidate},
        "problems": [(p.file, p.reason, p.line) for p in index.problems],
        "read": index.resources_read,
        "skipped": dict(index.skipped_types),
        "meds": index.db.execute("SELECT key, body FROM med ORDER BY key").fetchall(),
    }


@pytest.mark.parametrize("everyone", [False, True], ids=["gate", "everyone"])
def test_an_index_read_by_several_processes_holds_what_one_process_reads(
    tmp_path: Path, everyone: bool
) -> None:
    from fhir_adapter.config.loader import load_trials
    from fhir_adapter.screening import Screener

    folder = _hostile(tmp_path / "in")
    screener = Screener(load_trials((), (), None), __import__("datetime").date(2026, 6, 15))
    gate = Gate(everyone=True) if everyone else screener.gate
    types = screener.needed_types | {"Patient", "Medication"}
    limits = ReadLimits(max_line_bytes=4096)
    built = []
    for readers, piece_bytes in ((1, None), (2, 3000), (3, 70_000)):
        with PatientIndex(tmp_path, gate, types, limits, readers=readers, piece_bytes=piece_bytes) as index:
            index.build([folder])
            assert index.readers_used == readers
            built.append(_contents(index))
    assert built[1] == built[0]
    assert built[2] == built[0]
    problems = built[0]["problems"]
    assert isinstance(problems, list) and len(problems) >= 3  # the broken, overlong and unattributable lines


def test_a_piece_whose_file_became_a_fifo_is_reported_without_blocking(tmp_path: Path) -> None:
    import os

    path = tmp_path / "Observation.ndjson"
    path.write_bytes(b"\n".join(LINES[:2]) * 20 + b"\n")
    pieces = [p for p in plan([path], 64, ReadLimits()) if isinstance(p, Piece)]
    assert len(pieces) > 2
    path.unlink()
    os.mkfifo(path)  # replaced between the plan and the read: opening it for reading would block
    problems = [i for i in piece_blocks(pieces[1], ReadLimits()) if isinstance(i, InputProblem)]
    assert [p.reason for p in problems] == ["not a regular file (a FIFO): skipped"]
    assert list(piece_lines(pieces[1], (b'"Condition"',), ReadLimits(), [0])) == []


@pytest.mark.parametrize(
    "body",
    [b"", b"\n", b'{"a":"x\ny"}\r\n', b"\xff\xfe not utf-8", "\u6c2e".encode() * 1000],
    ids=["empty", "newline", "crlf-inside", "not-utf8", "long"],
)
def test_a_chunk_gives_back_every_row_byte_for_byte_and_in_order(body: bytes) -> None:
    from fhir_adapter.source.grouping import Row
    from fhir_adapter.source.row_chunks import pack, unpack

    rows = [
        Row("Observation", body, "f.ndjson", 1),
        Row("Condition", b"{}", "g.ndjson", None),
        Row("X", body, "", 7),
    ]
    assert list(unpack(*pack(rows))) == rows


@pytest.mark.parametrize("readers", [1, 2])
@pytest.mark.parametrize("batch_bytes", [1, 5000])
def test_an_index_spooled_to_disk_in_chunks_holds_what_one_held_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readers: int, batch_bytes: int
) -> None:
    """batch_bytes 1: every row a chunk of its own; 5000: a patient's rows split over several chunks of
    several rows (population a's Observations come one file after the Conditions, so each patient's rows
    span files and batches)."""
    from fhir_adapter.config.loader import load_trials
    from fhir_adapter.screening import Screener
    from fhir_adapter.source import patient_index

    folder = _hostile(tmp_path / "in")
    screener = Screener(load_trials((), (), None), __import__("datetime").date(2026, 6, 15))
    types = screener.needed_types | {"Patient", "Medication"}
    limits = ReadLimits(max_line_bytes=4096)
    with PatientIndex(tmp_path, screener.gate, types, limits, readers=1) as index:
        index.build([folder])
        in_memory = _contents(index)
    monkeypatch.setattr(patient_index, "_BATCH_BYTES", batch_bytes)
    with PatientIndex(
        tmp_path, screener.gate, types, limits, spool_memory_bytes=0, readers=readers, piece_bytes=3000
    ) as index:
        index.build([folder])
        # Spooled to disk: the main index with one reader, the readers' part files with two.
        table = "res" if readers == 1 else "part"
        assert index.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] > 0
        on_disk = _contents(index)
    rows = in_memory["rows"]
    assert isinstance(rows, dict) and sum(len(r) for r in rows.values()) > 100
    assert on_disk == in_memory
