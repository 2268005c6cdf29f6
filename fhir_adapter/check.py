"""``fhir-adapter check --server URL``: the preflight a hospital integration engineer runs first.

It reads the CapabilityStatement and ``.well-known/smart-configuration``, obtains a token, and makes a
few harmless reads (``_count=1`` searches) to tell what the server really does from what it says. It
never writes. It reports each interaction, operation and search parameter the adapter would use as
``supported``, ``not supported`` (the server said so, or refused the probe) or ``untested`` (stated
nowhere, and not probed because the probe would write), the strategies ``screen`` and ``sync`` would
choose, and what a screen of N patients costs in requests.

With a separate write target (``--write-server``, ``[writeback]``) the write server gets a section of
its own (``write target``): reachable, TLS, credentials, FHIR version, the searches write-back makes
there (probed) and the creates it needs (as stated: a probe would write). The read server's own write
checks are then skipped: nothing is written there.

Exit: 0 when screen and sync can run as designed, 3 when they can run degraded (typed searches for
lack of ``$everything``, no change feed, writes not offered), 4 when they cannot.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from fhir_adapter.client.factory import open_client
from fhir_adapter.client.http import FhirClient
from fhir_adapter.client.urls import LOOPBACK, is_valid_id
from fhir_adapter.errors import (
    AccessDenied,
    AdapterError,
    AuthError,
    ExitCode,
    ServerError,
    ServerUnreachable,
)
from fhir_adapter.screening import Screener
from fhir_adapter.settings import ServerSettings, WriteTarget
from fhir_adapter.source.bulk_plan import export_types
from fhir_adapter.source.candidates import CODES_PER_SEARCH, search_tokens
from fhir_adapter.source.strategies import (
    Capabilities,
    Overrides,
    RecordsStrategy,
    Strategies,
    bulk_level,
    choose_candidates,
    choose_records,
    choose_sync,
    read_capabilities,
    without_everything,
)

Status = Literal["ok", "supported", "not supported", "untested", "failed", "degraded"]
WRITE_TYPES = ("ResearchStudy", "ResearchSubject", "Provenance", "Device")
AREAS = ("connection", "auth", "read", "search", "changes", "bulk", "write", "write target", "optional")


@dataclass(frozen=True, slots=True)
class Finding:
    area: str  # "connection", "auth", "read", "search", "changes", "bulk", "write"
    what: str
    status: Status
    detail: str = ""


@dataclass
class Report:
    server: str
    findings: list[Finding] = field(default_factory=list)
    strategies: dict[str, dict[str, str]] = field(default_factory=dict)  # "screen", "sync"
    forced: dict[str, list[str]] = field(default_factory=dict)  # the steps the operator chose, per run
    cost: dict[str, Any] = field(default_factory=dict)
    fhir_version: str = ""
    write_server: str | None = None  # a separate write target's URL

    def add(self, area: str, what: str, status: Status, detail: str = "") -> None:
        self.findings.append(Finding(area, what, status, detail))

    @property
    def exit_code(self) -> int:
        if any(f.status == "failed" for f in self.findings):
            return ExitCode.FATAL
        if any(f.status in ("degraded", "not supported") for f in self.findings if f.area != "optional"):
            return ExitCode.PARTIAL
        return ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "writeServer": self.write_server,
            "fhirVersion": self.fhir_version,
            "outcome": {ExitCode.OK: "ready", ExitCode.PARTIAL: "degraded", ExitCode.FATAL: "cannot run"}[
                self.exit_code
            ],
            "strategies": self.strategies,
            "forcedStrategies": self.forced,
            "requestEstimate": self.cost,
            "findings": [
                {"area": f.area, "what": f.what, "status": f.status, "detail": f.detail}
                for f in self.findings
            ],
        }

    def render(self) -> str:
        width = max((len(f.what) for f in self.findings), default=10)
        lines = [f"Preflight of {self.server} (FHIR {self.fhir_version or '?'})"]
        if self.write_server:
            lines.append(f"write target: {self.write_server}")
        lines.append("")
        area = ""
        order = {a: i for i, a in enumerate(AREAS)}
        for f in sorted(self.findings, key=lambda f: order.get(f.area, len(order))):
            if f.area != area:
                area = f.area
                lines.append(f"{area}:")
            lines.append(f"  {f.what:<{width}}  {f.status:<13} {f.detail}".rstrip())
        if self.strategies:
            lines.append("")
            for run, chosen in self.strategies.items():
                forced = self.forced.get(run, [])
                lines.append(
                    f"strategies of {run}: "
                    + ", ".join(f"{k} {v}" + (" (forced)" if k in forced else "") for k, v in chosen.items())
                )
        if self.cost:
            c = self.cost
            lines.append(
                f"requests for a screen of {c['patients']} patients: about {c['total']} "
                f"(candidates {c['candidates']}, {c['perPatient']} per patient, write-back {c['writeBackPerPatient']} "
                "per patient on a first run, 1 when unchanged)"
            )
            s = c.get("sync")
            if s and s["everyRunFull"]:
                lines.append(
                    f"requests of sync with {c['patients']} patients: every run is a full run (no change "
                    f"feed), about {s['fullRun']} (+ write-back)"
                )
            elif s:
                lines.append(
                    f"requests of sync with {c['patients']} patients: a full run about {s['fullRun']}, an "
                    f"incremental run about {s['changeFeed']} for the change feed + {s['perChangedPatient']} per "
                    f"changed patient + {s['recordsExportPerRun']} for a records export (+ write-back)"
                    + (
                        f"; each export about {s['requestsPerExport']} ({s['exportNote']})"
                        if s["exports"]
                        else ""
                    )
                )
        outcome = self.to_json()["outcome"]
        lines += ["", f"outcome: {outcome} (exit {self.exit_code})"]
        return "\n".join(lines)


def run_check(
    server: ServerSettings,
    screener: Screener,
    patients: int = 1000,
    write_back: bool = True,
    write_target: WriteTarget | None = None,
    group: str | None = None,
    *,
    screen_records: RecordsStrategy | None = None,
    sync_overrides: Overrides | None = None,
) -> Report:
    """``group``: the Group the sync names (``[server] group``): Group members as candidates, and a
    Group-level export as the change feed where the server offers no other. ``screen_records`` is
    ``screen --records``; ``sync_overrides`` the site's ``[strategies]``: what the operator forces is
    what the runs do, so the preflight names it too."""
    report = Report(server.url)
    if write_back and write_target is not None:
        _write_target(write_target, report)
    try:
        client = open_client(server)
    except AuthError as exc:
        report.add("auth", "credentials", "failed", str(exc))
        return report
    with client:
        try:
            statement = client.capabilities()
        except ServerUnreachable as exc:
            report.add("connection", "reach the server", "failed", str(exc))
            return report
        except ServerError as exc:
            report.add("connection", "GET metadata", "failed", str(exc))
            return report
        report.add("connection", "reach the server", "ok", "GET metadata answered")
        _tls(server.url, report, "connection")
        caps = read_capabilities(statement)
        report.fhir_version = caps.fhir_version
        release_ok = caps.fhir_version.startswith(("4.0", "4.3", "5."))
        report.add(
            "connection", "FHIR version", "ok" if release_ok else "failed", caps.fhir_version or "not stated"
        )
        _auth(client, report)
        _smart(client, report)
        caps = _reads(client, caps, screener, report)
        if group is not None:
            _group(client, group, report)
        _changes(caps, screener, report)
        _bulk(caps, report, group)
        if write_back and write_target is None:
            _writes(caps, report)
        sync = _strategies(caps, screener, report, group, screen_records, sync_overrides or Overrides())
        _cost(caps, screener, report, patients, write_back, sync, group)
    return report


def _tls(url: str, report: Report, area: str) -> None:
    host = urlsplit(url).hostname or ""
    if url.startswith("https:"):
        report.add(area, "TLS", "ok", "certificate verified")
    elif host in LOOPBACK:
        report.add(area, "TLS", "ok", "plain http on loopback (a local sandbox)")
    else:
        report.add(area, "TLS", "degraded", "plain http to another host: patient data unencrypted")


def _credentials(client: FhirClient, report: Report, area: str) -> bool:
    """Whether a token could be obtained (or none is needed); the scopes granted against those asked."""
    auth = client.auth
    if auth is None:
        report.add(area, "credentials", "ok", "none configured (the server asked for none so far)")
        return True
    token = getattr(auth, "access_token", None)
    if not callable(token):
        report.add(area, "credentials", "ok", type(auth).__name__)
        return True
    try:
        token()
    except AdapterError as exc:
        report.add(area, "token", "failed", str(exc))
        return False
    granted = getattr(auth, "granted_scope", None)
    wanted = set(str(getattr(auth, "scope", "")).split())
    if granted is None:
        report.add(area, "token", "ok", "obtained; the token response lists no scopes")
    else:
        missing = sorted(wanted - set(str(granted).split()))
        report.add(
            area,
            "scopes",
            "degraded" if missing else "ok",
            f"not granted: {' '.join(missing)}" if missing else f"granted: {granted}",
        )
    return True


def _auth(client: FhirClient, report: Report) -> None:
    if not _credentials(client, report, "auth"):
        return
    try:
        client.get("Patient", {"_count": 1, "_elements": "id"})
        report.add("auth", "read with the credentials", "ok", "GET Patient?_count=1 answered")
    except (AuthError, AccessDenied) as exc:  # 401/403 to a plain read: the credentials do not work here
        report.add("auth", "read with the credentials", "failed", str(exc))
    except ServerError as exc:
        report.add("auth", "read with the credentials", "degraded", str(exc))


def _smart(client: FhirClient, report: Report) -> None:
    try:
        config = client.get(".well-known/smart-configuration")
    except AdapterError:
        report.add("optional", ".well-known/smart-configuration", "untested", "not served")
        return
    endpoint = config.get("token_endpoint")
    report.add(
        "optional",
        ".well-known/smart-configuration",
        "supported" if isinstance(endpoint, str) else "not supported",
        "token_endpoint given" if isinstance(endpoint, str) else "no token_endpoint",
    )


def _probe(client: FhirClient, path: str, params: Sequence[tuple[str, str | int]]) -> tuple[bool, str]:
    try:
        client.get(path, list(params))
        return True, "probed"
    except AuthError:
        raise
    except ServerError as exc:
        return False, f"probe refused: HTTP {exc.status}" if exc.status else "probe failed"


def _everything(client: FhirClient) -> tuple[bool | None, str]:
    """Whether one patient's ``$everything`` answers (None: no patient to try it on). A server may list
    the operation and refuse it (405/501); screen then falls back to typed searches, and check says so."""
    try:
        listed = client.get("Patient", [("_count", 1), ("_elements", "id")])
    except AuthError:
        raise
    except ServerError:
        return None, "stated; not probed (the server would not list a patient to try it on)"
    entries = listed.get("entry") if isinstance(listed.get("entry"), list) else []
    first = entries[0].get("resource") if entries and isinstance(entries[0], dict) else None
    pid = first.get("id") if isinstance(first, dict) else None
    if not isinstance(pid, str) or not is_valid_id(pid):
        return None, "stated; not probed (no patient on the server to try it on)"
    ok, how = _probe(client, f"Patient/{pid}/$everything", [("_count", 1)])
    return (True, "one request per patient (probed)") if ok else (False, f"stated, but {how}")


def _reads(client: FhirClient, caps: Capabilities, screener: Screener, report: Report) -> Capabilities:
    """The read rows; the capabilities as the probes found them (a refused $everything is not one)."""
    if not caps.everything:
        report.add("read", "Patient/ID/$everything", "degraded", "not offered: typed searches instead")
    else:
        works, how = _everything(client)
        if works is False:
            how += ": screen and sync fall back to typed searches"
            caps = without_everything(caps)
        report.add("read", "Patient/ID/$everything", "degraded" if works is False else "supported", how)
    for rtype in sorted(screener.needed_types - {"Medication"}):
        stated = caps.supports(rtype, "search-type")
        param = "patient" if rtype not in ("Patient",) else "_id"
        ok, how = _probe(client, rtype, [(param, "fhir-adapter-preflight"), ("_count", 1)])
        status: Status = "supported" if ok else ("not supported" if not stated else "degraded")
        report.add(
            "search",
            f"{rtype}?{param}=",
            status,
            how + ("" if stated else "; not in the CapabilityStatement"),
        )
    for rtype, concepts in screener.gate.selectors:
        tokens = sorted({t for c in concepts for t in search_tokens(c)})[:CODES_PER_SEARCH]
        ok, how = _probe(client, rtype, [("code", ",".join(tokens)), ("_count", 1), ("_elements", "id")])
        report.add("search", f"{rtype}?code= (candidates)", "supported" if ok else "not supported", how)
        ok, how = _probe(client, rtype, [("code:text", "fhir-adapter-preflight"), ("_count", 1)])
        report.add(
            "optional", f"{rtype}?code:text= (local codes)", "supported" if ok else "not supported", how
        )
    return caps


def _group(client: FhirClient, group: str, report: Report) -> None:
    try:
        found = client.read("Group", group)
    except AuthError:
        raise
    except (ServerError, ValueError) as exc:
        report.add(
            "read", f"Group/{group}", "failed", str(exc) if isinstance(exc, ServerError) else "not a FHIR id"
        )
        return
    if found is None or found.body is None:
        report.add("read", f"Group/{group}", "failed", "no such Group on the server")
        return
    members = found.body.get("member")
    count = len(members) if isinstance(members, list) else 0
    report.add("read", f"Group/{group}", "supported", f"{count} member(s)")


def _changes(caps: Capabilities, screener: Screener, report: Report) -> None:
    types = sorted(screener.needed_types | {"Patient"})
    without_history = [t for t in types if not caps.supports(t, "history-type")]
    report.add(
        "changes",
        "Type/_history?_since",
        "supported" if not without_history else "not supported",
        "every type the criteria read"
        if not without_history
        else f"missing for {', '.join(without_history)}",
    )
    without = [t for t in types if not caps.searchable(t, "_lastUpdated")]
    report.add(
        "changes",
        "_lastUpdated searches",
        "supported" if not without else "not supported",
        "every type" if not without else f"not stated for {', '.join(without)}",
    )


def _bulk(caps: Capabilities, report: Report, group: str | None) -> None:
    levels = caps.export_levels
    usable = bulk_level(caps, group is not None)
    status: Status
    if not levels:
        detail, status = "no Bulk Data export", "not supported"
    elif usable is None:
        detail, status = (
            f"levels: {', '.join(sorted(levels))}; a Group-level export needs --group ID",
            "degraded",
        )
    else:
        where = f"Group/{group}" if usable == "group" else usable
        detail, status = f"levels: {', '.join(sorted(levels))}; the sync would use {where}", "supported"
    # A server without any export is not degraded for that: screen and sync read by searches.
    report.add("bulk" if levels else "optional", "$export", status, detail)
    if levels:
        report.add(
            "bulk", "_since", "untested", "the sync's change feed when it is bulk; not probed (a kick-off)"
        )
        report.add("bulk", "_typeFilter", "untested", "servers often refuse it; screen --bulk falls back")


def _writes(caps: Capabilities, report: Report) -> None:
    for rtype in WRITE_TYPES:
        create = caps.supports(rtype, "create")
        update = caps.supports(rtype, "update") or rtype in ("Provenance", "Device", "ResearchStudy")
        ok = create and update
        report.add(
            "write",
            f"{rtype} create/update",
            "supported" if ok else "degraded",
            "stated (never probed: a probe would write)"
            if ok
            else "not offered: use a separate write server (--write-server) or screen without --write-back",
        )


def _write_target(target: WriteTarget, report: Report) -> None:
    """The write server's own section: can write-back search and create there (creates as stated)."""
    area = "write target"
    report.write_server = target.server.url
    try:
        client = open_client(target.server)
    except AuthError as exc:
        report.add(area, "credentials", "failed", str(exc))
        return
    with client:
        try:
            caps = read_capabilities(client.capabilities())
        except ServerUnreachable as exc:
            report.add(area, "reach the write server", "failed", str(exc))
            return
        except ServerError as exc:
            report.add(area, "GET metadata", "failed", str(exc))
            return
        report.add(area, "reach the write server", "ok", "GET metadata answered")
        _tls(target.server.url, report, area)
        release_ok = caps.fhir_version.startswith(("4.0", "4.3", "5."))
        report.add(area, "FHIR version", "ok" if release_ok else "failed", caps.fhir_version or "not stated")
        if not _credentials(client, report, area):
            return
        # The searches write-back makes, each with a key that matches nothing.
        for rtype, param in (("ResearchSubject", "identifier"), ("Provenance", "_tag")):
            try:
                client.get(rtype, [(param, "https://fhir-adapter.org/preflight|none"), ("_count", 1)])
                report.add(area, f"{rtype}?{param}=", "supported", "probed")
            except (AuthError, AccessDenied) as exc:
                report.add(area, f"{rtype}?{param}=", "failed", str(exc))
            except ServerError as exc:
                report.add(area, f"{rtype}?{param}=", "failed", f"probe refused: HTTP {exc.status}")
        for rtype in WRITE_TYPES:
            # ResearchSubjects are updated too; the others are only ever created.
            update = rtype != "ResearchSubject" or caps.supports(rtype, "update")
            ok = caps.supports(rtype, "create") and update
            report.add(
                area,
                f"{rtype} create" + ("/update" if rtype == "ResearchSubject" else ""),
                "supported" if ok else "degraded",
                "stated (never probed: a probe would write)"
                if ok
                else "not in the CapabilityStatement: the server may refuse write-back",
            )
        how = (
            f"by identifier {target.identifier_system}"
            if target.patient_reference == "identifier"
            else "by the read server's absolute URL (the server must accept external references)"
        )
        report.add(area, "patient references", "untested", how)


