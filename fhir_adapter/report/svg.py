"""The attrition funnel as inline SVG: one stacked bar per criterion (passes / other / unknown / excluded).

Bars share one scale (all screened patients = full width) and the excluded segment sits at the
right end, so the part left of it is exactly as wide as the next criterion's bar. Every bar and
segment carries a ``<title>`` and the numbers are written as text, so colour is never the only cue.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from fhir_adapter.report.funnel import FunnelStep

WIDTH = 960
NUM_X = 0
ID_X = 30
BAR_X = 262
BAR_W = 440
NOTE_X = BAR_X + BAR_W + 14
ROW_H = 28
BAR_H = 16
GROUP_H = 26

COLOURS = {
    "pass": "#2f7a4d",
    "other": "#b8bfc7",
    "unknown": "url(#funnel-hatch)",
    "fail": "#b3261e",
    "screened": "#3d5470",
}
TEXT_ON = {
    "pass": "#ffffff",
    "other": "#1f2328",
    "unknown": "#1f2328",
    "fail": "#ffffff",
    "screened": "#ffffff",
}
SEGMENT_NAMES = {
    "pass": "pass",
    "other": "not evaluable, not applicable or not reported",
    "unknown": "unknown",
    "fail": "excluded",
}


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def step_summary(step: FunnelStep) -> str:
    """The row in words (the bar's <title>; also used by the table's caption-free readers)."""
    parts = [f"{step.passed} pass", f"{step.unknown} unknown", f"{step.failed} excluded"]
    if step.other:
        parts.append(f"{step.other} not evaluable, not applicable or not reported")
    reached = _plural(step.entering, "patient", "patients")
    head = f"{step.index}. {step.id} ({step.type or 'criterion'})"
    return f"{head}: {reached} reached this criterion; {', '.join(parts)}; {step.remaining} remain"


def _bar(x0: float, y: float, scale: float, segments: Sequence[tuple[str, int]], label: str) -> list[str]:
    out: list[str] = []
    cum = 0
    for kind, count in segments:
        if count <= 0:
            continue
        x = x0 + cum * scale
        w = count * scale
        cum += count
        name = SEGMENT_NAMES.get(kind, kind)
        out.append(
            f'<rect class="seg seg-{kind}" x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" height="{BAR_H}"'
            f' fill="{COLOURS[kind]}"><title>{_e(label)}: {count} {_e(name)}</title></rect>'
        )
        if w >= 9 * len(str(count)) + 6:
            out.append(
                f'<text class="seg-num" x="{_num(x + w / 2)}" y="{_num(y + BAR_H / 2)}" text-anchor="middle"'
                f' dominant-baseline="central" fill="{TEXT_ON[kind]}" aria-hidden="true">{count}</text>'
            )
    return out


def funnel_svg(steps: Sequence[FunnelStep], screened: int) -> str:
    """The funnel for ``screened`` patients; the caller writes the same numbers in a table."""
    scale = BAR_W / screened if screened else 0.0
    rows: list[str] = []
    y = 8.0

    def row_text(step_label: str, name: str, ty: float) -> None:
        mid = _num(ty + BAR_H / 2)
        if step_label:
            rows.append(
                f'<text class="f-num" x="{NUM_X}" y="{mid}" dominant-baseline="central">'
                f"{_e(step_label)}</text>"
            )
        rows.append(f'<text class="f-id" x="{ID_X}" y="{mid}" dominant-baseline="central">{_e(name)}</text>')

    # Everyone screened.
    rows.append(
        f'<g class="f-row f-screened"><title>{_plural(screened, "patient", "patients")} screened</title>'
    )
    row_text("", "Screened", y)
    rows.extend(_bar(BAR_X, y, scale, [("screened", screened)], "screened"))
    rows.append(
        f'<text class="f-note" x="{NOTE_X}" y="{_num(y + BAR_H / 2)}" dominant-baseline="central">'
        f'<tspan class="f-strong">{screened}</tspan> screened</text></g>'
    )
    y += ROW_H

    group = None
    for step in steps:
        if step.type != group:
            group = step.type
            heading = f"{group.capitalize()} criteria" if group else "Criteria"
            rows.append(
                f'<text class="f-group" x="{NUM_X}" y="{_num(y + GROUP_H - 10)}">{_e(heading)}</text>'
                f'<line class="f-rule" x1="{NUM_X}" x2="{WIDTH}" y1="{_num(y + GROUP_H - 4)}"'
                f' y2="{_num(y + GROUP_H - 4)}"/>'
            )
            y += GROUP_H
        summary = step_summary(step)
        rows.append(f'<g class="f-row" data-criterion="{_e(step.id)}"><title>{_e(summary)}</title>')
        row_text(f"{step.index}", step.id, y)
        # Track of the patients who reached this criterion (visible when all segments are empty).
        rows.append(
            f'<rect class="f-track" x="{BAR_X}" y="{_num(y)}" width="{_num(step.entering * scale)}"'
            f' height="{BAR_H}" fill="none" stroke="#d0d7de"/>'
        )
        rows.extend(
            _bar(
                BAR_X,
                y,
                scale,
                [
                    ("pass", step.passed),
                    ("other", step.other),
                    ("unknown", step.unknown),
                    ("fail", step.failed),
                ],
                step.id,
            )
        )
        note = f'<tspan class="f-strong">{step.remaining}</tspan> remain'
        if step.failed:
            note += f' <tspan class="f-fail">\u2212{step.failed} excluded</tspan>'
        if step.unknown:
            note += f' <tspan class="f-unknown">{step.unknown} unknown</tspan>'
        rows.append(
            f'<text class="f-note" x="{NOTE_X}" y="{_num(y + BAR_H / 2)}" dominant-baseline="central">'
            f"{note}</text></g>"
        )
        y += ROW_H

    height = _num(y + 4)
    title = f"Screening funnel: {_plural(screened, 'patient', 'patients')} screened"
    if steps:
        title += f", {steps[-1].remaining} not excluded after {len(steps)} criteria"
    desc = (
        "One bar per criterion in protocol order. Bar length: patients not excluded by an earlier "
        "criterion. Segments: pass (solid green), not evaluable / not applicable / not reported (grey), "
        "unknown (hatched amber), excluded (red, right end)."
    )
    return (
        '<svg class="funnel" role="img" aria-labelledby="funnel-title funnel-desc"'
        f' viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}"'
        ' preserveAspectRatio="xMinYMin meet">'
        f'<title id="funnel-title">{_e(title)}</title><desc id="funnel-desc">{_e(desc)}</desc>'
        '<defs><pattern id="funnel-hatch" patternUnits="userSpaceOnUse" width="6" height="6"'
        ' patternTransform="rotate(45)"><rect width="6" height="6" fill="#f0c24b"/>'
        '<rect width="2" height="6" fill="#c8961a"/></pattern></defs>' + "".join(rows) + "</svg>"
    )
