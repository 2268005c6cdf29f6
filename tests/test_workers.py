"""``--workers N``: the process pool gives the result file of one worker, byte for byte (but for the time
it was written), on the shipped examples and on a generated hospital-shaped population with bad lines."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

import pytest

from fhir_adapter.cli import main
from fhir_adapter.source import files
from fhir_adapter.source.patient_index import PatientIndex

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from populations import write_population  # noqa: E402

AS_OF = "2026-06-15"


def screen(inputs: Path, out: Path, workers: int) -> tuple[int, bytes, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(err), contextlib.redirect_stderr(err):
        code = main(["screen", str(inputs), "--as-of", AS_OF, "--out", str(out), "--workers", str(workers)])
    return code, re.sub(rb'"generated":"[^"]*"', b"", out.read_bytes()), err.getvalue()


@pytest.fixture(scope="module", params=[("a", 240), ("c", 1500)], ids=["dense", "sparse"])
def population(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # dense: 60 candidates in 240, several batches per worker; sparse: 1 % candidates, so hundreds of
    # patients no gate admits pass while a batch is still filling (it must be sent part-filled)
    kind, size = request.param
    folder = tmp_path_factory.mktemp(f"population-{kind}")
    write_population(kind, size, folder)
    with (folder / "Observation.ndjson").open("ab") as fh:
        fh.write(b'{"resourceType": "Observation", "subject": \n')  # a broken line: an errors entry
    return folder


@pytest.mark.parametrize("workers", [2, 3])
def test_a_pool_writes_the_result_file_of_one_worker(population: Path, tmp_path: Path, workers: int) -> None:
    one = screen(population, tmp_path / "one.json", 1)
    many = screen(population, tmp_path / "many.json", workers)
    assert one[0] == many[0] == 3  # the broken line
    assert many[1] == one[1]
    assert one[1].count(b'"patient":"Patient/') >= 240


def test_a_pool_on_the_examples_writes_the_result_file_of_one_worker(tmp_path: Path) -> None:
    one = screen(REPO / "examples" / "patients", tmp_path / "one.json", 1)
    two = screen(REPO / "examples" / "patients", tmp_path / "two.json", 2)
    assert one[0] == two[0]
    assert two[1] == one[1]


@pytest.mark.parametrize("readers", [1, None], ids=["one-reader", "as-many-readers-as-workers"])
def test_a_pool_reads_spilled_rows_from_the_index_and_writes_the_same_file(
    population: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readers: int | None
) -> None:
    # A spool budget of 1 kB: every candidate's rows go to the index file, and the workers read them there.
    # With one reader they are in the index itself; with as many readers as workers (what --workers 2
    # asks for) in the readers' part files: both must give the file one worker writes.
    def index(*args: object, **kwargs: object) -> PatientIndex:
        if readers is not None:
            kwargs["readers"] = readers
        return PatientIndex(*args, spool_memory_bytes=1000, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(files, "PatientIndex", index)
    one = screen(population, tmp_path / "one.json", 1)
    two = screen(population, tmp_path / "two.json", 2)
    assert two[1] == one[1]
    assert one[0] == two[0] == 3
