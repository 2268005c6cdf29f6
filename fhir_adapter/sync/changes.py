"""Which patients changed since the watermark: the server's history feed, deletions included."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from fhir_adapter.client.http import FhirClient
from fhir_adapter.client.urls import is_valid_id, is_valid_type
from fhir_adapter.errors import AuthError, ServerError, ServerUnreachable
from fhir_adapter.facts.fhirjson import patient_of

log = logging.getLogger(__name__)
PAGE_SIZE = 500


@dataclass
class Changes:
    patients: set[str] = field(default_factory=set)
    deleted: int = 0
    # Deletions whose patient could not be learned (no usable URL, no earlier version, that version
    # unreadable): a warning and a manifest count; the scheduled full reconciliation re-screens them.
    untraced: int = 0
    entries: int = 0
    # The feed's own next watermark (a Bulk Data export's transactionTime); None: the run's server_now.
    next_watermark: dt.datetime | None = None
    hold_watermark: bool = False  # the feed is incomplete: keep the old watermark, read it again next run


def server_now(client: FhirClient) -> dt.datetime:
    """The server's clock, never ours, so clock skew cannot lose a change.

    An empty search's ``Bundle.meta.lastUpdated`` carries milliseconds; the ``Date`` header (whole
    seconds, the fallback) would make the next run re-read everything written in the same second.
    """
    bundle = client.get("Patient", {"_count": 0})
    stamp = (bundle.get("meta") or {}).get("lastUpdated") if isinstance(bundle, dict) else None
    if isinstance(stamp, str):
        try:
            parsed = dt.datetime.fromisoformat(stamp)
            if parsed.tzinfo is not None:
                return parsed
        except ValueError:
            pass
    if client.last_server_date is None:
        raise ServerError("the server sends neither Bundle.meta.lastUpdated nor a Date header: no watermark")
    return client.last_server_date


def changed_patients(client: FhirClient, since: dt.datetime, types: frozenset[str]) -> Changes:
    """Patients with a created, updated or deleted resource of a type the criteria read, since ``since``.

    Type-level ``_history?_since=`` lists deletions too (a version with no body); the patient of a deleted
    resource is read from the version before the deletion.
    """
    changes = Changes()
    stamp = since.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for rtype in sorted(types | {"Patient"}):
        for entry in client.history_type(rtype, {"_since": stamp, "_count": PAGE_SIZE}):
            changes.entries += 1
            resource = entry.get("resource")
            if isinstance(resource, dict):
                pid = patient_of(resource)
            else:
                pid = _patient_of_deleted(client, entry)
                changes.deleted += 1
                changes.untraced += pid is None
            if pid:
                changes.patients.add(pid)
    log.info(
        "history since %s: %d entries, %d deletions (%d not traced to a patient), %d patients",
        stamp,
        changes.entries,
        changes.deleted,
        changes.untraced,
        len(changes.patients),
    )
    warn_untraced(changes.untraced)
    return changes


def warn_untraced(untraced: int) -> None:
    if untraced:
        log.warning(
            "%d deleted resource(s) could not be traced to a patient: the full reconciliation catches them",
            untraced,
        )


def changed_by_last_updated(client: FhirClient, since: dt.datetime, types: frozenset[str]) -> Changes:
    """Patients with a resource of a type the criteria read created or updated since ``since``, by
    ``_lastUpdated`` searches: for servers without a history feed. Deletions are invisible to a search;
    the scheduled full reconciliation (``limits.full_reconciliation_days``) catches them."""
    changes = Changes()
    stamp = since.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    older: dict[str, int] = {}
    for rtype in sorted(types | {"Patient"}):
        params: list[tuple[str, str | int]] = [("_lastUpdated", f"gt{stamp}"), ("_count", PAGE_SIZE)]
        for resource in client.search(rtype, params):
            changes.entries += 1
            if _not_after(resource, since):
                older[rtype] = older.get(rtype, 0) + 1
            pid = patient_of(resource)
            if pid:
                changes.patients.add(pid)
    log.info(
        "_lastUpdated since %s: %d resources, %d patients", stamp, changes.entries, len(changes.patients)
    )
    if older:
        # Not wrong (their patients are screened again), but every night would then be a full run
        # under the name of changes: the operator should know the feed is not one.
        log.warning(
            "the server answered _lastUpdated=gt%s with resources last updated before it (%s): it may "
            "ignore the parameter; their patients are screened again",
            stamp,
            ", ".join(f"{t} {n}" for t, n in sorted(older.items())),
        )
    return changes


def _not_after(resource: dict[str, object], since: dt.datetime) -> bool:
    meta = resource.get("meta")
    stamp = meta.get("lastUpdated") if isinstance(meta, dict) else None
    if not isinstance(stamp, str):
        return False
    try:
        updated = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return False
    return updated.tzinfo is not None and updated <= since


def _patient_of_deleted(client: FhirClient, entry: dict[str, object]) -> str | None:
    """The patient of the version before a deletion, or None when the entry does not say which resource
    and version was deleted or that version cannot be read. The URL is the server's text: only a FHIR
    type, id and version from it go into a request, and one unreadable version costs its deletion, not
    the run."""
    request = entry.get("request")
    candidates = [entry.get("fullUrl"), request.get("url") if isinstance(request, dict) else None]
    urls = [u for u in candidates if isinstance(u, str)]
    # HAPI puts the deleted version only in request.url ("Observation/o1/_history/2"), not in fullUrl.
    url = next((u for u in urls if "/_history/" in u), None)
    if url is None:
        return None
    parts = url.split("?")[0].rstrip("/").split("/")
    if parts.count("_history") != 1:
        return None
    i = parts.index("_history")
    if i < 2 or i + 2 != len(parts):
        return None
    rtype, rid, version = parts[i - 2], parts[i - 1], parts[i + 1]
    if not (is_valid_type(rtype) and is_valid_id(rid) and version.isdigit() and 1 < int(version) < 10**9):
        return None
    try:
        previous = client.vread(rtype, rid, str(int(version) - 1))
    except AuthError:
        raise
    except ServerUnreachable:
        raise  # the server is gone: the run's other requests would fail too
    except ServerError as exc:
        log.info("%s/%s: the version before its deletion cannot be read (%s)", rtype, rid, type(exc).__name__)
        return None
    if previous is None or not isinstance(previous.body, dict):
        return None
    return patient_of(previous.body)
