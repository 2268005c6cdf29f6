"""``python -m fhir_adapter.report RESULT.json --html report.html --csv worklist.csv``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fhir_adapter.report import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fhir_adapter.report", description=__doc__)
    parser.add_argument("result", type=Path, help="screening result JSON")
    parser.add_argument("--html", type=Path, help="write the report page here")
    parser.add_argument("--csv", type=Path, help="write the worklist CSV here")
    args = parser.parse_args(argv)
    if args.html is None and args.csv is None:
        parser.error("give --html and/or --csv")
    try:
        result = json.loads(args.result.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.result}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(result, dict):
        print(f"{args.result}: not a screening result (expected a JSON object)", file=sys.stderr)
        return 2
    write_report(result, args.html, args.csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
