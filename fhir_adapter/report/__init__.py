"""Coordinator report: the screening funnel and the worklist, as an HTML page and a CSV.

``write_report(result, html_path, csv_path)`` writes either or both from a screening result
(prescreening-spec section 1, as parsed from JSON). The criteria order comes from the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fhir_adapter.output.private import write_private_text
from fhir_adapter.report._data import CriterionSpec, component_order, criterion_order
from fhir_adapter.report.csv_out import worklist_csv, write_csv
from fhir_adapter.report.funnel import FunnelStep, expected_status, funnel, status_counts, status_mismatches
from fhir_adapter.report.page import render_html
from fhir_adapter.report.worklist import ToResolve, WorklistEntry, csv_columns, worklist, worklist_rows

__all__ = [
    "CriterionSpec",
    "FunnelStep",
    "ToResolve",
    "WorklistEntry",
    "component_order",
    "criterion_order",
    "csv_columns",
    "expected_status",
    "funnel",
    "render_html",
    "status_counts",
    "status_mismatches",
    "worklist",
    "worklist_csv",
    "worklist_rows",
    "write_report",
]


def write_report(
    result: Mapping[str, Any],
    html_path: Path | None,
    csv_path: Path | None,
    *,
    order: Sequence[str] | None = None,
) -> None:
    """Write the HTML page and/or the worklist CSV (UTF-8, mode 0600, atomically); a ``None`` path is
    skipped.

    ``order`` optionally lists criterion ids to put first; by default the result's own order.
    """
    if html_path is not None:
        write_private_text(html_path, render_html(result, order))
    if csv_path is not None:
        write_csv(result, csv_path, order)
