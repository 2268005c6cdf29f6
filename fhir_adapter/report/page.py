"""The report as one self-contained HTML page: inline CSS and SVG, no script, nothing fetched.

Every piece of text from the result goes through :func:`html.escape`. The markup is also
well-formed XML (void elements self-closed), which the tests use to check its structure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from html import escape

from fhir_adapter.report._data import (
    Criterion,
    Result,
    Subject,
    by_id,
    component_order,
    components,
    criteria,
    criterion_order,
    errors,
    evidence,
    patient,
    status,
    subjects,
    text,
    verdict,
)
from fhir_adapter.report.funnel import (
    FAIL,
    OTHER,
    PASS,
    UNKNOWN,
    effect,
    funnel,
    status_counts,
    status_mismatches,
)
from fhir_adapter.report.svg import funnel_svg, step_summary
from fhir_adapter.report.worklist import WorklistEntry, worklist

Order = Sequence[str] | None

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

STATUS_LABELS = {
    "candidate": "Candidate",
    "potential-candidate": "Potential candidate",
    "ineligible": "Ineligible",
}
STATUS_PLURALS = {
    "candidate": "Candidates",
    "potential-candidate": "Potential candidates",
    "ineligible": "Ineligible",
}
VERDICT_LABELS = {
    "met": "met",
    "not-met": "not met",
    "unknown": "unknown",
    "not-evaluable": "not evaluable",
    "not-applicable": "not applicable",
}
STATUS_CLASS = {"candidate": "v-pass", "potential-candidate": "v-unknown", "ineligible": "v-fail"}
SHORT_ROWS = 4  # a patient section this short is kept on one printed page, not given its own
EFFECT_CLASS = {PASS: "v-pass", FAIL: "v-fail", UNKNOWN: "v-unknown", OTHER: "v-other"}

CSS = """
:root { --ink: #1f2328; --muted: #59636e; --rule: #d8dee4; --soft: #f6f8fa; --accent: #1f3a5f;
  --pass: #2f7a4d; --pass-bg: #e7f3ec; --pass-ink: #1d5234;
  --fail: #b3261e; --fail-bg: #fbe9e7; --fail-ink: #8c1d17;
  --unk: #c8961a; --unk-bg: #fdf3d8; --unk-ink: #6b4d00;
  --other: #b8bfc7; --other-bg: #eef1f4; --other-ink: #48515b;
  --mono: "SFMono-Regular", Menlo, Consolas, "Liberation Mono", "DejaVu Sans Mono", monospace; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", "Helvetica Neue", Arial, "Liberation Sans",
    "Noto Sans", "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif;
  font-variant-numeric: tabular-nums; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 36px 48px; }
h1 { font-size: 24px; line-height: 1.25; margin: 0 0 4px; font-weight: 650; letter-spacing: -0.01em; }
h2 { font-size: 18px; margin: 36px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--rule);
  font-weight: 650; color: var(--accent); }
