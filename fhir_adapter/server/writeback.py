"""Record each screening result on the server as a ResearchSubject, with a Provenance per write.

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
- one Provenance per ResearchSubject write: the versioned target, every evidence resource as a
  ``source`` entity (versioned when the server gave a versionId), the Device as author, the rules
  version as ``policy``.

How the adapter tells its own versions from staff edits. Every version the adapter writes carries
``meta.source = https://fhir-adapter.org/fhir-adapter/<version>?content=<digest of the content>`` (and a
``meta.tag`` for people filtering with ``_tag``). A version counts as the adapter's only when its
source says so *and* the digest matches its content. The tag alone proves nothing: HAPI carries tags
forward to versions written by others (seen on the sandbox). The digest catches the coordinator tool
that GETs, edits and PUTs the resource back with the adapter's ``meta`` still on it. A server that
drops ``meta.source`` makes every ResearchSubject look staff-managed, which is the safe failure: the
adapter warns once and never overwrites.

Concurrency: updates send ``If-Match`` with the version just read, and a 409/412 re-reads and decides
again (bounded); creates are conditional (``If-None-Exist`` on the identifier), so two runs at once
leave one ResearchSubject (HAPI enforces it and answers the loser 409 or 200; both re-read).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import hashlib
import importlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import parse_qs, urlsplit

import orjson
import pydantic

from fhir_adapter import __version__
from fhir_adapter.config.types import Trial
from fhir_adapter.errors import AuthError, PreconditionFailed, ServerError, WriteBackError
from fhir_adapter.model import CriterionResult, Resource, SubjectResult, Verdict
from fhir_adapter.server.http import FhirClient, FhirResponse

log = logging.getLogger(__name__)

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
SOURCE_BASE: Final = "https://fhir-adapter.org/fhir-adapter"
XVER_PROGRESS: Final = "http://hl7.org/fhir/5.0/StructureDefinition/extension-ResearchSubject.progress"
STATE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/research-subject-state"
PROFILE_URL: Final = "https://fhir-adapter.org/fhir/StructureDefinition/fhir-adapter-researchsubject"
# The states the adapter itself sets; anything else (screening, on-study, ...) is a human decision.
ADAPTER_STATES: Final = frozenset({"candidate", "potential-candidate", "ineligible"})
MAX_ATTEMPTS: Final = 3

_DATA_OPERATION: Final = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
_PARTICIPANT_TYPE: Final = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_MAX_ERRORS_SHOWN: Final = 3


class Action(enum.Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    STAFF = "staff-managed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    patient: str  # "Patient/123"
    action: Action
    state: str  # the state the adapter computed
    detail: str = ""  # why staff-managed, what changed, or the error
    reference: str | None = None  # "ResearchSubject/x/_history/2" of a write
    provenance_error: str | None = None
    dry_run: bool = False

    def describe(self) -> str:
        """One line for the terminal: what was (or, in a dry run, would be) done for this patient."""
        if self.action is Action.UNCHANGED:
            text = "leave alone (unchanged)"
        elif self.action is Action.STAFF:
            text = f"leave alone (staff-managed: {self.detail})"
        elif self.action is Action.FAILED:
            text = f"FAILED: {self.detail}"
        elif self.dry_run:
            verb = "would create" if self.action is Action.CREATED else "would update"
            text = f"{verb} ResearchSubject ({self.detail or self.state})"
        else:
            text = f"{self.action.value} {self.reference} ({self.detail or self.state})"
            if self.provenance_error:
                text += f"; Provenance FAILED: {self.provenance_error}"
        return f"{self.patient}: {text}"


def release_of(fhir_version: str) -> Release:
    """``R4`` for 4.0.x and 4.3.x (R4B has the same ResearchSubject), ``R5`` for 5.0.x."""
    if fhir_version.startswith("4.0") or fhir_version.startswith("4.3"):
        return "R4"
    if fhir_version.startswith("5."):
        return "R5"
    raise ServerError(f"the server speaks FHIR {fhir_version}; write-back supports R4 (4.0, 4.3) and R5")


# -- content ---------------------------------------------------------------------------------------


def subject_reason(subject: SubjectResult) -> str:
    """``failing: a, b; unknown: c`` from the criteria (not components), as the status reads them."""
    failing = [c.id for c in subject.criteria if _fails(c)]
    unknown = [c.id for c in subject.criteria if c.verdict is Verdict.UNKNOWN]
    parts = []
    if failing:
        parts.append("failing: " + ", ".join(failing))
    if unknown:
        parts.append("unknown: " + ", ".join(unknown))
    return "; ".join(parts) or "no failing or unknown criteria"


def subject_identifier(study: str, patient: str) -> str:
    """The identifier value: ``NCT05495321:<patient id>``."""
    return f"{study}:{patient.removeprefix('Patient/')}"


def build_research_subject(subject: SubjectResult, study: str, study_ref: str, release: Release) -> Resource:
    """The content the adapter wants (no id, no meta): what it compares with the server's version."""
    state = subject.status.value
    state_cc = {"coding": [{"system": STATE_SYSTEM, "code": state}]}
    reason_cc = {"text": subject_reason(subject)}
    identifier = [{"system": SUBJECT_ID_SYSTEM, "value": subject_identifier(study, subject.patient)}]
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
            "individual": {"reference": subject.patient},
        }
    return {
        "resourceType": "ResearchSubject",
        "identifier": identifier,
        "status": "active",
        "progress": [{"subjectState": state_cc, "reason": reason_cc}],
        "study": {"reference": study_ref},
        "subject": {"reference": subject.patient},
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
) -> Resource:
    """The same shape is valid in R4 and R5 (target, recorded, policy, activity, agent, entity)."""
    entities = [
        {
            "role": "source",
            "what": {"reference": f"{ref}/_history/{versions[ref]}" if ref in versions else ref},
        }
        for ref in evidence_references(subject)
    ]
    return {
        "resourceType": "Provenance",
        "target": [{"reference": target}],
        "recorded": recorded.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "policy": [f"urn:fhir-adapter:rules:{study}:{rules_version}"],
        "activity": {"coding": [{"system": _DATA_OPERATION, "code": activity}]},
        "agent": [
            {
                "type": {"coding": [{"system": _PARTICIPANT_TYPE, "code": "author"}]},
                "who": {"reference": device_ref},
            }
        ],
        "entity": entities,
    }


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
    for index, progress in enumerate(resource.get("progress") or []):
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


