"""``fhir-adapter load``: upload FHIR files to a server as transaction Bundles of ``PUT Type/id``.

PUT with the file's own ids keeps them stable, so the server holds the same ``Type/id`` references
the files use (the reader has already turned ``urn:uuid`` references in Bundles into ``Type/id``), a
screen of the server can be compared with a screen of the files, and loading twice changes nothing
(servers that skip no-op updates, as HAPI does, do not even make a new version).

Order matters when the server checks referential integrity: resources that belong to no patient
(Medication, Organization, Practitioner...) go first, then each patient with everything about them in
the same transaction where it fits, so references inside a patient's record resolve within it. A
chunk the server rejects is halved until the resources it refuses stand alone; those are tried again
after all others (a reference into a later chunk), and only then reported one by one.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from fhir_adapter.client.http import FhirClient
from fhir_adapter.errors import AuthError, ServerError, ServerUnreachable
from fhir_adapter.facts.fhirjson import patient_of
from fhir_adapter.model import InputProblem, Resource
from fhir_adapter.source.reader import Item, read_all

log = logging.getLogger(__name__)

DEFAULT_CHUNK: Final = 200
_PASSES: Final = 3


@dataclass
class LoadReport:
    resources: int = 0  # distinct resources read from the files
    created: int = 0  # 201 Created
    updated: int = 0  # 200 OK (an update, or a no-op re-load)
    transactions: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0  # the same Type/id seen again (first one kept, as the screen does)
    problems: list[InputProblem] = field(default_factory=list)

    def render(self) -> str:
        types = ", ".join(f"{t} {n}" for t, n in sorted(self.by_type.items()))
        lines = [
            f"Loaded {self.created + self.updated} of {self.resources} resource(s) in {self.transactions} "
            f"transaction(s): created {self.created}, updated or unchanged {self.updated}.",
        ]
        if types:
            lines.append(f"  {types}")
        if self.duplicates:
            lines.append(f"  {self.duplicates} duplicate Type/id skipped (the first occurrence was loaded)")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  {p.file}: {p.reason}" for p in self.problems[:20])
            if len(self.problems) > 20:
                lines.append(f"  ... and {len(self.problems) - 20} more")
        return "\n".join(lines)


def load_paths(client: FhirClient, paths: Iterable[Path], chunk_size: int = DEFAULT_CHUNK) -> LoadReport:
    """Read ``paths`` and PUT every resource with an id; returns counts and problems."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    report = LoadReport()
    shared: list[Resource] = []
    by_patient: dict[str, list[Resource]] = {}
    seen: set[tuple[str, str]] = set()
    for item in read_all(paths):
        if isinstance(item, InputProblem):
            report.problems.append(item)
            continue
        resource = item.resource
        rid = resource.get("id")
        rtype = str(resource["resourceType"])
        if not isinstance(rid, str) or not rid:
            report.problems.append(_no_id(item, rtype))
            continue
        if (rtype, rid) in seen:
            report.duplicates += 1
            continue
        seen.add((rtype, rid))
        pid = patient_of(resource)
        if pid is None:
            shared.append(resource)
        else:
            by_patient.setdefault(pid, []).append(resource)
    report.resources = len(seen)

    pending = list(_chunks(shared, by_patient, chunk_size))
    for attempt in range(_PASSES):
        refused = _send_all(client, pending, report)
        if not refused:
            break
        if attempt == _PASSES - 1:
            for resource, error in refused:
                report.problems.append(
                    InputProblem(client.base_url, f"{resource['resourceType']}/{resource['id']}: {error}")
                )
            break
        # Refused resources go again, together: one may reference another, or a resource that a
        # later chunk of this pass created.
        singles = [resource for resource, _ in refused]
        pending = [singles[i : i + chunk_size] for i in range(0, len(singles), chunk_size)]
    return report


def _chunks(
    shared: list[Resource], by_patient: dict[str, list[Resource]], size: int
) -> Iterator[list[Resource]]:
    for start in range(0, len(shared), size):
        yield shared[start : start + size]
    chunk: list[Resource] = []
    for pid in sorted(by_patient):
        group = sorted(by_patient[pid], key=lambda r: r["resourceType"] != "Patient")
        if chunk and len(chunk) + len(group) > size:
            yield chunk
            chunk = []
        if len(group) > size:
            # One patient larger than a chunk: split it; the retry pass resolves references across parts.
            for start in range(0, len(group), size):
                yield group[start : start + size]
            continue
        chunk.extend(group)
    if chunk:
        yield chunk


def _send_all(
    client: FhirClient, chunks: list[list[Resource]], report: LoadReport
) -> list[tuple[Resource, str]]:
    """Send every chunk; a refused chunk is halved until the refused resources stand alone.

    A transaction is all-or-nothing, so one resource the server rejects (an invalid code, say)
    would otherwise take the other patients of its chunk down with it.
    """
    refused: list[tuple[Resource, str]] = []
    queue = deque(chunks)
    while queue:
        chunk = queue.popleft()
        error = _send(client, chunk, report)
        if error is None:
            continue
        if len(chunk) == 1:
            refused.append((chunk[0], error))
            continue
        middle = len(chunk) // 2
        queue.extendleft([chunk[middle:], chunk[:middle]])
    return refused


def _send(client: FhirClient, chunk: list[Resource], report: LoadReport) -> str | None:
    """POST one transaction; count it and return None, or return why the server refused it."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"{client.base_url}{r['resourceType']}/{r['id']}",
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in chunk
        ],
    }
    try:
        response = client.transaction(bundle)
    except AuthError:
        raise
    except ServerError as exc:
        if isinstance(exc, ServerUnreachable):
            raise
        return str(exc)
    report.transactions += 1
    for resource, entry in zip(chunk, response.get("entry") or [], strict=False):
        status = str((entry.get("response") or {}).get("status", "")) if isinstance(entry, dict) else ""
        if status.startswith("201"):
            report.created += 1
        else:
            report.updated += 1
        report.by_type[str(resource["resourceType"])] += 1
    return None


def _no_id(item: Item, rtype: str) -> InputProblem:
    return InputProblem(item.file, f"{rtype} has no id, so it cannot be PUT; give it one", line=item.line)
