"""The worklist section: candidates and potential candidates, each with what would settle its unknowns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fhir_adapter.report.markup import esc, status_badge
from fhir_adapter.report.worklist import WorklistEntry


def worklist_section(entries: Sequence[WorklistEntry], anchors: Mapping[str, str]) -> str:
    head = (
        '<section id="worklist" aria-labelledby="worklist-h"><h2 id="worklist-h">Worklist</h2>'
        '<p class="muted small">Candidates and potential candidates, fewest unknown criteria first. '
        "Each line under \u201cTo resolve\u201d is data that would settle one unknown; a line marked "
        "\u201cin a note\u201d is a value a clinical note holds and the record does not: confirm it and "
        "record it.</p>"
    )
    if not entries:
        return (
            head
            + '<p class="note" id="worklist-empty">No candidates or potential candidates in this run.</p>'
            + "</section>"
        )
    rows = []
    for n, e in enumerate(entries, start=1):
        items = "".join(f"<li><code>{esc(t.criterion)}</code>{esc(t.reason)}</li>" for t in e.to_resolve)
        resolve = (
            f'<ul class="resolve">{items}</ul>' if items else '<span class="muted">nothing unknown</span>'
        )
        if e.from_notes:
            notes = "".join(
                f'<li><code>{esc(n.criterion)}</code><span class="tag">in a note</span>{esc(n.advice)} '
                f'<span class="muted small">({esc(n.reference)})</span></li>'
                for n in e.from_notes
            )
            resolve += f'<ul class="resolve from-notes">{notes}</ul>'
        if e.recheck_on:
            resolve += f'<div class="muted small">Recheck on {esc(e.recheck_on)}</div>'
        rows.append(
            f'<tr data-patient="{esc(e.patient)}"><td class="n">{n}</td>'
            f'<td class="patient-ref"><a href="#{esc(anchors.get(e.patient, ""))}"><code>{esc(e.patient)}</code></a></td>'
            f"<td>{status_badge(e.status)}</td>"
            f'<td class="n" data-col="unknown-count">{e.unknown_count}</td><td>{resolve}</td></tr>'
        )
    return (
        head + '<table id="worklist-table"><thead><tr><th class="n">#</th><th>Patient</th><th>Status</th>'
        '<th class="n">Unknowns</th><th>To resolve</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
        "</section>"
    )
