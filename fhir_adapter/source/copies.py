"""Two copies of one resource (the same ``Type/id`` read twice): which one a record keeps.

The same resource often arrives twice, in a Bundle and in an NDJSON file, or in two exports. Copies that
agree are one resource. Copies that differ are ordered by what the server says about them: the larger
``meta.versionId`` (when both are whole numbers), else the later ``meta.lastUpdated``. When nothing orders
them the first read is kept, and the conflict is reported, never settled in silence: one copy may say
"entered-in-error" or hold another value.
"""

from __future__ import annotations

from typing import Literal

import orjson

from fhir_adapter.client.urls import is_valid_id
from fhir_adapter.facts.fhirjson import UNKNOWN_INSTANT, instant
from fhir_adapter.model import InputProblem, Resource

Choice = Literal["first", "second", "same", "unordered"]


def _meta(resource: Resource) -> dict[str, object]:
    meta = resource.get("meta")
    return meta if isinstance(meta, dict) else {}


def _version(meta: dict[str, object]) -> int | None:
    value = meta.get("versionId")
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else None


def _content(resource: Resource) -> Resource:
    # meta (source, tags, the server's own bookkeeping) and the narrative say nothing a criterion reads.
    return {k: v for k, v in resource.items() if k not in ("meta", "text")}


def choose(first: Resource, second: Resource) -> Choice:
    """Which copy stands for the resource: ``same`` when they agree but for meta and narrative."""
    a, b = _meta(first), _meta(second)
    va, vb = _version(a), _version(b)
    if va is not None and vb is not None and va != vb:
        return "first" if va > vb else "second"
    ta, tb = instant(a.get("lastUpdated")), instant(b.get("lastUpdated"))
    if ta != tb and UNKNOWN_INSTANT not in (ta, tb):
        return "first" if ta > tb else "second"
    if _content(first) == _content(second):
        return "same"
    return "unordered"


def unordered(rtype: str, rid: str) -> str:
    """The problem of copies that differ with nothing to order them; the id shown only when it is a FHIR
    id (anything else is the input's free text, and problems reach the terminal)."""
    shown = f"{rtype}/{rid}" if is_valid_id(rid) else f"{rtype} with an id that is not a FHIR id"
    return f"{shown}: copies of it differ and neither is newer (meta.versionId, meta.lastUpdated): the first read is used"


def medication_conflict(key: str) -> InputProblem:
    """The problem of a Medication (``key`` ``Medication/id``) whose copies differ unordered: the run's,
    not a patient's (a Medication is read apart from the records that reference it)."""
    rid = key.removeprefix("Medication/")
    return InputProblem(
        "Medication resources", unordered("Medication", rid), resource=key if is_valid_id(rid) else None
    )


def choose_bodies(first: bytes, second: bytes) -> Choice:
    """:func:`choose` on two copies' JSON (Medications are kept as JSON until a record needs one). A copy
    that is not a JSON object loses to one that is; it is reported where a record would read it."""
    if first == second:
        return "same"
    a, b = _object(first), _object(second)
    if b is None:
        return "first"
    if a is None:
        return "second"
    return choose(a, b)


def _object(body: bytes) -> Resource | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None
