"""The short human summary printed after a run: patients per status, verdicts per criterion."""

from __future__ import annotations

from fhir_adapter.model import InputProblem
from fhir_adapter.output.printable import printable
from fhir_adapter.output.result_file import Tally

_STATUSES = ("candidate", "potential-candidate", "ineligible")
_COLUMNS = ("met", "not-met", "unknown")


def render(tally: Tally, errors: list[InputProblem], order: list[str]) -> str:
    lines = [f"Screened {tally.patients} patient(s)."]
    lines.append("  " + "   ".join(f"{s}: {tally.statuses.get(s, 0)}" for s in _STATUSES))
    if tally.criteria:
        width = max(len(c) for c in order)
        lines.append("")
        lines.append(f"  {'criterion':<{width}}  " + "  ".join(f"{c:>8}" for c in _COLUMNS) + "  other")
        for cid in order:
            counts = tally.criteria.get(cid)
            if not counts:
                continue
            other = sum(v for k, v in counts.items() if k not in _COLUMNS)
            lines.append(
                f"  {cid:<{width}}  "
                + "  ".join(f"{counts.get(c, 0):>8}" for c in _COLUMNS)
                + f"  {other:>5}"
            )
    if errors:
        lines.append("")
        lines.append(f'{len(errors)} input(s) could not be read (listed under "errors" in the result):')
        for e in errors[:10]:
            where = f":{e.line}" if e.line else ""
            lines.append(printable(f"  {e.file}{where}: {e.reason}"))
        if len(errors) > 10:
            lines.append(f"  ... and {len(errors) - 10} more")
    return "\n".join(lines)