# -- talking to the server -------------------------------------------------------------------------


class WriteBack:
    """Ensures the study and the Device once, then reconciles one ResearchSubject per patient.

    With ``dry_run`` it only reads: ``write`` reports what it would do and changes nothing.
    """

    def __init__(
        self,
        client: FhirClient,
        trial: Trial,
        rules_version: str,
        release: Release,
        *,
        dry_run: bool,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.client = client
        self.trial = trial
        self.rules_version = rules_version
        self.release: Release = release
        self.dry_run = dry_run
        self.counts: Counter[Action] = Counter()
        self.provenance_failures = 0
        self.requests = 0
        self.notes: list[str] = []
        self._clock = clock
        self._max_attempts = max_attempts
        self._study_ref: str | None = None
        self._device_ref: str | None = None
        self._checked_source = False

    @property
    def study_ref(self) -> str | None:
        return self._study_ref

    def prepare(self) -> None:
        """Find or create the ResearchStudy and the Device (in a dry run: only find them)."""
        with self._counting():
            self._study_ref = self._ensure_study()
            self._device_ref = self._ensure_device()

    def write(self, subject: SubjectResult, versions: Mapping[str, str]) -> Outcome:
        """Create, update or leave alone the patient's ResearchSubject; never raises for one patient's
        write being rejected (only for auth and transport failures, which would hit every patient)."""
        with self._counting():
            try:
                outcome = self._reconcile(subject, versions)
            except AuthError:
                raise
            except (ServerError, WriteBackError) as exc:
                if isinstance(exc, ServerError) and exc.status is None:
                    raise
                outcome = Outcome(subject.patient, Action.FAILED, subject.status.value, str(exc))
        self.counts[outcome.action] += 1
        if outcome.provenance_error:
            self.provenance_failures += 1
        log.info("%s", outcome.describe())
        return outcome

    def ensure_provenance(self, subject: SubjectResult, versions: Mapping[str, str]) -> bool:
        """Write the Provenance of the current ResearchSubject version if a crash left it without one.

        Called for patients a previous run left unfinished: their write may have happened with the
        Provenance still to come. Found by a Provenance for the subject updated at or after the version
        (the server's clock on both sides). Returns True when one was written.
        """
        if self.dry_run:
            return False
        with self._counting():
            token = f"{SUBJECT_ID_SYSTEM}|{subject_identifier(self.trial.study, subject.patient)}"
            matches = [
                r
                for r in self.client.search("ResearchSubject", [("identifier", token)])
                if _is(r, "ResearchSubject")
            ]
            if len(matches) != 1 or not written_by_adapter(matches[0]):
                return False
            current = matches[0]
            meta: dict[str, Any] = current["meta"] if isinstance(current.get("meta"), dict) else {}
            version, updated = meta.get("versionId"), meta.get("lastUpdated")
            if not isinstance(version, str) or not isinstance(updated, str):
                return False
            params: list[tuple[str, str | int]] = [
                ("target", f"ResearchSubject/{current['id']}"),
                ("_lastUpdated", f"ge{updated}"),
                ("_count", 1),
            ]
            if any(_is(r, "Provenance") for r in self.client.search("Provenance", params)):
                return False
            response = FhirResponse(200, current, f'W/"{version}"', None, None, None)
            action: Literal[Action.CREATED, Action.UPDATED] = (
                Action.CREATED if version == "1" else Action.UPDATED
            )
            outcome = self._provenance(action, response, subject, versions, subject.status.value)
            return outcome.provenance_error is None

    # -- internals ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _counting(self) -> Iterator[None]:
        before = self.client.request_count
        try:
            yield
        finally:
            self.requests += self.client.request_count - before

    def _ensure_study(self) -> str | None:
        values = ",".join(f"{system}|{self.trial.study}" for system in NCT_SYSTEMS_ACCEPTED)
        found = [
            r
            for r in self.client.search("ResearchStudy", [("identifier", values)])
            if _is(r, "ResearchStudy")
        ]
        if found:
            # Prefer the study carrying the current NCT system; the rest are older spellings.
            found.sort(key=lambda r: (not _has_identifier(r, NCT_SYSTEM, self.trial.study), str(r.get("id"))))
            if len(found) > 1:
                self.notes.append(
                    f"{len(found)} ResearchStudy resources carry {self.trial.study}; using ResearchStudy/{found[0]['id']}"
                )
            return f"ResearchStudy/{found[0]['id']}"
        if self.dry_run:
            self.notes.append(f"would create ResearchStudy {NCT_SYSTEM}|{self.trial.study}")
            return None
        study = build_study(self.trial)
        validate(study, self.release)
        token = f"{NCT_SYSTEM}|{self.trial.study}"
        return f"ResearchStudy/{self._create_once(study, token)}"

    def _ensure_device(self) -> str | None:
        token = f"{DEVICE_ID_SYSTEM}|{device_identifier()}"
        if self.dry_run:
            found = [r for r in self.client.search("Device", [("identifier", token)]) if _is(r, "Device")]
            return f"Device/{found[0]['id']}" if found else None
        device = build_device(self.release)
        validate(device, self.release)
        # A conditional create answers 200 with the existing Device, so one request covers both cases.
        return f"Device/{self._create_once(device, token)}"

    def _create_once(self, resource: Resource, token: str) -> str:
        """Conditional create on ``identifier=token``; the id of the created or already existing one."""
        rtype = str(resource["resourceType"])
        try:
            response = self.client.create(resource, if_none_exist=f"identifier={token}")
        except PreconditionFailed:
            # Another run's create of the same identifier won the race (HAPI answers the loser 409).
            found = [r for r in self.client.search(rtype, [("identifier", token)]) if _is(r, rtype)]
            if not found:
                raise
            return str(found[0]["id"])
        return _written_id(response, rtype)[0]

    def _reconcile(self, subject: SubjectResult, versions: Mapping[str, str]) -> Outcome:
        state = subject.status.value
        study_ref = self._study_ref or "ResearchStudy/(to-be-created)"
        wanted = build_research_subject(subject, self.trial.study, study_ref, self.release)
        validate(stamped(wanted), self.release)
        token = f"{SUBJECT_ID_SYSTEM}|{subject_identifier(self.trial.study, subject.patient)}"
        for _ in range(self._max_attempts):
            matches = [
                r
                for r in self.client.search("ResearchSubject", [("identifier", token)])
                if _is(r, "ResearchSubject")
            ]
            if len(matches) > 1:
                ids = ", ".join(sorted(str(m.get("id")) for m in matches))
                return Outcome(
                    subject.patient,
                    Action.FAILED,
                    state,
                    f"{len(matches)} ResearchSubjects share identifier {token} ({ids}); merge them by hand",
                    dry_run=self.dry_run,
                )
            if not matches:
                if self.dry_run:
                    return Outcome(subject.patient, Action.CREATED, state, dry_run=True)
                try:
                    response = self.client.create(stamped(wanted), if_none_exist=f"identifier={token}")
                except PreconditionFailed:
                    continue  # a concurrent run created it first: read theirs and compare
                if response.status != 201:
                    continue  # 200: the identifier matched after all; compare with that one
                return self._provenance(Action.CREATED, response, subject, versions, state)
            current = matches[0]
            reason = staff_reason(current, self.release)
            if reason is not None:
                return Outcome(subject.patient, Action.STAFF, state, reason, dry_run=self.dry_run)
            if content_of(current) == content_of(wanted):
                return Outcome(subject.patient, Action.UNCHANGED, state, dry_run=self.dry_run)
            before = current_state(current, self.release)
            change = f"{before} -> {state}" if before != state else f"{state}, reason changed"
            if self.dry_run:
                return Outcome(subject.patient, Action.UPDATED, state, change, dry_run=True)
            etag = self._etag(current)
            if etag is None:
                continue
            try:
                response = self.client.update({**stamped(wanted), "id": current["id"]}, if_match=etag)
            except PreconditionFailed:
                continue  # changed since we read it (maybe by staff): read again and decide again
            return self._provenance(Action.UPDATED, response, subject, versions, state, change)
        return Outcome(
            subject.patient,
            Action.FAILED,
            state,
            f"ResearchSubject {token} kept changing; gave up after {self._max_attempts} attempts",
        )

    def _etag(self, current: Resource) -> str | None:
        meta = current.get("meta")
        version = meta.get("versionId") if isinstance(meta, dict) else None
        if isinstance(version, str) and version:
            return f'W/"{version}"'
        # A search result without versionId (some servers trim meta): the read's ETag has it.
        response = self.client.read("ResearchSubject", str(current["id"]))
        return response.etag if response is not None else None

    def _provenance(
        self,
        action: Literal[Action.CREATED, Action.UPDATED],
        response: FhirResponse,
        subject: SubjectResult,
        versions: Mapping[str, str],
        state: str,
        detail: str = "",
    ) -> Outcome:
        rid, version = _written_id(response, "ResearchSubject")
        target = f"ResearchSubject/{rid}" + (f"/_history/{version}" if version else "")
        self._check_source_kept(response)
        if version is None or self._device_ref is None:
            missing = "the server returned no version" if version is None else "no Device"
            return Outcome(subject.patient, action, state, detail, target, missing)
        provenance = build_provenance(
            target=target,
            subject=subject,
            versions=versions,
            device_ref=self._device_ref,
            recorded=self._clock(),
            rules_version=self.rules_version,
            activity="CREATE" if action is Action.CREATED else "UPDATE",
            study=self.trial.study,
        )
        try:
            validate(provenance, self.release)
            self.client.create(provenance)
        except AuthError:
            raise
        except (ServerError, WriteBackError) as exc:
            if isinstance(exc, ServerError) and exc.status is None:
                raise
            return Outcome(subject.patient, action, state, detail, target, str(exc))
        return Outcome(subject.patient, action, state, detail, target)

    def _check_source_kept(self, response: FhirResponse) -> None:
        if self._checked_source or response.body is None:
            return
        self._checked_source = True
        if not written_by_adapter(response.body):
            self.notes.append(
                "the server did not keep meta.source on the ResearchSubject it stored: the adapter cannot "
                "recognise its own versions there and will leave every existing ResearchSubject alone"
            )


def _fails(result: CriterionResult) -> bool:
    if result.type == "inclusion":
        return result.verdict is Verdict.NOT_MET
    return result.type == "exclusion" and result.verdict is Verdict.MET


def _state_code(cc: Any) -> str | None:
    if not isinstance(cc, dict):
        return None
    for coding in cc.get("coding") or []:
        if (
            isinstance(coding, dict)
            and coding.get("system") == STATE_SYSTEM
            and isinstance(coding.get("code"), str)
        ):
            return str(coding["code"])
    return None


def _is(resource: Resource, rtype: str) -> bool:
    return resource.get("resourceType") == rtype and isinstance(resource.get("id"), str)


def _has_identifier(resource: Resource, system: str, value: str) -> bool:
    return any(
        isinstance(i, dict) and i.get("system") == system and i.get("value") == value
        for i in resource.get("identifier") or []
    )


def _is_local_ref(reference: str) -> bool:
    parts = reference.split("/")
    return len(parts) == 2 and parts[0][:1].isupper() and parts[0].isalpha() and bool(parts[1])


def _written_id(response: FhirResponse, rtype: str) -> tuple[str, str | None]:
    """Logical id and version of what a create/update wrote: from the body, else from Location."""
    body = response.body
    if body is not None and body.get("resourceType") == rtype and isinstance(body.get("id"), str):
        return str(body["id"]), response.version_id
    if response.location:
        path = urlsplit(response.location).path.split("/")
        if rtype in path:
            at = len(path) - 1 - path[::-1].index(rtype)
            if at + 1 < len(path):
                version = path[at + 3] if len(path) > at + 3 and path[at + 2] == "_history" else None
                return path[at + 1], version or response.version_id
    raise ServerError(f"the server wrote a {rtype} but returned neither its body nor a Location")
