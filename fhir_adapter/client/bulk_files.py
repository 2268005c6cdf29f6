"""What a manifest's ``error`` and ``deleted`` files say.

``error`` files are NDJSON OperationOutcomes (IG): each issue becomes an ``InputProblem`` with its
severity, code and the resource type it names (from ``expression``/``location``), never its free text,
which may quote patient data. ``deleted`` files are NDJSON Bundles whose entries are ``DELETE`` requests
(IG v2, for ``_since`` exports): they become ``Type/id`` references the sync applies.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

import orjson

from fhir_adapter.client.bulk_download import Downloaded
from fhir_adapter.model import InputProblem

log = logging.getLogger(__name__)

MAX_LINE: Final = 16 * 1024 * 1024  # an OperationOutcome or a Bundle of DELETEs; far more is not one

_REF: Final = re.compile(r"(?:^|/)([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]*)?/?$")
_TYPE_AT_START: Final = re.compile(r"([A-Z][A-Za-z]{1,63})\b")
_WORD: Final = re.compile(r"[a-z][a-z0-9-]{0,63}")


def ndjson_lines(path: Path) -> Iterator[tuple[int, object]]:
    """Parsed lines (None when unreadable); a line past ``MAX_LINE`` is skipped without being held."""
    with path.open("rb") as fh:
        n = 0
        while raw := fh.readline(MAX_LINE + 1):
            n += 1
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                while (rest := fh.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                    pass
                yield n, None
                continue
            if not raw.strip():
                continue
            try:
                yield n, orjson.loads(raw)
            except orjson.JSONDecodeError:
                yield n, None


def error_problems(files: Iterable[Downloaded], label: str) -> list[InputProblem]:
    """One problem per issue of each OperationOutcome line; ``label`` names the export (no URL query)."""
    problems: list[InputProblem] = []
    for f in files:
        where = f"{label} error file {f.path.name}"
        for line, body in ndjson_lines(f.path):
            if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
                problems.append(InputProblem(where, "not an OperationOutcome", line=line))
                continue
            issues = [i for i in body.get("issue") or [] if isinstance(i, dict)]
            if not issues:
                problems.append(InputProblem(where, "export error (no issue given)", line=line))
            for issue in issues:
                severity = _word(issue.get("severity"))
                code = _word(issue.get("code"))
                rtype = _resource_type(issue)
                reason = f"export error {severity}/{code}" + (f" for a {rtype}" if rtype else "")
                problems.append(InputProblem(where, reason, line=line))
    return problems


def deleted_refs(files: Iterable[Downloaded]) -> list[str]:
    """``Type/id`` of every DELETE entry in the deleted files, sorted and unique."""
    refs: set[str] = set()
    bad = 0
    for f in files:
        for _, body in ndjson_lines(f.path):
            if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
                bad += 1
                continue
            for entry in body.get("entry") or []:
                request = entry.get("request") if isinstance(entry, dict) else None
                if not isinstance(request, dict) or str(request.get("method", "")).upper() != "DELETE":
                    continue
                url = request.get("url")
                match = _REF.search(url.split("?", 1)[0]) if isinstance(url, str) else None
                if match:
                    refs.add(f"{match.group(1)}/{match.group(2)}")
                else:
                    bad += 1
    if bad:
        log.warning("bulk export: %d line(s) or entries of the deleted files could not be read", bad)
    return sorted(refs)


def _word(value: object) -> str:
    return value if isinstance(value, str) and _WORD.fullmatch(value) else "?"


def _resource_type(issue: dict[str, object]) -> str | None:
    for key in ("expression", "location"):
        values = issue.get(key)
        for value in values if isinstance(values, list) else []:
            match = _TYPE_AT_START.match(value) if isinstance(value, str) else None
            if match:
                return match.group(1)
    return None
