"""One candidate's data from a server, as the same ``PatientRecord`` the file path builds.

Two ways, chosen from the CapabilityStatement: ``Patient/ID/$everything`` (one request plus its pages)
when the server lists the operation, else one search per resource type the criteria read
(``patient=ID``), with ``_include`` of the Medications that orders and statements reference.

A CapabilityStatement can lie: ``$everything`` listed but answered with 405/501 (or 400/404 for a
patient the server does have, which one typed read of the Patient tells apart from a missing
patient) raises ``OperationNotSupported``, and the source switches to typed searches for the rest of
the run.

The typed searches are not narrowed to the codes the criteria need, although servers support
``code=``: the value sets also match by text pattern (``code.text`` / ``display``) for local codes, and
a code-restricted search would drop exactly those resources, so the verdicts would differ from the
file path's. Paging is what the restriction would save; ``_count`` keeps that to a page or two.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from fhir_adapter.client.http import FhirClient
from fhir_adapter.client.urls import is_valid_id
from fhir_adapter.errors import OperationNotSupported, ServerError
from fhir_adapter.facts.fhirjson import patient_of
from fhir_adapter.model import InputProblem, PatientRecord, Resource
from fhir_adapter.source.copies import choose, unordered
from fhir_adapter.source.grouping import MED_TYPES, medication_keys
from fhir_adapter.source.strategies import read_capabilities

log = logging.getLogger(__name__)

Strategy = Literal["everything", "typed"]

PAGE_SIZE: Final = 500
_ABSENT: Final = frozenset({404, 410})
# Answers to $everything that say "no such operation"; 400/404/410 may instead mean "no such patient".
_NOT_SUPPORTED: Final = frozenset({405, 501})
_AMBIGUOUS: Final = frozenset({400, 404, 410})
_IDS_PER_SEARCH: Final = 50


@dataclass(frozen=True, slots=True)
class Fetched:
    """A patient's record, what it cost, and the version of every resource read (for Provenance)."""

    record: PatientRecord
    requests: int
    versions: Mapping[str, str]  # "Observation/abc" -> "3"
    problems: tuple[InputProblem, ...] = ()  # resources of the answer that could not be used

    @property
    def n_conditions(self) -> int:
        return len(self.record.of_type("Condition"))


def choose_strategy(capabilities: Resource) -> Strategy:
    """``everything`` when the CapabilityStatement lists Patient ``$everything``, else ``typed``."""
    return "everything" if read_capabilities(capabilities).everything else "typed"


def fetch_record(
    client: FhirClient, patient_id: str, strategy: Strategy, types: frozenset[str]
) -> Fetched | None:
    """The record of ``Patient/patient_id`` (the resource ``types`` the trials read); None when the
    server has no such patient."""
    before = client.thread_request_count
    resources: list[Resource]
    if strategy == "everything":
        found = _everything(client, patient_id)
        if found is None:
            return None
        if not any(r.get("resourceType") == "Patient" and r.get("id") == patient_id for r in found):
            # Screening it anyway would judge a record without birth date or sex as if it were complete.
            raise ServerError(
                f"GET Patient/{patient_id}/$everything: the answer does not hold Patient/{patient_id}"
            )
        resources = found
    else:
        response = client.read("Patient", patient_id)
        if response is None or response.body is None:
            return None
        resources = [response.body]
        for rtype in sorted(types - {"Patient", "Medication"}):
            params: list[tuple[str, str | int]] = [("patient", patient_id), ("_count", PAGE_SIZE)]
            if rtype in MED_TYPES:
                params.append(("_include", f"{rtype}:medication"))
            resources.extend(client.search(rtype, params))
    record, versions, missing, problems = build_record(patient_id, resources, types)
    if missing:
        # $everything and _include should have brought these; fetch what a server left out.
        extra = list(_medications_by_id(client, missing))
        record, versions, _, problems = build_record(patient_id, [*resources, *extra], types)
    patient = f"Patient/{patient_id}"
    unusable = tuple(InputProblem(client.base_url, f"{patient}: {p}", resource=patient) for p in problems)
    return Fetched(record, client.thread_request_count - before, versions, unusable)


