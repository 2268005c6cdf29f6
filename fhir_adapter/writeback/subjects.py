"""Record each screening result on the server as a ResearchSubject, with a Provenance per write.

What each resource holds (R4 or R5 shapes) and how the adapter tells its own versions from staff
edits: :mod:`fhir_adapter.writeback.resources`. This module talks to the server.

Concurrency: updates send ``If-Match`` with the version just read, and a 409/412 re-reads and decides
again (bounded); creates are conditional (``If-None-Exist`` on the identifier), so two runs at once
leave one ResearchSubject (HAPI enforces it and answers the loser 409 or 200; both re-read).

Lookups: ``prepare`` reads the study's existing ResearchSubjects (and their Provenances) in one paged
search, so a run over unchanged subjects costs no request per patient. A patient not found there is
searched by identifier before anything is created (a subject that lost its study link, a server that
ignores the ``study`` parameter), unless the study itself is not on the server (a dry run before the
first write-back: nothing to find). What was read may be stale by the time it is used; updates carry
``If-Match`` and creates ``If-None-Exist``, so a subject changed meanwhile (by a coordinator, or
another run) is re-read, never overwritten.

Unknown outcomes: a write answered by a 5xx, a timeout, a cut-off or unreadable answer may have been
stored. It is never resent blindly: the subject is searched again by its identifier and the decision is
made anew from what the server holds, so a server that ignores ``If-None-Exist`` still ends with one
ResearchSubject. The search brings each subject's Provenances along (``_revinclude``); an adapter
version with no Provenance recording it (a crash or a lost answer between the two writes) gets its
Provenance now, in ``screen --write-back`` as in ``sync``. Provenances are keyed by a tag naming the
versioned target (:func:`fhir_adapter.writeback.resources.provenance_tag_query`): created with
``If-None-Exist`` on it and searched by it before any resend, so each version gets one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

from fhir_adapter.client.http import FhirClient, FhirResponse
from fhir_adapter.config.types import Trial
from fhir_adapter.errors import (
    AccessDenied,
    AuthError,
    PreconditionFailed,
    ServerError,
    WriteBackError,
)
from fhir_adapter.model import Resource, SubjectResult
from fhir_adapter.writeback.references import (
    LOCAL,
    PatientLink,
    PatientNotReferable,
    Referencing,
    identifier_condition,
    subject_token,
)
from fhir_adapter.writeback.resources import (
    DEVICE_ID_SYSTEM,
    NCT_SYSTEM,
    NCT_SYSTEMS_ACCEPTED,
    PROFILE_URL,
    PROVENANCE_TAG_SYSTEM,
    SOURCE_BASE,
    STATE_SYSTEM,
    SUBJECT_ID_SYSTEM,
    TAG_CODE,
    TAG_SYSTEM,
    XVER_PROGRESS,
    Release,
    as_list,
    build_device,
    build_provenance,
    build_research_subject,
    build_study,
    content_of,
    current_state,
    device_identifier,
    provenance_tag_query,
    records_version,
    release_of,
    staff_reason,
    stamped,
    subject_identifier,
    subject_reason,
    validate,
    written_by_adapter,
)

# The content names are re-exported: callers and tests import them from here.
__all__ = [
    "MAX_ATTEMPTS",
    "NCT_SYSTEM",
    "PROFILE_URL",
    "STATE_SYSTEM",
    "SUBJECT_ID_SYSTEM",
    "TAG_CODE",
    "TAG_SYSTEM",
    "XVER_PROGRESS",
    "Action",
    "Outcome",
    "Release",
    "WriteBack",
    "build_device",
    "build_provenance",
    "build_research_subject",
    "build_study",
    "content_of",
    "current_state",
    "release_of",
    "stamped",
    "subject_reason",
    "validate",
    "written_by_adapter",
]

log = logging.getLogger(__name__)

MAX_ATTEMPTS: Final = 3
_REVINCLUDE: Final = ("_revinclude", "Provenance:target")
_PAGE: Final = 500


class Action(enum.Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    STAFF = "staff-managed"
    FAILED = "failed"
    NOT_CANDIDATE = "not-candidate"  # the gate is not met and no ResearchSubject exists: none is created


Written = Literal[Action.CREATED, Action.UPDATED]


@dataclass(frozen=True, slots=True)
class Outcome:
    patient: str  # "Patient/123"
    action: Action
    state: str  # the state the adapter computed
    detail: str = ""  # why staff-managed, what changed, or the error (status and issue codes only)
    reference: str | None = None  # "ResearchSubject/x/_history/2" of a write
    provenance_error: str | None = None
    dry_run: bool = False
    # The current version had no Provenance of ours and got one now (dry run: would get one).
    provenance_repaired: bool = False
    server_text: str | None = None  # OperationOutcome free text of the failure: result file only

    def describe(self) -> str:
        """One line for the terminal: what was (or, in a dry run, would be) done for this patient."""
        if self.action is Action.UNCHANGED:
            text = "leave alone (unchanged)"
            if self.provenance_repaired:
                text += (
                    "; would write the missing Provenance of its current version"
                    if self.dry_run
                    else f"; wrote the missing Provenance of {self.reference}"
                )
        elif self.action is Action.NOT_CANDIDATE:
            text = "no ResearchSubject (not a candidate of the study)"
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


# -- talking to the server -------------------------------------------------------------------------


class WriteBack:
    """Ensures the study and the Device once, then reconciles one ResearchSubject per patient.

    With ``dry_run`` it only reads: ``write`` reports what it would do and changes nothing. ``client``
    is the write server's; ``refs`` says how its resources point at the read server's (the same
    server by default; :mod:`fhir_adapter.writeback.references`).
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
        refs: Referencing = LOCAL,
    ) -> None:
        self.client = client
        self.refs = refs
        self.trial = trial
        self.rules_version = rules_version
        self.release: Release = release
        self.dry_run = dry_run
        self.counts: Counter[Action] = Counter()
        self.provenance_failures = 0
        self.provenance_repaired = 0
        self.requests = 0
        self.notes: list[str] = []
        self._clock = clock
        self._max_attempts = max_attempts
        self._study_ref: str | None = None
        self._device_ref: str | None = None
        self._checked_source = False
        self._checked_tag = False
        # identifier value -> the study's ResearchSubjects with it and their Provenances (prepare)
        self._known: dict[str, list[Resource]] | None = None

    @property
    def study_ref(self) -> str | None:
        return self._study_ref

    def prepare(self) -> None:
        """Find or create the ResearchStudy and the Device (in a dry run: only find them)."""
        with self._counting():
            self._study_ref = self._ensure_study()
            self._device_ref = self._ensure_device()
            self._known = self._study_subjects() if self._study_ref else {}

    def write(
        self, subject: SubjectResult, versions: Mapping[str, str], patient: Resource | None = None
    ) -> Outcome:
        """Create, update or leave alone the patient's ResearchSubject; never raises for one patient's
        write failing (only for failures that doom every patient: authentication, the run's budgets).

        ``patient`` is the Patient resource the source read: its business identifier is the reference
        when the write target refers to patients by identifier."""
        with self._counting():
            try:
                outcome = self._reconcile(subject, versions, patient)
            except AuthError:
                raise
            except (ServerError, WriteBackError) as exc:
                outcome = Outcome(
                    subject.patient,
                    Action.FAILED,
                    subject.status.value,
                    str(exc),
                    server_text=getattr(exc, "server_text", None),
                )
        self.counts[outcome.action] += 1
        if outcome.provenance_error:
            self.provenance_failures += 1
        if outcome.provenance_repaired and not outcome.provenance_error:
            self.provenance_repaired += 1
        log.info("%s", outcome.describe())
        return outcome

    # -- internals ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _counting(self) -> Iterator[None]:
        before = self.client.thread_request_count
        try:
            yield
        finally:
            self.requests += self.client.thread_request_count - before

    def _study_subjects(self) -> dict[str, list[Resource]] | None:
        """The study's ResearchSubjects with their Provenances, by identifier value; None when the
        server refuses the search (then every patient is searched by identifier, as before)."""
        assert self._study_ref is not None
        params: list[tuple[str, str | int]] = [("study", self._study_ref), _REVINCLUDE, ("_count", _PAGE)]
        try:
            found = list(self.client.search("ResearchSubject", params))
        except AuthError:
            raise
        except ServerError as exc:  # 403 (AccessDenied) included: the per-patient searches may be allowed
            log.warning("listing the study's ResearchSubjects failed (%s); one search per patient", exc)
            return None
        found = _distinct(found)  # a page may repeat an entry of the one before: one resource, not two
        by_id: dict[str, str] = {}
        known: dict[str, list[Resource]] = {}
        for resource in found:
            if not _is(resource, "ResearchSubject"):
                continue
            for ident in as_list(resource.get("identifier")):
                if isinstance(ident, dict) and ident.get("system") == SUBJECT_ID_SYSTEM:
                    value = ident.get("value")
                    if isinstance(value, str):
                        known.setdefault(value, []).append(resource)
                        by_id[f"ResearchSubject/{resource.get('id')}"] = value
        for resource in found:
            if not _is(resource, "Provenance"):
                continue
            targets = (
                _unversioned(t.get("reference"))
                for t in as_list(resource.get("target"))
                if isinstance(t, dict)
            )
            for value in {by_id[t] for t in targets if t in by_id}:
                known[value].append(resource)
        log.info("%s: %d ResearchSubject(s) on the server", self.trial.study, len(by_id))
        return known

    def _subject_search(self, value: str, token: str, first: bool) -> list[Resource]:
        """The patient's ResearchSubject(s) and their Provenances: from the study listing on the first
        attempt when it has them, else (and on every later attempt) searched by identifier. ``value`` is
        the identifier value as stored, ``token`` its escaped search form."""
        if first and self._known is not None:
            if value in self._known:
                return self._known.pop(value)
            if self._study_ref is None:
                return []  # no study on the server (a dry run before the first write-back): none of it

        return list(self.client.search("ResearchSubject", [("identifier", token), _REVINCLUDE]))

    def _find(self, rtype: str, token: str) -> list[Resource]:
        """The ``rtype`` resources carrying one of the identifiers ``token`` lists (``system|value``,
        comma-separated): checked here, since a server may ignore the search parameter and answer
        everything it has."""
        wanted = [tuple(t.split("|", 1)) for t in token.split(",") if "|" in t]
        return _distinct(
            r
            for r in self.client.search(rtype, [("identifier", token)])
            if _is(r, rtype) and any(_has_identifier(r, system, value) for system, value in wanted)
        )

    def _ensure_study(self) -> str | None:
        values = ",".join(f"{system}|{self.trial.study}" for system in NCT_SYSTEMS_ACCEPTED)
        found = self._find("ResearchStudy", values)
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
        return f"ResearchStudy/{self._create_once(study, token, searched=True)}"

    def _ensure_device(self) -> str | None:
        token = f"{DEVICE_ID_SYSTEM}|{device_identifier()}"
        # Searched first, not left to If-None-Exist alone: a server that ignores it would get a new
        # Device every run.
        found = self._find("Device", token)
        if found:
            return f"Device/{found[0]['id']}"
        if self.dry_run:
            return None
        device = build_device(self.release)
        validate(device, self.release)
        return f"Device/{self._create_once(device, token, searched=True)}"

    def _create_once(self, resource: Resource, token: str, *, searched: bool = False) -> str:
        """Conditional create on ``identifier=token``; the id of the created or already existing one.

        Every resend is preceded by a search: what a lost or failed attempt stored is used, not
        duplicated (even by a server that ignores ``If-None-Exist``).
        """
        rtype = str(resource["resourceType"])
        last: ServerError | None = None
        for attempt in range(self._max_attempts):
            if attempt or not searched:
                found = self._find(rtype, token)
                if found:
                    return str(found[0]["id"])
            try:
                response = self.client.create(resource, if_none_exist=f"identifier={token}")
            except PreconditionFailed:
                # Another run's create of the same identifier won the race (HAPI answers the loser 409).
                found = self._find(rtype, token)
                if not found:
                    raise
                return str(found[0]["id"])
            except ServerError as exc:
                if not _outcome_unknown(exc):
                    raise
                last = exc
                continue
            return _written_id(response, rtype)[0]
        assert last is not None
        raise _gave_up(last, f"creating {rtype} {token}", self._max_attempts)

    def _link(self, subject: SubjectResult, patient: Resource | None) -> PatientLink | None:
        """How the write server refers to the patient; None for a non-candidate without the business
        identifier (nothing to write, and no key to find an older subject by)."""
        try:
            return self.refs.patient(subject.patient, patient)
        except PatientNotReferable:
            if not subject.gate_met:
                return None
            raise

    def _reconcile(
        self, subject: SubjectResult, versions: Mapping[str, str], patient: Resource | None
    ) -> Outcome:
        state = subject.status.value
        link = self._link(subject, patient)
        if link is None:
            return Outcome(subject.patient, Action.NOT_CANDIDATE, state, dry_run=self.dry_run)
        study_ref = self._study_ref or "ResearchStudy/(to-be-created)"
        wanted = build_research_subject(
            subject, self.trial.study, study_ref, self.release, patient=link.reference, key=link.key
        )
        validate(stamped(wanted), self.release)
        # The search key: the identifier built from the patient reference (references.py).
        value = subject_identifier(self.trial.study, link.key)
        token = subject_token(SUBJECT_ID_SYSTEM, value)
        # An identifier value may be an MRN: messages name the patient's id instead.
        shown = f"of {link.label}" if link.private else token
        # What this call sent whose outcome it does not know (a 5xx, a timeout): if the subject then
        # reads as what we wanted, that write happened, and it is reported as ours.
        sent: tuple[Written, str] | None = None
        unknown: ServerError | None = None
        for attempt in range(self._max_attempts):
            found = _distinct(self._subject_search(value, token, first=attempt == 0))
            matches = _subjects_of(found, value)
            provenances = [r for r in found if _is(r, "Provenance")]
            if len(matches) > 1:
                ids = ", ".join(sorted(str(m.get("id")) for m in matches))
                return Outcome(
                    subject.patient,
                    Action.FAILED,
                    state,
                    f"{len(matches)} ResearchSubjects share identifier {shown} ({ids}); merge them by hand",
                    dry_run=self.dry_run,
                )
            if not matches:
                if not subject.gate_met:
                    # One rule everywhere: a ResearchSubject is created only for the study's candidates
                    # (gate met). One that exists is still kept up to date below, so a refuted diagnosis
                    # does not leave a stale "candidate" behind.
                    return Outcome(subject.patient, Action.NOT_CANDIDATE, state, dry_run=self.dry_run)
                if self.dry_run:
                    return Outcome(subject.patient, Action.CREATED, state, dry_run=True)
                try:
                    response = self.client.create(stamped(wanted), if_none_exist=identifier_condition(token))
                except PreconditionFailed:
                    continue  # a concurrent run created it first: read theirs and compare
                except ServerError as exc:
                    if not _outcome_unknown(exc):
                        raise
                    sent, unknown = (Action.CREATED, ""), exc
                    continue  # maybe stored: search again before anything is resent
                if response.status != 201:
                    continue  # 200: the identifier matched after all; compare with that one
                stored = self._stored(response, value, token)
                return self._provenance(Action.CREATED, stored, subject, versions, state)
            current, etag = self._versioned(matches[0])
            if current is None:
                continue  # gone since the search: search again
            reason = staff_reason(current, self.release)
            if reason is not None:
                return Outcome(subject.patient, Action.STAFF, state, reason, dry_run=self.dry_run)
            if content_of(current) == content_of(wanted):
                return self._unchanged(current, provenances, subject, versions, state, sent)
            before = current_state(current, self.release)
            change = f"{before} -> {state}" if before != state else f"{state}, reason changed"
            if self.dry_run:
                return Outcome(subject.patient, Action.UPDATED, state, change, dry_run=True)
            if etag is None:
                continue
            try:
                response = self.client.update({**stamped(wanted), "id": current["id"]}, if_match=etag)
            except PreconditionFailed:
                continue  # changed since we read it (maybe by staff): read again and decide again
            except ServerError as exc:
                if not _outcome_unknown(exc):
                    raise
                sent, unknown = (Action.UPDATED, change), exc
                continue
            stored = self._stored(response, value, token)
            return self._provenance(Action.UPDATED, stored, subject, versions, state, change)
        if unknown is not None:
            raise _gave_up(unknown, f"writing ResearchSubject {shown}", self._max_attempts)
        return Outcome(
            subject.patient,
            Action.FAILED,
            state,
            f"ResearchSubject {shown} kept changing; gave up after {self._max_attempts} attempts",
        )

    def _unchanged(
        self,
        current: Resource,
        provenances: list[Resource],
        subject: SubjectResult,
        versions: Mapping[str, str],
        state: str,
        sent: tuple[Written, str] | None,
    ) -> Outcome:
        """The server holds what we want. Its version still needs our Provenance if none records it:
        an earlier write whose Provenance was lost (a crash, an unknown outcome), or ours just now."""
        if any(records_version(p, current) for p in provenances):
            return Outcome(subject.patient, Action.UNCHANGED, state, dry_run=self.dry_run)
        version = _version_of(current)
        if version is None:
            return Outcome(subject.patient, Action.UNCHANGED, state, dry_run=self.dry_run)
        if self.dry_run:
            return Outcome(subject.patient, Action.UNCHANGED, state, dry_run=True, provenance_repaired=True)
        response = FhirResponse(200, current, f'W/"{version}"', None, None, None)
        if sent is not None:
            # Our own write of this call, whose answer was lost: report it as the write it was.
            action, detail = sent
            return self._provenance(action, response, subject, versions, state, detail)
        repair: Written = Action.CREATED if version == "1" else Action.UPDATED
        outcome = self._provenance(repair, response, subject, versions, state, searched=False)
        return Outcome(
            subject.patient,
            Action.UNCHANGED,
            state,
            reference=outcome.reference,
            provenance_error=outcome.provenance_error,
            provenance_repaired=True,
            server_text=outcome.server_text,
        )

    def _stored(self, response: FhirResponse, value: str, token: str) -> FhirResponse:
        """What a create or update stored, for its Provenance: the answer when its body is this
        patient's subject with a version (its ``meta.versionId``, not an ETag a server may spell
        otherwise), else this patient's subject as a search by identifier finds it. A server may
        answer with another resource's body, a Location of another id, or nothing usable at all."""
        body = response.body
        if (
            body is not None
            and _is(body, "ResearchSubject")
            and _has_identifier(body, SUBJECT_ID_SYSTEM, value)
        ):
            version = _version_of(body)
            if version is not None:
                return dataclasses.replace(response, etag=f'W/"{version}"')
        found = _subjects_of(_distinct(self.client.search("ResearchSubject", [("identifier", token)])), value)
        version = _version_of(found[0]) if len(found) == 1 else None
        if version is None:
            return response  # nothing better to go by (a lagging search): the answer as it came
        return FhirResponse(response.status, found[0], f'W/"{version}"', None, None, None)

    def _versioned(self, found: Resource) -> tuple[Resource | None, str | None]:
        """The subject to judge and the ETag an update must match. A search result without versionId
        (some servers trim meta) is read again, and the read is what is judged: judging the search's
        copy and sending the read's ETag would overwrite a coordinator's change made in between."""
        version = _version_of(found)
        if version is not None:
            return found, f'W/"{version}"'
        response = self.client.read("ResearchSubject", str(found["id"]))
        if response is None or response.body is None or not _is(response.body, "ResearchSubject"):
            return None, None
        return response.body, response.etag

    def _provenance(
        self,
        action: Written,
        response: FhirResponse,
        subject: SubjectResult,
        versions: Mapping[str, str],
        state: str,
        detail: str = "",
        *,
        searched: bool = True,
    ) -> Outcome:
        """Write the Provenance of the version ``response`` holds, at most once.

        ``searched``: whether a search has already shown that none exists (a version we just wrote
        cannot have one yet); otherwise one is searched for first.
        """
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
            cite=self.refs.resource,
        )
        query = provenance_tag_query(target)
        try:
            validate(provenance, self.release)
            for attempt in range(self._max_attempts):
                if (attempt or not searched) and self._provenance_exists(query):
                    break
                try:
                    written = self.client.create(provenance, if_none_exist=query)
                except PreconditionFailed:
                    # Several match already (HAPI's 412): there is one at least, never add another.
                    # A 409 or 412 for any other reason stored nothing: that is a failure to say.
                    if self._provenance_exists(query):
                        break
                    raise
                except ServerError as exc:
                    if not _outcome_unknown(exc) or attempt == self._max_attempts - 1:
                        raise
                    continue
                self._check_tag_kept(written)
                break
        except AuthError:
            raise
        except (ServerError, WriteBackError) as exc:
            return Outcome(
                subject.patient,
                action,
                state,
                detail,
                target,
                str(exc),
                server_text=getattr(exc, "server_text", None),
            )
        return Outcome(subject.patient, action, state, detail, target)

    def _provenance_exists(self, query: str) -> bool:
        name, _, value = query.partition("=")
        return any(_is(r, "Provenance") for r in self.client.search("Provenance", [(name, value)]))

    def _check_source_kept(self, response: FhirResponse) -> None:
        if self._checked_source or response.body is None:
            return
        self._checked_source = True
        if not written_by_adapter(response.body):
            meta = response.body.get("meta")
            source = meta.get("source") if isinstance(meta, dict) else None
            what = (
                "changed the ResearchSubject it stored (it no longer matches the content digest in "
                "meta.source)"
                if isinstance(source, str) and source.startswith(SOURCE_BASE + "/")
                else "did not keep meta.source on the ResearchSubject it stored"
            )
            self.notes.append(
                f"the server {what}: the adapter cannot recognise its own versions there and will leave "
                "every existing ResearchSubject alone"
            )

    def _check_tag_kept(self, response: FhirResponse) -> None:
        if self._checked_tag or response.body is None or response.body.get("resourceType") != "Provenance":
            return
        self._checked_tag = True
        meta = response.body.get("meta")
        tags = meta.get("tag") if isinstance(meta, dict) else None
        if not any(isinstance(t, dict) and t.get("system") == PROVENANCE_TAG_SYSTEM for t in as_list(tags)):
            self.notes.append(
                "the server did not keep meta.tag on the Provenance it stored: a Provenance write whose "
                "answer is lost may be repeated on this server"
            )