def _strategies(
    caps: Capabilities,
    screener: Screener,
    report: Report,
    group: str | None,
    screen_records: RecordsStrategy | None,
    overrides: Overrides,
) -> Strategies | None:
    """What ``screen --server`` (with ``--group`` and ``--records`` when given) and ``sync`` (with
    ``[server] group`` and ``[strategies]``) choose: the same functions the runs call."""
    gate_types = screener.gate.types or ("Condition",)
    try:
        candidates: str = choose_candidates(caps, group=group is not None, gate_types=gate_types)
    except AdapterError as exc:
        report.add("read", "candidates", "failed", str(exc))
        candidates = "none"
    report.strategies["screen"] = {"candidates": candidates, "records": choose_records(caps, screen_records)}
    if screen_records is not None:
        report.forced["screen"] = ["records"]
    try:
        sync = choose_sync(
            caps, screener.needed_types, gate_types=gate_types, group=group is not None, overrides=overrides
        )
    except AdapterError as exc:
        report.add("changes", "sync strategies", "failed", str(exc))
        return None
    report.strategies["sync"] = sync.to_json()
    forced = [f.name for f in dataclasses.fields(overrides) if getattr(overrides, f.name) is not None]
    if forced:
        report.forced["sync"] = forced
    changes = sync.changes
    if changes == "full-only":
        hint = (
            "; a Group-level export exists: give the Group ([server] group, --group)"
            if caps.export_levels
            else ""
        )
        report.add(
            "changes",
            "sync change feed",
            "degraded",
            f"none: every sync run re-screens every candidate{hint}",
        )
    elif changes == "last-updated":
        report.add(
            "changes", "sync change feed", "ok", "_lastUpdated: deletions only at the full reconciliation"
        )
    elif changes == "bulk":
        level = bulk_level(caps, group is not None)
        where = f"Group/{group}" if level == "group" else f"{level}-level"
        report.add(
            "changes",
            "sync change feed",
            "ok",
            f"{where} $export with _since: deletions where the server lists them, else at the full "
            "reconciliation",
        )
    return sync


