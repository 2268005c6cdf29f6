"""Where one resource read from a file export goes: the rules the local index and the Spark engine share.

:func:`gate_hits` is pass 1 (which resources can make their patient a candidate, and the counts of the
gate's types a non-candidate's stub carries); :func:`take` is pass 2 for a parsed resource (a problem,
a Medication, a type no criterion reads, or a row of its patient). The local engine
(:mod:`fhir_adapter.source.patient_index`) and the Spark engine (:mod:`fhir_adapter.spark.partitions`)
both call them, so a resource cannot be routed one way on one machine and another way on a cluster.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterator
from typing import Literal

import orjson

from fhir_adapter.facts.fhirjson import kept, patient_of
from fhir_adapter.model import InputProblem, Resource
from fhir_adapter.screening import Gate
from fhir_adapter.source.grouping import Row
from fhir_adapter.source.reader import Item, Line, parse_line

_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")
_WORD = re.compile(r"\s{0,4}[A-Za-z]{1,40}\s{0,4}")

Taken = (
    tuple[Literal["problem"], str, InputProblem]
    | tuple[Literal["medication"], str, bytes]
    | tuple[Literal["skip"], str, None]
    | tuple[Literal["patient", "resource"], str, Row | None]
)


def gate_hits(item: Item | Line, gate: Gate) -> Iterator[tuple[str, str, bool]]:
    """Pass 1: ``(patient id, type, admitted by the gate)`` of each resource of the gate's types."""
    types = gate.types
    if isinstance(item, Line):
        resources = [r.resource for r in parse_line(item) if isinstance(r, Item)]
    else:
        resources = [item.resource]
    for resource in resources:
        rtype = resource.get("resourceType")
        if rtype not in types:
            continue
        pid = patient_of(resource)
        if pid is not None:
            yield pid, rtype, gate.admits(resource)


def take(
    item: Item,
    types: frozenset[str] | None,
    wanted: Container[str] | None = None,
    body: bytes | None = None,
) -> Taken:
    """Pass 2, one parsed resource: ``("problem", "", problem)``; ``("medication", "Medication/x", json)``;
    ``("skip", type, None)`` for a type no criterion reads (``""``: a Medication without an id);
    ``("patient" | "resource", patient id, row)`` for a kept resource (a Patient's own row, or another),
    the row None when its patient is not ``wanted`` (None: every patient is). ``body``: the resource's
    own JSON when the caller has it (an NDJSON line), kept as it is instead of written again."""
    resource = item.resource
    rtype = resource["resourceType"]
    where = f" line {item.line}" if item.line else ""
    if not _TYPE_NAME.fullmatch(rtype):
        # Quoted only when it is a word: free text here may be anything, a patient's name included, and
        # problems reach the terminal and the logs.
        shown = repr(rtype) if _WORD.fullmatch(rtype) else "(not a name)"
        return (
            "problem",
            "",
            InputProblem(item.file, f"resourceType {shown} is not a FHIR resource type", line=item.line),
        )
    if rtype == "Medication":
        rid = resource.get("id")
        if not isinstance(rid, str):
            return ("skip", "", None)
        if body is None:
            body = _dumped(resource)
        return ("medication", f"Medication/{rid}", body) if body is not None else _too_deep(item)
    if types is not None and rtype not in types and rtype != "Patient":
        return ("skip", rtype, None)
    pid = patient_of(resource)
    if pid is None:
        what = "has no valid id" if rtype == "Patient" else "has no patient reference"
        return (
            "problem",
            "",
            InputProblem(item.file, f"{rtype}/{_shown_id(resource)} {what}{where}", line=item.line),
        )
    kind: Literal["patient", "resource"] = "patient" if rtype == "Patient" else "resource"
    if wanted is not None and pid not in wanted:
        return (kind, pid, None)  # not written again: most of an export's parsed lines end here
    if body is None:
        body = _dumped(resource)
    return (kind, pid, Row(rtype, body, item.file, item.line)) if body is not None else _too_deep(item)


def _too_deep(item: Item) -> Taken:
    what = f"{item.resource['resourceType']}/{_shown_id(item.resource)}"
    return ("problem", "", InputProblem(item.file, f"{what} is nested too deeply: skipped", line=item.line))


def _dumped(resource: Resource) -> bytes | None:
    """The resource as JSON again, or None when it nests deeper than a writer allows (a parser accepts
    1,024 levels, orjson writes 255: no real resource comes near either)."""
    try:
        return kept(orjson.dumps(resource))  # kept in the spool
    except orjson.JSONEncodeError:
        return None


def _shown_id(resource: Resource) -> str:
    rid = resource.get("id")
    return rid[:64] if isinstance(rid, str) and rid else "?"
