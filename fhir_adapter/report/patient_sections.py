"""One section per patient (every criterion with its verdict, reason and evidence), worklist first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fhir_adapter.report._data import (
    Criterion,
    Result,
    Subject,
    components,
    criteria,
    criterion_order,
    evidence,
    patient,
    status,
    subjects,
    suggestions,
    text,
    verdict,
)
from fhir_adapter.report.funnel import FAIL, UNKNOWN, effect
from fhir_adapter.report.markup import Order, esc, plural, status_badge, verdict_badge
from fhir_adapter.report.worklist import WorklistEntry

SHORT_ROWS = 4  # a patient section this short is kept on one printed page, not given its own


def _evidence_list(criterion: Criterion) -> str:
    items = [
        f"<li><code>{esc(ev.get('reference'))}</code>{esc(ev.get('detail'))}</li>"
        for ev in evidence(criterion)
    ]
    return f'<ul class="ev">{"".join(items)}</ul>' if items else '<span class="muted">\u2014</span>'


def _criterion_row(c: Criterion, component: bool) -> str:
    cid, ctype = text(c.get("id")), text(c.get("type"))
    eff = effect(ctype, verdict(c))
    mark = {UNKNOWN: " is-unknown", FAIL: " is-fail"}.get(eff, "")
    return (
        f'<tr class="{"component" if component else "criterion"}{mark}" data-criterion="{esc(cid)}">'
        f'<td><code>{esc(cid)}</code><span class="crit-type">{esc(ctype)}</span></td>'
        f"<td>{verdict_badge(c)}</td><td>{esc(c.get('reason'))}{_suggestion_list(c)}</td>"
        f"<td>{_evidence_list(c)}</td></tr>"
    )


def _suggestion_list(criterion: Criterion) -> str:
    """Values found in notes: shown under the reason, never as evidence (they decided nothing)."""
    items = [
        f'<li><span class="tag">in a note</span><code>{esc(s.get("reference"))}</code> of {esc(s.get("date"))} '
        f"says {esc(s.get('match'))}: <q>{esc(s.get('text'))}</q></li>"
        for s in suggestions(criterion)
    ]
    return f'<ul class="suggest">{"".join(items)}</ul>' if items else ""


def _patient_section(s: Subject, anchor: str, rank: Mapping[str, int]) -> str:
    cs = sorted(criteria(s), key=lambda c: rank.get(text(c.get("id")), len(rank)))
    rows: list[str] = []
    for c in cs:
        rows.append(_criterion_row(c, component=False))
        rows.extend(_criterion_row(comp, component=True) for comp in components(c))
    unknown = sum(1 for c in cs if verdict(c) == "unknown")
    extra = f'<span class="muted small">{plural(unknown, "unknown criterion", "unknown criteria")}</span>'
    if text(s.get("recheckOn")):
        extra += f'<span class="muted small">recheck on {esc(s.get("recheckOn"))}</span>'
    return (
        f'<section class="patient {"short" if len(rows) <= SHORT_ROWS else "full"}" id="{esc(anchor)}"'
        f' data-patient="{esc(patient(s))}">'
        # The patient's heading is the table's first header row, so print repeats it on every page.
        '<table><thead><tr class="phead"><th colspan="4"><div class="patient-head">'
        f"<h3><code>{esc(patient(s) or '(no patient reference)')}</code></h3>"
        f"{status_badge(status(s))}{extra}</div></th></tr>"
        "<tr><th>Criterion</th><th>Verdict</th><th>Reason</th><th>Evidence</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def patients_section(
    result: Result, entries: Sequence[WorklistEntry], anchors: Mapping[str, str], order: Order
) -> str:
    subs = subjects(result)
    rank = {spec.id: n for n, spec in enumerate(criterion_order(result, order))}
    first = {e.patient: n for n, e in enumerate(entries)}
    status_rank = {"candidate": 0, "potential-candidate": 1, "ineligible": 2}
    ordered = sorted(
        subs, key=lambda s: (first.get(patient(s), len(first)), status_rank.get(status(s), 3), patient(s))
    )
    body = "".join(_patient_section(s, anchors[patient(s)], rank) for s in ordered)
    return (
        '<section id="patients" aria-labelledby="patients-h"><h2 id="patients-h">Patients</h2>'
        '<p class="muted small">Every criterion with its verdict, the engine\u2019s reason and the '
        "resources it rests on. Worklist patients first, then the ineligible.</p>" + body + "</section>"
    )
