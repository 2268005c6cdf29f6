"""Make a Bundle's references local: ``urn:uuid:`` and absolute fullUrls become ``Type/id``.

Resources with no id get the id their fullUrl carries (carebundle does this), so the same patient has the
same id whether it arrives in a Bundle or in NDJSON.
"""

from __future__ import annotations

from typing import Any

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
        out = [_rewrite(r, mapping) if isinstance(r, dict) else r for r in out]
    return out


def _rewrite(resource: Resource, mapping: dict[str, str]) -> Resource:
    """A copy of ``resource`` with every ``reference`` in ``mapping`` replaced, without recursion (a
    resource nested as deep as a JSON parser allows must not exhaust the stack)."""
    top: dict[str, Any] = {}
    stack: list[tuple[Any, Any]] = [(resource, top)]
    while stack:
        source, target = stack.pop()
        if isinstance(source, dict):
            for key, value in source.items():
                if key == "reference" and isinstance(value, str) and value in mapping:
                    target[key] = mapping[value]
                elif isinstance(value, dict):
                    target[key] = {}
                    stack.append((value, target[key]))
                elif isinstance(value, list):
                    target[key] = [None] * len(value)
                    stack.append((value, target[key]))
                else:
                    target[key] = value
        else:  # a list
            for i, value in enumerate(source):
                if isinstance(value, dict):
                    target[i] = {}
                    stack.append((value, target[i]))
                elif isinstance(value, list):
                    target[i] = [None] * len(value)
                    stack.append((value, target[i]))
                else:
                    target[i] = value
    return top
