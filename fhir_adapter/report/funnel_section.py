"""The screening funnel section: legend, SVG bars, the per-criterion table and component tables."""

from __future__ import annotations

from fhir_adapter.report._data import (
    Result,
    by_id,
    component_order,
    components,
    criterion_order,
    subjects,
    text,
    verdict,
)
from fhir_adapter.report.funnel import funnel
from fhir_adapter.report.markup import Order, esc, plural
from fhir_adapter.report.svg import funnel_svg, step_summary


def _legend() -> str:
    items = [
        ("pass", "pass (inclusion met / exclusion not met)"),
        ("other", "no verdict (not evaluable, not applicable, not reported)"),
        ("unknown", "unknown (stays in)"),
        ("fail", "excluded (inclusion not met / exclusion met)"),
    ]
    return (
        '<ul class="legend" aria-hidden="true">'
        + "".join(f'<li><span class="sw sw-{k}"></span>{esc(v)}</li>' for k, v in items)
        + "</ul>"
    )


def funnel_section(result: Result, order: Order) -> str:
    steps = funnel(result, order)
    screened = len(subjects(result))
    rows = []
    for s in steps:
        rows.append(
            f'<tr data-criterion="{esc(s.id)}" title="{esc(step_summary(s))}">'
            f'<td class="n">{s.index}</td><td><code>{esc(s.id)}</code></td><td>{esc(s.type)}</td>'
            f'<td class="n" data-col="entering">{s.entering}</td>'
            f'<td class="n" data-col="pass">{s.passed}</td>'
            f'<td class="n" data-col="unknown">{s.unknown}</td>'
            f'<td class="n" data-col="excluded">{s.failed}</td>'
            f'<td class="n" data-col="other">{s.other}</td>'
            f'<td class="n" data-col="remaining"><strong>{s.remaining}</strong></td>'
            f'<td class="n" data-col="excluded-any-order">{s.failed_overall}</td>'
            "</tr>"
        )
    table = (
        '<table id="funnel-table"><thead><tr><th class="n">#</th><th>Criterion</th><th>Type</th>'
        '<th class="n">Reached</th><th class="n">Pass</th><th class="n">Unknown</th>'
        '<th class="n">Excluded</th><th class="n">Other\u00b9</th><th class="n">Remaining</th>'
        '<th class="n">Excluded, any order\u00b2</th>'
        "</tr></thead><tbody>" + "".join(rows) + "</tbody>"
        "<caption>Reached: patients not excluded by an earlier criterion. Excluded: inclusion not met or "
        "exclusion met. \u00b9 Not evaluable (e.g. consent), not applicable, or no verdict reported for the "
        "patient (patients who fail the trial's gate, the diagnosis, are assessed on it only). "
        "\u00b2 All screened patients this criterion alone excludes, whatever the order.</caption></table>"
    )
    return (
        '<section id="funnel" aria-labelledby="funnel-h"><h2 id="funnel-h">Screening funnel</h2>'
        '<p class="muted small">Criteria in protocol order, as ATLAS shows inclusion rules: each bar is the '
        "patients still in after the criteria above it; an unknown verdict keeps a patient in.</p>"
        + _legend()
        + f'<div class="funnel-wrap">{funnel_svg(steps, screened)}</div>'
        + table
        + _components_table(result, order)
        + "</section>"
    )


def _components_table(result: Result, order: Order) -> str:
    """Per component (e.g. of active-disease): met / not met / unknown among patients assessed on it."""
    out: list[str] = []
    for spec in criterion_order(result, order):
        comps = component_order(result, spec.id)
        if not comps:
            continue
        parents = [by_id(s)[spec.id] for s in subjects(result) if spec.id in by_id(s)]
        rows = []
        for comp in comps:
            verdicts = [verdict(c) for p in parents for c in components(p) if text(c.get("id")) == comp.id]
            met, not_met, unknown = (verdicts.count(v) for v in ("met", "not-met", "unknown"))
            rows.append(
                f'<tr data-component="{esc(comp.id)}"><td><code>{esc(comp.id)}</code></td>'
                f'<td class="n" data-col="met">{met}</td><td class="n" data-col="not-met">{not_met}</td>'
                f'<td class="n" data-col="unknown">{unknown}</td>'
                f'<td class="n" data-col="other">{len(verdicts) - met - not_met - unknown}</td></tr>'
            )
        out.append(
            f'<h3 class="subhead" style="margin-top:18px">Components of <code>{esc(spec.id)}</code></h3>'
            f'<table class="components" data-parent="{esc(spec.id)}"><thead><tr><th>Component</th>'
            '<th class="n">Met (abnormal)</th><th class="n">Not met</th><th class="n">Unknown</th>'
            '<th class="n">Other</th></tr></thead><tbody>' + "".join(rows) + "</tbody>"
            f"<caption>All {plural(len(parents), 'patient', 'patients')} with a "
            f"<code>{esc(spec.id)}</code> verdict, whatever their status.</caption></table>"
        )
    return "".join(out)