h3 { font-size: 15px; margin: 0; font-weight: 650; }
p { margin: 6px 0 10px; }
code, .mono { font-family: var(--mono); font-size: 12.5px; }
.sub { color: var(--muted); margin: 0 0 16px; }
.muted { color: var(--muted); }
.small { font-size: 12.5px; }
dl.meta { display: flex; flex-wrap: wrap; gap: 10px 36px; margin: 0 0 18px; }
dl.meta div { min-width: 0; max-width: 100%; }
dl.meta dt { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: 0.04em; }
dl.meta dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 4px 0 8px; }
.card { flex: 1 1 180px; border: 1px solid var(--rule); border-left-width: 5px; border-radius: 6px;
  padding: 10px 14px; background: #fff; }
.card .n { font-size: 28px; font-weight: 650; line-height: 1.1; display: block; }
.card .l { color: var(--muted); font-size: 13px; }
.card.candidate { border-left-color: var(--pass); }
.card.potential-candidate { border-left-color: var(--unk); }
.card.ineligible { border-left-color: var(--fail); }
.card.other { border-left-color: var(--other); }
.note { border: 1px solid var(--rule); background: var(--soft); border-radius: 6px; padding: 10px 14px;
  margin: 12px 0; }
.warn { border-color: #e7c27a; background: var(--unk-bg); }
.empty { font-size: 16px; padding: 18px 20px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 4px; }
th, td { text-align: left; vertical-align: top; padding: 6px 8px; border-bottom: 1px solid var(--rule); }
th { font-size: 12px; font-weight: 600; color: var(--muted); text-transform: uppercase;
  letter-spacing: 0.03em; border-bottom: 1.5px solid #b9c1ca; }
td.n, th.n { text-align: right; white-space: nowrap; }
caption { text-align: left; font-size: 12.5px; color: var(--muted); caption-side: bottom; padding-top: 6px; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
#funnel-table td { padding-top: 4px; padding-bottom: 4px; }
.funnel-wrap { margin: 6px 0 4px; overflow-x: auto; }
svg.funnel { display: block; width: 100%; height: auto; }
svg.funnel text { font-family: inherit; font-size: 12.5px; }
svg.funnel .f-id, svg.funnel .f-note { fill: var(--ink); }
svg.funnel .f-num, svg.funnel .f-type { fill: var(--muted); font-size: 11.5px; }
svg.funnel .f-id { font-family: var(--mono); font-size: 12px; }
svg.funnel .f-group { font-size: 11.5px; font-weight: 600; fill: var(--accent); text-transform: uppercase;
  letter-spacing: 0.05em; }
svg.funnel .f-rule { stroke: var(--rule); }
svg.funnel .seg-num { font-size: 11px; font-weight: 600; }
svg.funnel .f-strong { font-weight: 650; }
svg.funnel .f-fail { fill: var(--fail-ink); }
svg.funnel .f-unknown { fill: var(--unk-ink); }
.legend { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 4px 0 10px; font-size: 12.5px;
  color: var(--muted); padding: 0; list-style: none; }
.legend li { display: flex; align-items: center; gap: 6px; }
.sw { display: inline-block; width: 14px; height: 10px; border-radius: 2px; }
.sw-pass { background: var(--pass); }
.sw-fail { background: var(--fail); }
.sw-other { background: var(--other); }
.sw-unknown { background: repeating-linear-gradient(45deg, #f0c24b 0 3px, #c8961a 3px 5px); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
  white-space: nowrap; border: 1px solid transparent; }
.v-pass { background: var(--pass-bg); color: var(--pass-ink); border-color: #b9dcc7; }
.v-fail { background: var(--fail-bg); color: var(--fail-ink); border-color: #f1bcb6; }
.v-unknown { background: var(--unk-bg); color: var(--unk-ink); border-color: #ecd28f; }
.v-other { background: var(--other-bg); color: var(--other-ink); border-color: #d5dbe1; }
ul.resolve, ul.ev { margin: 0; padding-left: 0; list-style: none; }
ul.resolve li, ul.ev li { margin: 0 0 3px; overflow-wrap: anywhere; }
ul.resolve code { color: var(--accent); margin-right: 8px; }
ul.ev code { color: var(--muted); margin-right: 6px; }
td.patient-ref { white-space: nowrap; }
table.components { width: auto; min-width: 60%; }
table.components td, table.components th { padding-right: 20px; }
.patient h3 code { font-size: 15px; color: var(--ink); }
tr.is-unknown td { background: #fffaeb !important; }
tr.is-fail td { background: #fff5f4 !important; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.patient { margin: 18px 0 22px; }
.patient-head { display: flex; gap: 12px; align-items: baseline; flex-wrap: wrap; }
tr.phead th { text-transform: none; letter-spacing: 0; font-size: 14px; font-weight: 400; color: var(--ink);
  border-bottom: none; padding: 0 0 6px; }
.patient table td:first-child { width: 190px; }
.patient table td:nth-child(2) { width: 150px; }
.patient table td:last-child { width: 34%; }
tr.component td:first-child { padding-left: 26px; }
.crit-type { display: block; color: var(--muted); font-size: 11.5px; }
footer { margin-top: 40px; padding-top: 10px; border-top: 1px solid var(--rule); color: var(--muted);
  font-size: 12px; }
@media print {
  @page { size: A4; margin: 14mm 12mm; }
  body { font-size: 10pt; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  main { max-width: none; padding: 0; }
  h2 { margin-top: 18pt; break-after: avoid; page-break-after: avoid; }
  h3, .patient-head { break-after: avoid; page-break-after: avoid; }
  tr, .card, .note, li { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  .funnel-wrap, svg.funnel { break-inside: avoid; page-break-inside: avoid; overflow: visible; }
  #patients { break-before: page; page-break-before: always; }
  /* A full patient starts a page (its table may run on, rows whole, header repeated);
     short ones (no DM diagnosis) share pages without being split. */
  .patient { margin: 0 0 14pt; }
  .patient.full { break-before: page; page-break-before: always; }
  .patient:first-of-type { break-before: auto; page-break-before: auto; }
  .patient.short { break-inside: avoid; page-break-inside: avoid; }
  a { color: inherit; }
  tbody tr:nth-child(even) td { background: none; }
}
"""


def _e(value: object) -> str:
    return escape(text(value), quote=True)


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _anchors(subs: Sequence[Subject]) -> dict[str, str]:
    """A unique, attribute-safe element id per patient reference."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for s in subs:
        ref = patient(s)
        if ref in out:
            continue
        base = "p-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", ref).strip("-") or "x")
        anchor, n = base, 2
        while anchor in used:
            anchor, n = f"{base}-{n}", n + 1
        used.add(anchor)
        out[ref] = anchor
    return out


def _status_badge(st: str) -> str:
    cls = STATUS_CLASS.get(st, "v-other")
    label = STATUS_LABELS.get(st, st or "no status")
    return f'<span class="badge {cls}" data-status="{_e(st)}">{_e(label)}</span>'


def verdict_badge(criterion: Criterion, criterion_type: str | None = None) -> str:
    """The verdict in words, coloured by what it does (an exclusion's "met" is red)."""
    ctype = text(criterion.get("type")) if criterion_type is None else criterion_type
    code = verdict(criterion)
    eff = effect(ctype, code)
    label = VERDICT_LABELS.get(code, code or "no verdict")
    if eff == FAIL:
        label += " \u2014 excludes"
    return f'<span class="badge {EFFECT_CLASS[eff]}" data-verdict="{_e(code)}">{_e(label)}</span>'


def _header(result: Result, order: Order) -> str:
    subs = subjects(result)
    counts = status_counts(result)
    study = text(result.get("study")) or "(study not given)"
    n_criteria = len(criterion_order(result, order))
    meta = [
        ("Study", study),
        ("As of", text(result.get("asOf")) or "(not given)"),
        ("Rules version", text(result.get("rulesVersion")) or "(not given)"),
    ]
    if text(result.get("generator")):
        meta.append(("Generator", text(result.get("generator"))))
    meta += [
        ("Patients screened", str(len(subs))),
        ("Criteria", str(n_criteria)),
        ("Input errors", str(len(errors(result)))),
    ]
    parts = [
        "<header>",
        f"<h1>Prescreening report \u00b7 {_e(study)}</h1>",
        '<p class="sub">Prescreening from the electronic record only. Candidates still need the '
        "investigator's review, informed consent and the screening visit.</p>",
        '<dl class="meta" id="run-meta">',
        *(f'<div><dt>{_e(k)}</dt><dd data-key="{_e(k)}">{_e(v)}</dd></div>' for k, v in meta),
        "</dl>",
        '<div class="cards" id="status-counts">',
    ]
    for st, n in counts.items():
        cls = st if st in STATUS_PLURALS else "other"
        label = STATUS_PLURALS.get(st, st or "(no status)")
        parts.append(
            f'<div class="card {_e(cls)}" data-status="{_e(st)}"><span class="n">{n}</span>'
            f'<span class="l">{_e(label)}</span></div>'
        )
    parts.append("</div>")
    mismatches = status_mismatches(result)
    if mismatches:
        shown = ", ".join(f"{p or '(no id)'} ({s or 'none'}, rule gives {x})" for p, s, x in mismatches[:10])
        more = f" and {len(mismatches) - 10} more" if len(mismatches) > 10 else ""
        parts.append(
            f'<p class="note warn" id="status-mismatch"><strong>Check the result:</strong> '
            f"{_plural(len(mismatches), 'patient has', 'patients have')} a status that the criteria "
            f"do not give: {_e(shown)}{_e(more)}. The report shows the status as written.</p>"
        )
    parts.append("</header>")
    return "\n".join(parts)


def _legend() -> str:
    items = [
        ("pass", "pass (inclusion met / exclusion not met)"),
        ("other", "no verdict (not evaluable, not applicable, not reported)"),
        ("unknown", "unknown (stays in)"),
        ("fail", "excluded (inclusion not met / exclusion met)"),
    ]
    return (
        '<ul class="legend" aria-hidden="true">'
        + "".join(f'<li><span class="sw sw-{k}"></span>{_e(v)}</li>' for k, v in items)
        + "</ul>"
    )


def _funnel_section(result: Result, order: Order) -> str:
    steps = funnel(result, order)
    screened = len(subjects(result))
    rows = []
    for s in steps:
        rows.append(
            f'<tr data-criterion="{_e(s.id)}" title="{_e(step_summary(s))}">'
            f'<td class="n">{s.index}</td><td><code>{_e(s.id)}</code></td><td>{_e(s.type)}</td>'
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
        "patient (patients without a dermatomyositis diagnosis are assessed on the diagnosis only). "
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
                f'<tr data-component="{_e(comp.id)}"><td><code>{_e(comp.id)}</code></td>'
                f'<td class="n" data-col="met">{met}</td><td class="n" data-col="not-met">{not_met}</td>'
                f'<td class="n" data-col="unknown">{unknown}</td>'
                f'<td class="n" data-col="other">{len(verdicts) - met - not_met - unknown}</td></tr>'
            )
        out.append(
            f'<h3 class="subhead" style="margin-top:18px">Components of <code>{_e(spec.id)}</code></h3>'
            f'<table class="components" data-parent="{_e(spec.id)}"><thead><tr><th>Component</th>'
            '<th class="n">Met (abnormal)</th><th class="n">Not met</th><th class="n">Unknown</th>'
            '<th class="n">Other</th></tr></thead><tbody>' + "".join(rows) + "</tbody>"
            f"<caption>All {_plural(len(parents), 'patient', 'patients')} with a "
            f"<code>{_e(spec.id)}</code> verdict, whatever their status.</caption></table>"
        )
    return "".join(out)


def _worklist_section(entries: Sequence[WorklistEntry], anchors: Mapping[str, str]) -> str:
    head = (
        '<section id="worklist" aria-labelledby="worklist-h"><h2 id="worklist-h">Worklist</h2>'
        '<p class="muted small">Candidates and potential candidates, fewest unknown criteria first. '
        "Each line under \u201cTo resolve\u201d is data that would settle one unknown.</p>"
    )
    if not entries:
        return (
            head
            + '<p class="note" id="worklist-empty">No candidates or potential candidates in this run.</p>'
            + "</section>"
        )
    rows = []
    for n, e in enumerate(entries, start=1):
        items = "".join(f"<li><code>{_e(t.criterion)}</code>{_e(t.reason)}</li>" for t in e.to_resolve)
        resolve = (
            f'<ul class="resolve">{items}</ul>' if items else '<span class="muted">nothing unknown</span>'
        )
        if e.recheck_on:
            resolve += f'<div class="muted small">Recheck on {_e(e.recheck_on)}</div>'
        rows.append(
            f'<tr data-patient="{_e(e.patient)}"><td class="n">{n}</td>'
            f'<td class="patient-ref"><a href="#{_e(anchors.get(e.patient, ""))}"><code>{_e(e.patient)}</code></a></td>'
            f"<td>{_status_badge(e.status)}</td>"
            f'<td class="n" data-col="unknown-count">{e.unknown_count}</td><td>{resolve}</td></tr>'
        )
    return (
        head + '<table id="worklist-table"><thead><tr><th class="n">#</th><th>Patient</th><th>Status</th>'
        '<th class="n">Unknowns</th><th>To resolve</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
        "</section>"
    )


def _errors_section(result: Result) -> str:
    errs = errors(result)
    if not errs:
        return ""
    rows = "".join(
        f'<tr><td class="mono">{_e(err.get("file"))}</td><td class="n">{_e(err.get("line"))}</td>'
        f'<td class="mono">{_e(err.get("resource"))}</td><td>{_e(err.get("reason"))}</td></tr>'
        for err in errs
    )
    return (
        '<section id="errors" aria-labelledby="errors-h"><h2 id="errors-h">Input errors</h2>'
        f'<p class="muted small">{_plural(len(errs), "input", "inputs")} could not be read; '
        "patients in them may be missing from this report.</p>"
        '<table id="errors-table"><thead><tr><th>File</th><th class="n">Line</th><th>Resource</th>'
        f"<th>Reason</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _evidence_list(criterion: Criterion) -> str:
    items = [
        f"<li><code>{_e(ev.get('reference'))}</code>{_e(ev.get('detail'))}</li>" for ev in evidence(criterion)
    ]
    return f'<ul class="ev">{"".join(items)}</ul>' if items else '<span class="muted">\u2014</span>'


def _criterion_row(c: Criterion, component: bool) -> str:
    cid, ctype = text(c.get("id")), text(c.get("type"))
    eff = effect(ctype, verdict(c))
    mark = {UNKNOWN: " is-unknown", FAIL: " is-fail"}.get(eff, "")
    return (
        f'<tr class="{"component" if component else "criterion"}{mark}" data-criterion="{_e(cid)}">'
        f'<td><code>{_e(cid)}</code><span class="crit-type">{_e(ctype)}</span></td>'
        f"<td>{verdict_badge(c)}</td><td>{_e(c.get('reason'))}</td><td>{_evidence_list(c)}</td></tr>"
    )


def _patient_section(s: Subject, anchor: str, rank: Mapping[str, int]) -> str:
    cs = sorted(criteria(s), key=lambda c: rank.get(text(c.get("id")), len(rank)))
    rows: list[str] = []
    for c in cs:
        rows.append(_criterion_row(c, component=False))
        rows.extend(_criterion_row(comp, component=True) for comp in components(c))
    unknown = sum(1 for c in cs if verdict(c) == "unknown")
    extra = f'<span class="muted small">{_plural(unknown, "unknown criterion", "unknown criteria")}</span>'
    if text(s.get("recheckOn")):
        extra += f'<span class="muted small">recheck on {_e(s.get("recheckOn"))}</span>'
    return (
        f'<section class="patient {"short" if len(rows) <= SHORT_ROWS else "full"}" id="{_e(anchor)}"'
        f' data-patient="{_e(patient(s))}">'
        # The patient's heading is the table's first header row, so print repeats it on every page.
        '<table><thead><tr class="phead"><th colspan="4"><div class="patient-head">'
        f"<h3><code>{_e(patient(s) or '(no patient reference)')}</code></h3>"
        f"{_status_badge(status(s))}{extra}</div></th></tr>"
        "<tr><th>Criterion</th><th>Verdict</th><th>Reason</th><th>Evidence</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _patients_section(
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


def render_html(result: Result, order: Order = None) -> str:
    """The whole report page for one screening result.

    ``order`` lists criterion ids to put first (see :func:`criterion_order`); by default the
    result's own order.
    """
    subs = subjects(result)
    study = text(result.get("study")) or "screening"
    title = f"{study} prescreening report"
    if text(result.get("asOf")):
        title += f" \u2014 as of {text(result.get('asOf'))}"
    anchors = _anchors(subs)
    body: list[str] = [_header(result, order)]
    if subs:
        entries = worklist(result, order)
        body += [_funnel_section(result, order), _worklist_section(entries, anchors), _errors_section(result)]
        body.append(_patients_section(result, entries, anchors, order))
    else:
        body.append(
            '<section id="no-patients"><p class="note empty"><strong>No patients were screened.</strong> '
            + (
                "Check the input errors below."
                if errors(result)
                else "The run read no patient records: check the input selection."
            )
            + "</p></section>"
        )
        body.append(_errors_section(result))
    body.append(
        "<footer>Generated by fhir-adapter from the screening result file. This page contains patient "
        "identifiers: keep it where the record itself may be kept. It loads nothing from the network."
        "</footer>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}"/>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
        '<meta name="referrer" content="no-referrer"/>'
        f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body><main>\n"
        + "\n".join(part for part in body if part)
        + "\n</main></body></html>\n"
    )
