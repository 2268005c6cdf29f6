"""Make a Bundle's references local: ``urn:uuid:`` and absolute fullUrls become ``Type/id``.

Resources with no id get the id their fullUrl carries (carebundle does this), so the same patient has the
same id whether it arrives in a Bundle or in NDJSON.
"""

from __future__ import annotations

from typing import Any

import orjson

from fhir_adapter.model import InputProblem, Resource


def _id_from_full_url(full_url: str) -> str | None:
    tail = full_url.rstrip("/").rsplit("/", 1)[-1]
    if full_url.startswith("urn:uuid:"):
        return full_url[len("urn:uuid:") :]
    return tail or None


def localise_bundle(entries: list[Any]) -> list[Resource | InputProblem | None]:
    mapping: dict[str, str] = {}
    out: list[Resource | InputProblem | None] = []
    for entry in entries:
        if not isinstance(entry, dict):
            out.append(InputProblem("", "entry is not an object"))
            continue
        resource = entry.get("resource")
        if resource is None:
            # A batch or transaction response, or a history entry's deletion, need none; any other
            # entry without one has lost it, which the run must say.
            lost = "response" not in entry and "request" not in entry
            out.append(InputProblem("", "entry has no resource") if lost else None)
            continue
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            out.append(InputProblem("", "entry.resource has no resourceType"))
            continue
        full_url = entry.get("fullUrl")
        if not resource.get("id") and isinstance(full_url, str):
            new_id = _id_from_full_url(full_url)
            if new_id:
                resource = {**resource, "id": new_id}
        if isinstance(full_url, str) and resource.get("id"):
            mapping[full_url] = f"{resource['resourceType']}/{resource['id']}"
        out.append(resource)
    if mapping:
        out = [_rewrite(r, mapping) if isinstance(r, dict) and _may_cite(r, mapping) else r for r in out]
    return out


_REFERENCE = b'"reference":"'


def _may_cite(resource: Resource, mapping: dict[str, str]) -> bool:
    """False when no ``reference`` of the resource is one of ``mapping``'s, read off its JSON: walking
    it costs several times more, and most Bundles a server returns cite ``Type/id``, not fullUrls.
    (In orjson's compact JSON ``"reference":"`` can only open a key's string value: a quote inside a
    string is escaped. A value with an escape is left to the walk.)"""
    try:
        data = orjson.dumps(resource)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: the walk decides
        return True
    at = data.find(_REFERENCE)
    while at >= 0:
        start = at + len(_REFERENCE)
        end = data.find(b'"', start)
        value = data[start:end]
        if b"\\" in value or value.decode() in mapping:
            return True
        at = data.find(_REFERENCE, end)
    return False


def _rewrite(resource: Resource, mapping: dict[str, str]) -> Resource:
    """``resource`` with every ``reference`` in ``mapping`` replaced, in place: the reader owns what it
    parsed and nothing else holds it, and copying every resource of a Bundle cost a third of a screen of
    Bundle files (docs/NOTES.md). Without recursion: a resource nested as deep as a JSON parser allows
    must not exhaust the stack."""
    stack: list[Any] = [resource]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            ref = node.get("reference")
            if type(ref) is str and ref in mapping:
                node["reference"] = mapping[ref]
            stack.extend(v for v in node.values() if type(v) is dict or type(v) is list)
        else:
            stack.extend(v for v in node if type(v) is dict or type(v) is list)
    return resource
