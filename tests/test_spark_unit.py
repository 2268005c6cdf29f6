"""The Spark engine's plain-Python parts, without Spark: input planning (order, names, how each file is
read), line numbers rebuilt from blocks, merging parts, and the command line's checks before Spark starts.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from fhirdata import baseline, for_patient, ndjson_lines

from fhir_adapter.cli import main
from fhir_adapter.errors import UsageError
from fhir_adapter.model import InputProblem
from fhir_adapter.output.parts import MANIFEST, merge_results
from fhir_adapter.screening import Gate
from fhir_adapter.source.patient_index import PatientIndex
from fhir_adapter.source.reader import input_files, irregular
from fhir_adapter.spark import partitions
from fhir_adapter.spark.inputs import Entry, plan_inputs
from fhir_adapter.spark.partitions import SMALL, ReadContext, line_counts, read_lines, small_outputs


class LocalFs:
    """The FileSystem protocol over plain paths (Hadoop's, on the driver, in a real run)."""

    def stat(self, path: str) -> Entry | None:
        p = Path(path)
        if not p.exists():
            return None
        return self._entry(p)

    def children(self, uri: str) -> list[Entry]:
        return [self._entry(p) for p in Path(uri).iterdir()]

    def head(self, uri: str, n: int) -> bytes:
        with open(uri, "rb") as fh:
            return fh.read(n)

    def special(self, uri: str) -> str | None:
        return irregular(Path(uri).stat().st_mode)

    def _entry(self, p: Path) -> Entry:
        return Entry(str(p.resolve()), p.name, p.is_dir(), 0 if p.is_dir() else p.stat().st_size)


def _tree(root: Path) -> Path:
    lines = ndjson_lines(for_patient(baseline(), "a")).encode()
    files = {
        "b/plain.ndjson": lines,
        "b/z.jsonl": lines,
        "b/bom.ndjson": b"\xef\xbb\xbf" + lines,
        "b/packed.ndjson": gzip.compress(lines),
        "b/binary.ndjson": b"\x00\x01\n",
        "b/_under.ndjson": lines,
        "b/.dot.ndjson": lines,
        "b/empty.ndjson": b"",
        "b/bundle.json": b'{"resourceType": "Bundle", "entry": []}',
        "b/x.ndjson.gz": gzip.compress(lines),
        "b/notes.txt": b"not FHIR",
        "b/sub/deeper.ndjson": lines,
        "b/Sub2/a.json": b"{}",
        "a.ndjson": lines,
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_inputs_are_planned_in_the_local_readers_order_with_its_names(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    args = [root / "b", root / "a.ndjson", root / "missing"]
    plan = plan_inputs(LocalFs(), [str(a) for a in args])
    local = [str(e.file if isinstance(e, InputProblem) else e) for e in input_files(args)]
    planned = sorted([(f.index, f.display) for f in plan.files] + [(i, p.file) for i, p in plan.problems])
    assert [name for _, name in planned] == local
    assert [p.reason for _, p in plan.problems] == ["no such file or folder"]


def test_a_fifo_among_the_inputs_is_a_problem_as_locally_and_never_opened(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    os.mkfifo(root / "b" / "pipe.ndjson")  # opening it would wait for a writer for ever
    args = [str(root / "b")]
    planned: list[Any] = []
    worker = threading.Thread(target=lambda: planned.append(plan_inputs(LocalFs(), args)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert planned, "planning the inputs hung on the FIFO"
    plan = planned[0]
    local = [e for e in input_files([root / "b"]) if isinstance(e, InputProblem)]
    assert [(p.file, p.reason) for _, p in plan.problems] == [(p.file, p.reason) for p in local]
    assert [p.reason for _, p in plan.problems] == ["not a regular file (a FIFO): skipped"]
    assert "pipe.ndjson" not in {f.name for f in plan.files}


def test_each_file_is_read_the_way_that_keeps_the_local_readers_behaviour(tmp_path: Path) -> None:
    plan = plan_inputs(LocalFs(), [str(_tree(tmp_path) / "b")])
    how = {f.name: f.how for f in plan.files}
    assert how == {
        "plain.ndjson": "lines",
        "z.jsonl": "lines",
        "deeper.ndjson": "lines",
        "bom.ndjson": "whole",  # the byte order mark is the local reader's to strip
        "packed.ndjson": "whole",  # gzip under another name: the local reader sniffs it
        "binary.ndjson": "whole",  # one "binary file" problem, not one per line
        "bundle.json": "whole",
        "a.json": "whole",
        "x.ndjson.gz": "whole",
        "_under.ndjson": "driver",  # Spark's file sources skip these names
        ".dot.ndjson": "driver",
        "empty.ndjson": "driver",  # and empty files
    }


def test_uris_are_cited_as_given(tmp_path: Path) -> None:
    class UriFs(LocalFs):
        def stat(self, path: str) -> Entry | None:
            return super().stat(path.removeprefix("s3a://bucket"))

    root = _tree(tmp_path)
    plan = plan_inputs(UriFs(), [f"s3a://bucket{root}/b/sub/"])
    assert [f.display for f in plan.files] == [f"s3a://bucket{root}/b/sub/deeper.ndjson"]


def test_lines_read_in_blocks_give_the_local_indexs_problems_and_line_numbers(tmp_path: Path) -> None:
    good = json.dumps({"resourceType": "Observation", "id": "o", "subject": {"reference": "Patient/a"}})
    orphan = json.dumps({"resourceType": "Observation", "id": "lost"})
    text = [good, "{cut", "", good, orphan, "[1]", good, '{"resourceType": "Observation", "id": "cu']
    file = tmp_path / "Observation.ndjson"
    file.write_text("\n".join(text) + "\n")
    types = frozenset({"Patient", "Observation"})
    with PatientIndex(tmp_path, Gate(everyone=True), types) as index:
        index.build([file])
        local = index.problems
    # Spark's blocks: rows 1-3 in the block at 0, rows 4-8 in the block at 100, handed over in that order
    # in one partition and counted by the JVM beforehand.
    ctx = ReadContext(
        by_path={"F": (0, str(file), file.name)},
        by_index={0: (str(file), file.name)},
        types=types,
        gate=Gate(everyone=True),
        before=line_counts([("F", 100, 5), ("F", 0, 3)]),
    )
    rows = [(t.encode(), "F", 0) for t in text[:3]] + [(t.encode(), "F", 100) for t in text[3:]]
    out = list(read_lines(rows, ctx, None))
    keyed, read, skipped, seen = small_outputs(o for o in out if o[0] in SMALL)
    got = [p for _, p in sorted(keyed, key=lambda kv: kv[0])]
    assert got == local
    assert [p.line for p in got] == [2, 5, 6, 8]
    assert read == 4 and not skipped and not seen


def test_of_a_medications_copies_spark_keeps_what_the_local_index_keeps() -> None:
    def med(version: str, text: str) -> bytes:
        body = {
            "resourceType": "Medication",
            "id": "m",
            "meta": {"versionId": version},
            "code": {"text": text},
        }
        return json.dumps(body).encode()

    old, new, other = ((0, 1, 0), med("1", "old")), ((1, 1, 0), med("2", "new")), ((2, 0, 0), med("", "x"))
    # Whatever order Spark hands them over in: the newer wins, and with nothing to order them, the first
    # read, the later copy's position reported as a conflict (as the local index reports it).
    assert partitions.kept_copy([new, old]) == partitions.kept_copy([old, new]) == (*new, ())
    assert partitions.kept_copy([other, old]) == partitions.kept_copy([old, other]) == (*old, (other[0],))
    same = ((3, 0, 0), med("1", "old"))
    assert partitions.kept_copy([same, old]) == (*old, ())


def _parts(folder: Path, subjects: list[dict[str, object]], summary: dict[str, object]) -> None:
    (folder / "p" / "S").mkdir(parents=True)
    (folder / "p" / "S" / "part-00000").write_text("".join(json.dumps(s) + "\n" for s in subjects))
    manifest = {
        "format": "fhir-adapter result parts 1",
        "asOf": "2026-06-15",
        "generated": "2026-06-15T00:00:00Z",
        "source": "files: x",
        "studies": [
            {"study": "S", "rulesVersion": "v", "parts": "p/S", "files": ["part-00000"], "summary": summary}
        ],
        "errors": [{"file": "x", "reason": "not valid JSON", "line": 3}],
    }
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_merging_parts_writes_the_standard_result_file(tmp_path: Path) -> None:
    subject = {"patient": "Patient/a", "status": "ineligible", "criteria": []}
    _parts(tmp_path, [subject], {"patients": 1, "statuses": {"ineligible": 1}, "criteria": {}})
    (path,) = merge_results(tmp_path)
    result = json.loads(path.read_text())
    assert path == tmp_path / "S.json" and path.stat().st_mode & 0o777 == 0o600
    assert result["subjects"] == [subject] and result["errors"][0]["line"] == 3


def test_parts_that_do_not_add_up_to_the_manifest_are_refused(tmp_path: Path) -> None:
    _parts(tmp_path, [], {"patients": 1, "statuses": {"ineligible": 1}, "criteria": {}})
    with pytest.raises(UsageError, match="do not add up"):
        merge_results(tmp_path)
    assert not (tmp_path / "S.json").exists()


def test_merge_results_without_a_manifest_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["merge-results", str(tmp_path)]) == 2
    assert "manifest" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["screen", "--engine", "spark", "examples/patients"],  # no --out-dir
        ["screen", "--engine", "spark", "--out-dir", "o", "--server", "http://127.0.0.1:9/fhir"],
        ["screen", "--engine", "spark", "examples/patients", "--out", "r.json"],
        ["screen", "examples/patients", "--merge"],
        ["screen", "examples/patients", "--master", "local[1]"],
        ["screen", "--engine", "spark", "examples/patients", "--out-dir", "o", "--workers", "2"],
    ],
)
def test_spark_options_that_do_not_fit_are_usage_errors_before_spark_starts(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_without_pyspark_the_engine_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    code = main(["screen", "--engine", "spark", "examples/patients", "--out-dir", str(tmp_path / "o")])
    assert code == 2
    assert "pip install 'fhir-adapter[spark]'" in capsys.readouterr().err