# An export costs a kick-off, its status polls, one request per file and the DELETE; the polls depend on the
# server's speed (HAPI's small jobs: one or two; production: one per poll interval, minutes to hours).
EXPORT_POLLS = 3


def _cost(
    caps: Capabilities,
    screener: Screener,
    report: Report,
    patients: int,
    write_back: bool,
    sync: Strategies | None = None,
    group: str | None = None,
) -> None:
    tokens = sum(
        len({t for c in concepts for t in search_tokens(c)}) for _, concepts in screener.gate.selectors
    )
    texts = sum(len({t for c in concepts for t in c.text}) for _, concepts in screener.gate.selectors)
    candidates = -(-tokens // CODES_PER_SEARCH) + texts
    typed = 1 + len(screener.needed_types - {"Patient", "Medication"})
    # The strategy the screen uses, forced or chosen: a forced `typed` costs typed searches on any server.
    per_patient = 1 if report.strategies.get("screen", {}).get("records") == "everything" else typed
    writes = 4 if write_back else 0  # search, conditional create, Provenance search, Provenance create
    report.cost = {
        "patients": patients,
        "candidates": candidates,
        "perPatient": per_patient,
        "writeBackPerPatient": writes,
        "total": candidates + patients * (per_patient + writes),
    }
    if sync is not None:
        sync_per_patient = 1 if sync.records == "everything" else typed
        report.cost["sync"] = _sync_cost(caps, screener, sync, patients, candidates, sync_per_patient, group)


def _sync_cost(
    caps: Capabilities,
    screener: Screener,
    sync: Strategies,
    patients: int,
    searches: int,
    per_record: int,
    group: str | None,
) -> dict[str, Any]:
    """Requests of a sync run without its write-back (which is the screen's, per written patient)."""
    level = bulk_level(caps, group is not None) or "system"
    types = export_types(screener.needed_types, level)
    per_export = 2 + EXPORT_POLLS + len(types)  # kick-off, polls, one file per type, DELETE
    feed_types = len(screener.needed_types | {"Patient"})
    change_feed = {"history": feed_types, "last-updated": feed_types, "bulk": per_export}.get(
        sync.changes or "", 0
    )
    candidates = {"search": searches, "group": 1, "bulk": 0}.get(sync.candidates, 0)
    bulk_records = sync.records == "bulk"
    per_patient = 0 if bulk_records else per_record
    full = candidates + (per_export if bulk_records else patients * per_patient)
    return {
        "fullRun": full,
        "everyRunFull": sync.changes == "full-only",  # no change feed: there is no incremental run
        "changeFeed": change_feed,
        "perChangedPatient": per_patient,
        "recordsExportPerRun": per_export if bulk_records else 0,
        "requestsPerExport": per_export,
        "exports": int(sync.changes == "bulk") + int(bulk_records),
        "exportNote": f"a kick-off, about {EXPORT_POLLS} polls, {len(types)} files, the DELETE"
        + ("; plus one read per referenced Medication" if level != "system" else ""),
    }


def render(report: Report, as_json: bool) -> str:
    return json.dumps(report.to_json(), indent=2) if as_json else report.render()