def build_record(
    patient_id: str, resources: Iterable[Resource], types: frozenset[str]
) -> tuple[PatientRecord, dict[str, str], list[str], list[str]]:
    """Group a server's resources as ``PatientIndex.record`` groups a file's.

    Returns the record, the versionId of every resource kept, the ids of Medications that the
    patient's medication resources reference but ``resources`` does not hold, and why resources were
    left out that a file would have reported (no resourceType or id; a type the criteria read without
    a patient reference).
    """
    seen: dict[tuple[str, str], Resource] = {}  # the copy kept of each Type/id
    place: dict[tuple[str, str], int] = {}  # where it is in grouped[Type]
    patient: Resource | None = None
    grouped: dict[str, list[Resource]] = {}
    pool: dict[str, Resource] = {}
    versions: dict[str, str] = {}
    unusable: list[str] = []
    for resource in resources:
        rtype = resource.get("resourceType")
        rid = resource.get("id")
        if not isinstance(rtype, str) or not isinstance(rid, str) or not rid:
            unusable.append("a resource of the answer has no resourceType or id: skipped")
            continue
        key = (rtype, rid)
        if key in seen:
            # Copies as in a file (source.copies): the newer stands, the same is one, a conflict is said.
            choice = choose(seen[key], resource)
            if choice == "unordered" and rtype in types | {"Patient"}:
                unusable.append(unordered(rtype, rid))
            if choice != "second":
                continue
            if key in place:
                grouped[rtype][place[key]] = resource
                seen[key] = resource
                note_version(versions, resource)
                continue
        seen[key] = resource
        if rtype == "Medication":
            pool[f"Medication/{rid}"] = resource
            note_version(versions, resource)
            continue
        # $everything also returns what the record points at (Practitioners, other patients' linked
        # records, ResearchSubjects); the file path keeps only the types the criteria read, about
        # this patient.
        if rtype not in types and rtype != "Patient":
            continue
        about = patient_of(resource)
        if about is None and rtype != "Patient":
            shown = f"{rtype}/{rid}" if is_valid_id(rid) else f"{rtype} with an id that is not a FHIR id"
            unusable.append(f"{shown} has no patient reference: skipped")
        if about != patient_id:
            continue
        note_version(versions, resource)
        if rtype == "Patient":
            patient = resource
        else:
            place[key] = len(grouped.setdefault(rtype, []))
            grouped[rtype].append(resource)
    wanted = medication_keys(grouped)
    medications = {key: pool[key] for key in sorted(wanted) if key in pool}
    for ref in list(versions):
        if ref.startswith("Medication/") and ref not in medications:
            del versions[ref]
    missing = sorted(key.removeprefix("Medication/") for key in wanted - pool.keys())
    record = PatientRecord(
        patient_id=patient_id,
        patient=patient,
        resources={rtype: tuple(items) for rtype, items in grouped.items()},
        medications=medications,
    )
    return record, versions, missing, unusable


def _everything(client: FhirClient, patient_id: str) -> list[Resource] | None:
    path = f"Patient/{patient_id}/$everything"
    try:
        return list(client.search(path, [("_count", PAGE_SIZE)]))
    except ServerError as exc:
        if exc.status in _NOT_SUPPORTED:
            raise OperationNotSupported(
                f"GET Patient/[id]/$everything answered HTTP {exc.status} although the CapabilityStatement "
                "lists it",
                exc.status,
                exc.url,
            ) from None
        if exc.status not in _AMBIGUOUS:
            raise
    # HAPI answers 404 (with an OperationOutcome) for an unknown patient; a server without the
    # operation may answer 400 or 404 too. One typed read tells which.
    if client.read("Patient", patient_id) is None:
        return None
    raise OperationNotSupported(
        f"GET Patient/[id]/$everything failed for Patient/{patient_id}, which exists: the server does not "
        "really offer $everything"
    )


def _medications_by_id(client: FhirClient, ids: list[str]) -> Iterable[Resource]:
    for start in range(0, len(ids), _IDS_PER_SEARCH):
        chunk = ",".join(ids[start : start + _IDS_PER_SEARCH])
        yield from client.search("Medication", [("_id", chunk), ("_count", _IDS_PER_SEARCH)])


def note_version(versions: dict[str, str], resource: Resource) -> None:
    """Record ``"Type/id" -> versionId`` of ``resource`` when it carries all three."""
    meta = resource.get("meta")
    version = meta.get("versionId") if isinstance(meta, dict) else None
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if isinstance(version, str) and version and isinstance(rtype, str) and isinstance(rid, str):
        versions[f"{rtype}/{rid}"] = version
