"""What every section of the report page shares: escaping, plurals, status and verdict badges."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from fhir_adapter.report._data import Criterion, text, verdict
from fhir_adapter.report.funnel import FAIL, OTHER, PASS, UNKNOWN, effect

Order = Sequence[str] | None

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
EFFECT_CLASS = {PASS: "v-pass", FAIL: "v-fail", UNKNOWN: "v-unknown", OTHER: "v-other"}


def esc(value: object) -> str:
    return escape(text(value), quote=True)


def plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def status_badge(st: str) -> str:
    cls = STATUS_CLASS.get(st, "v-other")
    label = STATUS_LABELS.get(st, st or "no status")
    return f'<span class="badge {cls}" data-status="{esc(st)}">{esc(label)}</span>'


def verdict_badge(criterion: Criterion, criterion_type: str | None = None) -> str:
    """The verdict in words, coloured by what it does (an exclusion's "met" is red)."""
    ctype = text(criterion.get("type")) if criterion_type is None else criterion_type
    code = verdict(criterion)
    eff = effect(ctype, code)
    label = VERDICT_LABELS.get(code, code or "no verdict")
    if eff == FAIL:
        label += " \u2014 excludes"
    return f'<span class="badge {EFFECT_CLASS[eff]}" data-verdict="{esc(code)}">{esc(label)}</span>'