def _outcome_unknown(exc: ServerError) -> bool:
    """Whether a failed write may have been stored: no answer, a 5xx, or a 2xx we could not use.

    A 4xx is a refusal (nothing stored); authentication and access failures are never retried here.
    """
    if isinstance(exc, AuthError | AccessDenied | PreconditionFailed):
        return False
    return exc.status is None or exc.status >= 500 or 200 <= exc.status < 300


def _gave_up(exc: ServerError, what: str, attempts: int) -> ServerError:
    return ServerError(
        f"{what}: the outcome stayed unknown after {attempts} attempt(s), each re-read first ({exc})",
        exc.status,
        exc.url,
        server_text=exc.server_text,
    )


def _unversioned(reference: object) -> str | None:
    """``ResearchSubject/x`` of ``ResearchSubject/x/_history/2`` (or of an absolute URL of it)."""
    if not isinstance(reference, str):
        return None
    parts = reference.split("/_history/", 1)[0].rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else None


def _version_of(resource: Resource) -> str | None:
    meta = resource.get("meta")
    version = meta.get("versionId") if isinstance(meta, dict) else None
    return version if isinstance(version, str) and version else None


def _subjects_of(found: Iterable[Resource], value: str) -> list[Resource]:
    """The ResearchSubjects of ``found`` that carry this patient's identifier: a server may ignore
    ``identifier`` and answer every subject it has."""
    return [r for r in found if _is(r, "ResearchSubject") and _has_identifier(r, SUBJECT_ID_SYSTEM, value)]


def _distinct(resources: Iterable[Resource]) -> list[Resource]:
    """Each ``Type/id`` once, in order (pages that overlap, entries a server repeats)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for r in resources:
        rtype, rid = r.get("resourceType"), r.get("id")
        if isinstance(rtype, str) and isinstance(rid, str):
            if (rtype, rid) in seen:
                continue
            seen.add((rtype, rid))
        out.append(r)  # without a usable type and id it is no one's copy: callers skip it
    return out


def _is(resource: Resource, rtype: str) -> bool:
    return resource.get("resourceType") == rtype and isinstance(resource.get("id"), str)


def _has_identifier(resource: Resource, system: str, value: str) -> bool:
    return any(
        isinstance(i, dict) and i.get("system") == system and i.get("value") == value
        for i in as_list(resource.get("identifier"))
    )


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
