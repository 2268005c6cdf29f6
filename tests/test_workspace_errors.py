"""The working index a file screen groups patients in (under TMPDIR) on a full disk: the operator's to
mend, said as such, naming the folder (exit 4), never "internal error" (exit 70)."""

from __future__ import annotations

import contextlib
import io
import sqlite3
import tempfile
from pathlib import Path

import pytest
from fhirdata import REPO

from fhir_adapter.cli import main
from fhir_adapter.source.patient_index import PatientIndex


def test_a_full_disk_under_the_working_index_is_said_as_such_not_an_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(PatientIndex, "_flush_counts", full)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    err = io.StringIO()
    with contextlib.redirect_stdout(err), contextlib.redirect_stderr(err):
        code = main(["screen", str(REPO / "examples" / "patients"), "--out", str(tmp_path / "r.json")])

    assert code == 4, err.getvalue()  # before: 70, "internal error: OperationalError"
    assert f"{tmp_path}: the working index of this screen failed (database or disk is full)" in err.getvalue()
    assert "point TMPDIR at a folder with room for it" in err.getvalue()
    assert not (tmp_path / "r.json").exists()
