"""Every reading of a concept the record holds, through one path: whole Observations, the Observations a
DiagnosticReport contains, and the ``component`` entries of either.

A reading that is not a whole Observation of the record is given to the fact kinds as a *view*: a plain
Observation-shaped dict (so ``in_window``, ``reading``, ``reference_high`` and the polarity words work on it
unchanged) that carries a :class:`Via` under the key :data:`VIA`, saying which resource the evidence must
cite (always a resolvable ``Type/id``: the parent Observation, or the DiagnosticReport that contains it) and
what the reference alone does not say (the component's name, the contained Observation's id).

- **Components**: a component whose ``code`` is in the concept is a reading with the parent's status,
  subject, effective date and ``issued``, and its own value, interpretation and reference range. When the
  parent itself is coded as the concept, its components are its parts (the muscle groups of an MMT-8), not
  readings of it, and are skipped.
- **DiagnosticReport panels**: ``result`` references to Observations of the record and Observations
  ``contained`` in the report. The report's effective date and ``issued`` apply where the member has none
  of its own. An Observation that is both in the record and referenced by a report is read once (as itself,
  with the report's date when it lacks one).

Views are built once per record (``Context.observations``); a record without DiagnosticReports and
components is read exactly as before (the same resource objects).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fhir_adapter.facts.fhirjson import codings, is_ignored, ref_id
from fhir_adapter.model import PatientRecord, Resource

VIA = "fhir-adapter:via"  # not a FHIR element name (those never hold a colon), so it cannot collide
EFFECTIVE_KEYS = ("effectiveDateTime", "effectiveInstant", "effectivePeriod", "effectiveTiming")
_PARENT_KEYS = ("resourceType", "id", "status", "subject", *EFFECTIVE_KEYS, "issued")
_COMPONENT_KEYS = ("code", "interpretation", "referenceRange", "dataAbsentReason")
_LABEL_CHARS = 60


@dataclass(frozen=True, slots=True)
class Via:
    """How a view reached the record: ``reference`` for the evidence, ``detail`` for its text, ``slot`` the
    whole reading it belongs to (two components of one Observation share it), ``from_note`` for values
    read from clinical text."""

    reference: str
    detail: str
    slot: str
    from_note: bool = False


def via(obs: Resource) -> Via | None:
    found = obs.get(VIA)
    return found if isinstance(found, Via) else None


def ref_of(obs: Resource) -> str:
    """The ``Type/id`` evidence cites for a reading."""
    found = via(obs)
    return found.reference if found else f"Observation/{obs.get('id', '?')}"


def where(obs: Resource) -> str:
    """ " (component 'MMT-8 total')" and the like: appended to an evidence detail; "" for a whole result."""
    found = via(obs)
    if found is None or not found.detail:
        return ""
    return found.detail if found.from_note else f" ({found.detail})"


def slot_of(obs: Resource) -> str:
    found = via(obs)
    return found.slot if found else f"Observation/{obs.get('id', '?')}"


def from_note(obs: Resource) -> bool:
    found = via(obs)
    return found is not None and found.from_note


@dataclass(frozen=True, slots=True)
class Views:
    """One record's Observation readings. ``whole`` is the record's own tuple when no report changed it."""

    whole: tuple[Resource, ...]
    components: tuple[Resource, ...]
    same_as_record: bool


def build_views(record: PatientRecord) -> Views:
    observations = record.of_type("Observation")
    reports = sorted(
        (r for r in record.of_type("DiagnosticReport") if not is_ignored(r)),
        key=lambda r: str(r.get("id", "")),
    )
    dated_by: dict[str, Resource] = {}  # "Observation/id" -> the first report that references it
    contained: list[Resource] = []
    for report in reports:
        own = _contained_observations(report)
        for result in _list(report.get("result")):
            ref = result.get("reference") if isinstance(result, dict) else None
            if isinstance(ref, str) and not ref.startswith("#"):
                key = ref_id(ref)
                if key and key.startswith("Observation/"):
                    dated_by.setdefault(key, report)
        contained.extend(_contained_view(obs, report) for obs in own)
    whole: list[Resource] = []
    changed = bool(contained)
    for obs in observations:
        dating = dated_by.get(f"Observation/{obs.get('id')}")
        view = _dated(obs, dating) if dating is not None else obs
        changed = changed or view is not obs
        whole.append(view)
    whole.extend(contained)
    # Most Observations have no components: their generator is not even started.
    components = tuple(c for obs in whole if "component" in obs for c in _components(obs))
    if not changed:
        return Views(observations, components, same_as_record=True)
    return Views(tuple(whole), components, same_as_record=False)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _contained_observations(report: Resource) -> list[Resource]:
    return [
        c
        for c in _list(report.get("contained"))
        if isinstance(c, dict) and c.get("resourceType") == "Observation" and isinstance(c.get("id"), str)
    ]


def _inherit(member: Resource, report: Resource) -> Resource:
    """The member with the report's effective date and issued where it has none; itself if nothing changes."""
    missing_date = not any(k in member for k in EFFECTIVE_KEYS)
    missing_issued = "issued" not in member and "issued" in report
    if not (missing_date and any(k in report for k in EFFECTIVE_KEYS)) and not missing_issued:
        return member
    out = dict(member)
    if missing_date:
        for key in EFFECTIVE_KEYS:
            if key in report:
                out[key] = report[key]
    if missing_issued:
        out["issued"] = report["issued"]
    return out


def _dated(obs: Resource, report: Resource) -> Resource:
    view = _inherit(obs, report)
    if view is obs:
        return obs
    ref = f"Observation/{obs.get('id', '?')}"
    view[VIA] = Via(ref, f"date from DiagnosticReport/{report.get('id', '?')}", slot=ref)
    return view


def _contained_view(obs: Resource, report: Resource) -> Resource:
    view = dict(_inherit(obs, report))
    for key in ("subject", "status"):
        if key not in view and key in report:
            view[key] = report[key]
    report_ref = f"DiagnosticReport/{report.get('id', '?')}"
    # Ties between readings compare the resource id (spec section 2): the report's, which is what is cited.
    view["id"] = str(report.get("id", "?"))
    view[VIA] = Via(report_ref, f"contained Observation #{obs['id']}", slot=f"{report_ref}#{obs['id']}")
    return view


def label(cc: Any) -> str:
    """A CodeableConcept's name for people: its text, else a display, else a code."""
    text = cc.get("text") if isinstance(cc, dict) else None
    if isinstance(text, str) and text.strip():
        return text.strip()[:_LABEL_CHARS]
    found = list(codings(cc))
    for _, _code, display in found:
        if display:
            return display[:_LABEL_CHARS]
    for _, code, _ in found:
        if code:
            return code[:_LABEL_CHARS]
    return "?"


def _components(obs: Resource) -> Iterable[Resource]:
    parent = via(obs)
    for comp in _list(obs.get("component")):
        if not isinstance(comp, dict) or not isinstance(comp.get("code"), dict):
            continue
        view: Resource = {k: obs[k] for k in _PARENT_KEYS if k in obs}
        view.update({k: v for k, v in comp.items() if k in _COMPONENT_KEYS or k.startswith("value")})
        name = f"component '{label(comp['code'])}'"
        if parent is not None and parent.detail.startswith("contained"):
            name += f" of {parent.detail}"
        view[VIA] = Via(
            parent.reference if parent else f"Observation/{obs.get('id', '?')}", name, slot_of(obs)
        )
        yield view
