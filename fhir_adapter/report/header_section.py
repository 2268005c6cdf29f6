"""The page header: study and run facts, a card per status, and a warning when a status is not
what the criteria give."""

from __future__ import annotations

from fhir_adapter.report._data import Result, criterion_order, errors, subjects, text
from fhir_adapter.report.funnel import status_counts, status_mismatches
from fhir_adapter.report.markup import STATUS_PLURALS, Order, esc, plural


def header_section(result: Result, order: Order) -> str:
    subs = subjects(result)
    counts = status_counts(result)
    study = text(result.get("study")) or "(study not given)"
    n_criteria = len(criterion_order(result, order))
    meta = [("Study", study)]
    if text(result.get("title")):
        meta.append(("Title", text(result.get("title"))))
    meta += [
        ("As of", text(result.get("asOf")) or "(not given)"),
        ("Rules version", text(result.get("rulesVersion")) or "(not given)"),
    ]
    for key, label in (("source", "Source"), ("generated", "Generated"), ("generator", "Generator")):
        if text(result.get(key)):
            meta.append((label, text(result.get(key))))
    meta += [
        ("Patients screened", str(len(subs))),
        ("Criteria", str(n_criteria)),
        ("Input errors", str(len(errors(result)))),
    ]
    parts = [
        "<header>",
        f"<h1>Prescreening report \u00b7 {esc(study)}</h1>",
        '<p class="sub">Prescreening from the electronic record only. Candidates still need the '
        "investigator's review, informed consent and the screening visit.</p>",
        '<dl class="meta" id="run-meta">',
        *(f'<div><dt>{esc(k)}</dt><dd data-key="{esc(k)}">{esc(v)}</dd></div>' for k, v in meta),
        "</dl>",
        '<div class="cards" id="status-counts">',
    ]
    for st, n in counts.items():
        cls = st if st in STATUS_PLURALS else "other"
        label = STATUS_PLURALS.get(st, st or "(no status)")
        parts.append(
            f'<div class="card {esc(cls)}" data-status="{esc(st)}"><span class="n">{n}</span>'
            f'<span class="l">{esc(label)}</span></div>'
        )
    parts.append("</div>")
    mismatches = status_mismatches(result)
    if mismatches:
        shown = ", ".join(f"{p or '(no id)'} ({s or 'none'}, rule gives {x})" for p, s, x in mismatches[:10])
        more = f" and {len(mismatches) - 10} more" if len(mismatches) > 10 else ""
        parts.append(
            f'<p class="note warn" id="status-mismatch"><strong>Check the result:</strong> '
            f"{plural(len(mismatches), 'patient has', 'patients have')} a status that the criteria "
            f"do not give: {esc(shown)}{esc(more)}. The report shows the status as written.</p>"
        )
    parts.append("</header>")
    return "\n".join(parts)
