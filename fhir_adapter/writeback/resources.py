"""What the adapter writes: ResearchSubject, ResearchStudy, Device and Provenance content, built
without talking to the server, and how the adapter recognises the versions it wrote.

Resources written (R4 or R5 shapes, from ``CapabilityStatement.fhirVersion``):

- one ResearchStudy for the trial, found by its NCT number under any of the identifier systems seen in
  the wild, else created (conditional create on ``https://clinicaltrials.gov/nctid|NCT...``);
- one Device per adapter version (identifier ``fhir-adapter/<version>``), the Provenance agent, so old
  Provenances keep naming the version that wrote them;
- one ResearchSubject per screened patient, identifier ``https://fhir-adapter.org/research-subject-id|
  <study>:<patient id>``. R4: ``status`` is the result status and the R5 progress (subjectState +
  reason) rides in the R5 cross-version extension ``extension-ResearchSubject.progress`` from the
  ``hl7.fhir.uv.xver-r5.r4`` package, whose sub-extensions are named after the R5 elements. R5:
  ``status`` is ``active`` and the state is in ``progress[0].subjectState`` / ``progress[0].reason``.
  The content never holds dates or evidence, so a result that did not change compares equal;
- one Provenance per ResearchSubject version the adapter writes: the versioned target, every evidence
  resource as a ``source`` entity (versioned when the server gave a versionId), the Device as author,
  the rules version as ``policy``, and a ``meta.tag`` whose code is the versioned target
  (``https://fhir-adapter.org/provenance-of|ResearchSubject/x/_history/3``). That tag is the
  Provenance's key: it is created with ``If-None-Exist: _tag=...`` and searched by it, so a retried
  write cannot make a second one. ``target`` cannot be the key: HAPI strips the version from stored
  references by default, and then ``target=ResearchSubject/x/_history/3`` matches every version's
  Provenance (verified on the sandbox; docs/security.md).

How the adapter tells its own versions from staff edits. Every version the adapter writes carries
``meta.source = https://fhir-adapter.org/fhir-adapter/<version>?content=<digest of the content>`` (and a
``meta.tag`` for people filtering with ``_tag``). A version counts as the adapter's only when its
source says so *and* the digest matches its content. The tag alone proves nothing: HAPI carries tags
forward to versions written by others (seen on the sandbox). The digest catches the coordinator tool
that GETs, edits and PUTs the resource back with the adapter's ``meta`` still on it. A server that
drops ``meta.source`` makes every ResearchSubject look staff-managed, which is the safe failure: the
adapter warns once and never overwrites.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal
from urllib.parse import parse_qs, urlsplit

import orjson

from fhir_adapter import __version__
from fhir_adapter.config.types import Trial
from fhir_adapter.errors import ServerError, WriteBackError
from fhir_adapter.model import CriterionResult, Resource, SubjectResult, Verdict

Release = Literal["R4", "R5"]

NCT_SYSTEM: Final = "https://clinicaltrials.gov/nctid"
# terminology.md section 6: emit the THO NamingSystem URI, accept the older and common variants.
NCT_SYSTEMS_ACCEPTED: Final = (
    NCT_SYSTEM,
    "urn:oid:2.16.840.1.113883.3.1077",
    "http://clinicaltrials.gov",
    "https://clinicaltrials.gov",
    "http://clinicaltrials.gov/ct2/show",
)
SUBJECT_ID_SYSTEM: Final = "https://fhir-adapter.org/research-subject-id"
DEVICE_ID_SYSTEM: Final = "https://fhir-adapter.org/device-id"
TAG_SYSTEM: Final = "https://fhir-adapter.org/tags"
TAG_CODE: Final = "written-by-adapter"
# meta.tag of a Provenance: code = the versioned target it records ("ResearchSubject/x/_history/3").
PROVENANCE_TAG_SYSTEM: Final = "https://fhir-adapter.org/provenance-of"
POLICY_PREFIX: Final = "urn:fhir-adapter:rules:"
SOURCE_BASE: Final = "https://fhir-adapter.org/fhir-adapter"
XVER_PROGRESS: Final = "http://hl7.org/fhir/5.0/StructureDefinition/extension-ResearchSubject.progress"
STATE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/research-subject-state"
PROFILE_URL: Final = "https://fhir-adapter.org/fhir/StructureDefinition/fhir-adapter-researchsubject"
# The states the adapter itself sets; anything else (screening, on-study, ...) is a human decision.
ADAPTER_STATES: Final = frozenset({"candidate", "potential-candidate", "ineligible"})

_DATA_OPERATION: Final = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
_PARTICIPANT_TYPE: Final = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_MAX_ERRORS_SHOWN: Final = 3


def release_of(fhir_version: str) -> Release:
    """``R4`` for 4.0.x and 4.3.x (R4B has the same ResearchSubject), ``R5`` for 5.0.x."""
    if fhir_version.startswith("4.0") or fhir_version.startswith("4.3"):
        return "R4"
    if fhir_version.startswith("5."):
        return "R5"
    raise ServerError(f"the server speaks FHIR {fhir_version}; write-back supports R4 (4.0, 4.3) and R5")


# -- content ---------------------------------------------------------------------------------------


def subject_reason(subject: SubjectResult) -> str:
    """``failing: a, b; unknown: c`` from the criteria (not components), as the status reads them; and
    ``decided from notes: d`` when a verdict rests on a value read from clinical text (a site opted in)."""
    failing = [c.id for c in subject.criteria if _fails(c)]
    unknown = [c.id for c in subject.criteria if c.verdict is Verdict.UNKNOWN]
    noted = [c.id for c in subject.criteria if c.from_notes]
    parts = []
    if failing:
        parts.append("failing: " + ", ".join(failing))
    if unknown:
        parts.append("unknown: " + ", ".join(unknown))
    reason = "; ".join(parts) or "no failing or unknown criteria"
    return f"{reason}; decided from notes: {', '.join(noted)}" if noted else reason


def subject_identifier(study: str, patient: str) -> str:
    """The identifier value: ``<study id>:<patient id>`` (with a separate write target, the patient part
    is the key :mod:`fhir_adapter.writeback.references` builds: an absolute URL or ``system|value``)."""
    return f"{study}:{patient.removeprefix('Patient/')}"


def build_research_subject(
    subject: SubjectResult,
    study: str,
    study_ref: str,
    release: Release,
    *,
    patient: Resource | None = None,
    key: str | None = None,
) -> Resource:
    """The content the adapter wants (no id, no meta): what it compares with the server's version.

    ``patient`` (the Reference to the patient) and ``key`` (the patient part of the identifier) come
    from :mod:`fhir_adapter.writeback.references`; by default the one-server forms (``Patient/123``).
    """
    state = subject.status.value
    state_cc = {"coding": [{"system": STATE_SYSTEM, "code": state}]}
    reason_cc = {"text": subject_reason(subject)}
    value = subject_identifier(study, key if key is not None else subject.patient)
    identifier = [{"system": SUBJECT_ID_SYSTEM, "value": value}]
    individual = patient if patient is not None else {"reference": subject.patient}
    if release == "R4":
        return {
            "resourceType": "ResearchSubject",
            "extension": [
                {
                    "url": XVER_PROGRESS,
                    "extension": [
                        {"url": "subjectState", "valueCodeableConcept": state_cc},
                        {"url": "reason", "valueCodeableConcept": reason_cc},
                    ],
                }
            ],
            "identifier": identifier,
            "status": state,
            "study": {"reference": study_ref},
            "individual": individual,
        }
    return {
        "resourceType": "ResearchSubject",
        "identifier": identifier,
        "status": "active",
        "progress": [{"subjectState": state_cc, "reason": reason_cc}],
        "study": {"reference": study_ref},
        "subject": individual,
    }


def build_study(trial: Trial) -> Resource:
    # ResearchStudy.status "active" is valid in both R4 (study status) and R5 (publication status).
    return {
        "resourceType": "ResearchStudy",
        "identifier": [{"use": "official", "system": NCT_SYSTEM, "value": trial.study}],
        "status": "active",
        "title": trial.title,
    }


def device_identifier() -> str:
    return f"fhir-adapter/{__version__}"


def build_device(release: Release) -> Resource:
    device: Resource = {
        "resourceType": "Device",
        "identifier": [{"system": DEVICE_ID_SYSTEM, "value": device_identifier()}],
        "status": "active",
        "manufacturer": "fhir-adapter project",
        "version": [{"value": __version__}],
    }
    if release == "R4":
        device["deviceName"] = [{"name": "fhir-adapter", "type": "manufacturer-name"}]
    else:
        device["name"] = [{"value": "fhir-adapter", "type": "registered-name"}]
    return device


def evidence_references(subject: SubjectResult) -> list[str]:
    """Every ``Type/id`` the verdicts rest on (components included) plus the patient, sorted."""
    refs = {subject.patient}

    def walk(results: tuple[CriterionResult, ...]) -> None:
        for result in results:
            refs.update(e.reference for e in result.evidence if _is_local_ref(e.reference))
            walk(result.components)

    walk(subject.criteria)
    return sorted(refs)


def build_provenance(
    *,
    target: str,
    subject: SubjectResult,
    versions: Mapping[str, str],
    device_ref: str,
    recorded: dt.datetime,
    rules_version: str,
    activity: Literal["CREATE", "UPDATE"],
    study: str,
    cite: Callable[[str], str] = str,
) -> Resource:
    """The same shape is valid in R4 and R5 (target, recorded, policy, activity, agent, entity).

    ``cite`` turns a ``Type/id[/_history/N]`` the source read into the reference the write server
    stores (the read server's absolute URL when that is another server).
    """
    entities = [
        {
            "role": "source",
            "what": {"reference": cite(f"{ref}/_history/{versions[ref]}" if ref in versions else ref)},
        }
        for ref in evidence_references(subject)
    ]
    return {
        "resourceType": "Provenance",
        "meta": {"tag": [{"system": PROVENANCE_TAG_SYSTEM, "code": target}]},
        "target": [{"reference": target}],
        "recorded": recorded.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "policy": [f"{POLICY_PREFIX}{study}:{rules_version}"],
        "activity": {"coding": [{"system": _DATA_OPERATION, "code": activity}]},
        "agent": [
            {
                "type": {"coding": [{"system": _PARTICIPANT_TYPE, "code": "author"}]},
                "who": {"reference": device_ref},
            }
        ],
        "entity": entities,
    }


def provenance_tag_query(target: str) -> str:
    """The search (and ``If-None-Exist``) that finds the Provenance of ``target`` (a versioned reference)."""
    return f"_tag={PROVENANCE_TAG_SYSTEM}|{target}"


def records_version(provenance: Resource, subject: Resource) -> bool:
    """Whether ``provenance`` is the adapter's record of the current version of ``subject``.

    By the tag (this adapter), or by a versioned target (a server that keeps versions in references),
    or, for Provenances of adapter releases before the tag on servers that strip versions: one of ours
    (our policy) targeting the subject and stored at or after the version (the server's clock on both).
    """
    meta = _dict(subject.get("meta"))
    version, updated = meta.get("versionId"), meta.get("lastUpdated")
    if not isinstance(version, str) or not version:
        return False
    plain = f"ResearchSubject/{subject.get('id')}"
    target = f"{plain}/_history/{version}"
    pmeta = _dict(provenance.get("meta"))
    for tag in as_list(pmeta.get("tag")):
        if isinstance(tag, dict) and tag.get("system") == PROVENANCE_TAG_SYSTEM:
            return tag.get("code") == target
    refs = [t.get("reference") for t in as_list(provenance.get("target")) if isinstance(t, dict)]
    ours = any(isinstance(p, str) and p.startswith(POLICY_PREFIX) for p in as_list(provenance.get("policy")))
    if not ours:
        return False
    if any(isinstance(r, str) and r.endswith(target) for r in refs):
        return True
    stored = pmeta.get("lastUpdated")
    return (
        any(isinstance(r, str) and (r == plain or r.endswith("/" + plain)) for r in refs)
        and isinstance(updated, str)
        and isinstance(stored, str)
        and _instant(stored) >= _instant(updated)
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """A JSON array as a list; anything else (a server's malformed field) as none."""
    return value if isinstance(value, list) else []


def _instant(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def content_of(resource: Resource) -> Resource:
    """What two versions are compared on: everything but ``id``, ``meta`` and the narrative."""
    return {k: v for k, v in resource.items() if k not in ("id", "meta", "text")}


def content_digest(resource: Resource) -> str:
    return hashlib.sha256(orjson.dumps(content_of(resource), option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]


def stamped(resource: Resource) -> Resource:
    """``resource`` with the adapter's ``meta.source`` (carrying the content digest) and tag."""
    source = f"{SOURCE_BASE}/{__version__}?content={content_digest(resource)}"
    return {**resource, "meta": {"source": source, "tag": [{"system": TAG_SYSTEM, "code": TAG_CODE}]}}


def written_by_adapter(resource: Resource) -> bool:
    """True when this version's ``meta.source`` is the adapter's and its digest matches the content."""
    meta = resource.get("meta")
    source = meta.get("source") if isinstance(meta, dict) else None
    if not isinstance(source, str):
        return False
    parts = urlsplit(source.split("#", 1)[0])  # servers append their request id after '#'
    if not f"{parts.scheme}://{parts.netloc}{parts.path}".startswith(SOURCE_BASE + "/"):
        return False
    return parse_qs(parts.query).get("content") == [content_digest(resource)]


def current_state(resource: Resource, release: Release) -> str | None:
    """R4 ``status``; R5 the latest ``progress.subjectState`` (by startDate, then position)."""
    if release == "R4":
        status = resource.get("status")
        return status if isinstance(status, str) else None
    latest: tuple[str, int, str] | None = None
    for index, progress in enumerate(as_list(resource.get("progress"))):
        if not isinstance(progress, dict):
            continue
        code = _state_code(progress.get("subjectState"))
        if code is None:
            continue
        start = progress.get("startDate")
        key = (start if isinstance(start, str) else "", index, code)
        if latest is None or key[:2] > latest[:2]:
            latest = key
    return latest[2] if latest else None


def staff_reason(resource: Resource, release: Release) -> str | None:
    """Why a ResearchSubject is the coordinators' to manage, or None when it is the adapter's."""
    if release == "R5" and resource.get("status") != "active":
        return f"status {resource.get('status')}"
    state = current_state(resource, release)
    if state not in ADAPTER_STATES:
        return f"{'subjectState' if release == 'R5' else 'status'} {state or '(none)'}"
    if not written_by_adapter(resource):
        return "latest version not written by the adapter"
    return None


def validate(resource: Resource, release: Release) -> None:
    """Check ``resource`` against the fhir.resources model of its type (R4B models for R4 servers).

    fhir.resources checks structure and cardinality, not required bindings, so the codes the adapter
    chose are checked where they are built (``ADAPTER_STATES``).
    """
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype.isalpha():
        raise WriteBackError(f"refusing to write a resource without a valid resourceType: {rtype!r}")
    package = "fhir.resources.R4B" if release == "R4" else "fhir.resources"
    # Imported at the first validation, not at start-up: the next record is fetched meanwhile, and
    # commands that validate nothing (check, export) never pay for it.
    import pydantic

    try:
        model: Any = getattr(importlib.import_module(f"{package}.{rtype.lower()}"), rtype)
        model.model_validate(resource)
    except pydantic.ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:_MAX_ERRORS_SHOWN]
        )
        raise WriteBackError(f"{rtype} does not validate as FHIR {release}: {errors}") from None
    if rtype == "ResearchSubject":
        state = current_state(resource, release)
        if state not in ADAPTER_STATES:
            raise WriteBackError(f"ResearchSubject: the adapter never sets state {state!r}")


def _fails(result: CriterionResult) -> bool:
    if result.type == "inclusion":
        return result.verdict is Verdict.NOT_MET
    return result.type == "exclusion" and result.verdict is Verdict.MET


def _state_code(cc: Any) -> str | None:
    if not isinstance(cc, dict):
        return None
    for coding in as_list(cc.get("coding")):
        if (
            isinstance(coding, dict)
            and coding.get("system") == STATE_SYSTEM
            and isinstance(coding.get("code"), str)
        ):
            return str(coding["code"])
    return None


def _is_local_ref(reference: str) -> bool:
    parts = reference.split("/")
    return len(parts) == 2 and parts[0][:1].isupper() and parts[0].isalpha() and bool(parts[1])
