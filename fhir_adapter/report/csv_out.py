"""The worklist as CSV: UTF-8, a header row, one row per candidate or potential candidate."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fhir_adapter.output.private import write_private_text
from fhir_adapter.report._data import Result
from fhir_adapter.report.worklist import csv_columns, worklist_rows

# A cell starting with one of these is read as a formula by spreadsheet programs; reasons come from data.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    cell = "" if value is None else str(value)
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def worklist_csv(result: Result, order: Sequence[str] | None = None) -> str:
    """The CSV text (RFC 4180 line endings)."""
    buf = io.StringIO(newline="")
    columns = csv_columns(result, order)
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in worklist_rows(result, order):
        writer.writerow({col: _cell(row.get(col, "")) for col in columns})
    return buf.getvalue()


def write_csv(result: Result, path: Path, order: Sequence[str] | None = None) -> None:
    write_private_text(path, worklist_csv(result, order), newline="")
