"""``fhir-adapter screen --server``: find candidates, fetch each record, screen it, write back.

Per patient, in one pass: fetch -> screen (the same ``screen_record`` as the file path) -> result file
-> ResearchSubject (or, without ``--write-back``, a line saying what would be written). Only the
current patient's record is in memory.

Errors: a patient the server cannot serve (a 4xx/5xx on its fetch) or whose ResearchSubject is
rejected is listed under ``errors`` and the run goes on (exit 3); authentication failures and an
unreachable server stop the run (exit 4), since every later patient would fail the same way.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import requests
import requests.auth

from fhir_adapter.client.auth import (
    DEFAULT_SCOPE,
    BearerTokenAuth,
    SmartBackendAuth,
    basic_auth,
    discover_token_url,
)
from fhir_adapter.client.http import FhirClient
from fhir_adapter.client.secrets import resolve_secret
from fhir_adapter.config.types import Mappings
from fhir_adapter.errors import AuthError, ServerError, UsageError
from fhir_adapter.model import InputProblem, SubjectResult
from fhir_adapter.output import summary
from fhir_adapter.output.result_file import ResultWriter
from fhir_adapter.pipeline import is_dm_condition, no_diagnosis, screen_record
from fhir_adapter.source.candidates import Candidates, find_candidates, given_patients, group_members
from fhir_adapter.source.records import Fetched, Strategy, choose_strategy, fetch_record
from fhir_adapter.writeback.subjects import Action, WriteBack, release_of

log = logging.getLogger(__name__)


def client_from_args(args: argparse.Namespace) -> FhirClient:
    """A ``FhirClient`` for ``--server`` with the auth, CA bundle and timeout options of the CLI."""
    if not args.server:
        raise UsageError("--server URL is required")
    verify: bool | str = args.ca_bundle or True
    timeout = (10.0, float(args.timeout))
    return FhirClient(args.server, auth=_auth(args, verify, timeout), timeout=timeout, verify=verify)


def _auth(
    args: argparse.Namespace, verify: bool | str, timeout: tuple[float, float]
) -> requests.auth.AuthBase | None:
    if args.auth == "none":
        return None
    if args.auth == "bearer":
        return BearerTokenAuth.from_secret(args.token, setting="--token")
    if args.auth == "basic":
        if not args.basic_user:
            raise UsageError("--auth basic needs --basic-user")
        return basic_auth(args.basic_user, args.basic_password, setting="--basic-password")
    if not args.smart_client_id or not args.smart_key:
        raise UsageError("--auth smart needs --smart-client-id and --smart-key")
    key = resolve_secret(args.smart_key, setting="--smart-key").encode("utf-8")
    token_url = args.smart_token_url
    if not token_url:
        with requests.Session() as session:
            token_url = discover_token_url(session, args.server, timeout=timeout, verify=verify)
    return SmartBackendAuth(
        token_url,
        args.smart_client_id,
        key,
        algorithm=args.smart_alg,
        kid=args.smart_kid,
        scope=getattr(args, "smart_scope", None) or DEFAULT_SCOPE,
        timeout=timeout,
        verify=verify,
    )


@dataclass
class ServerRun:
    """What the summary reports beyond the verdicts: request counts and write-back outcomes."""

    strategy: Strategy
    release: str
    candidate_requests: int
    requests_per_patient: list[int] = field(default_factory=list)
    writeback: WriteBack | None = None
    warnings: list[str] = field(default_factory=list)  # "warning: ..." / "note: ..." lines


def screen_server(
    args: argparse.Namespace,
    mappings: Mappings,
    as_of: dt.date,
    *,
    out: TextIO | None = None,
    strategy: Strategy | None = None,
) -> list[InputProblem]:
    """Screen the server's candidates into ``args.out`` and print the summary; returns the problems.

    ``strategy`` forces a fetch strategy (tests compare both); by default the CapabilityStatement decides.
    ``out`` (default: stderr at call time) receives the per-patient lines and the summary.
    """
    out = out if out is not None else sys.stderr
    if args.paths:
        raise UsageError("give PATHs or --server, not both")
    if args.patient and args.group:
        raise UsageError("give --patient or --group, not both")
    with client_from_args(args) as client:
        run, problems, writer = _run(client, args, mappings, as_of, out, strategy)
    order = [c.id for c in mappings.trial.criteria]
    print(summary.render(writer.tally, problems, order), file=out)
    print(render_server_summary(run), file=out)
    return problems


def _run(
    client: FhirClient,
    args: argparse.Namespace,
    mappings: Mappings,
    as_of: dt.date,
    out: TextIO,
    strategy: Strategy | None,
) -> tuple[ServerRun, list[InputProblem], ResultWriter]:
    release = release_of(client.fhir_version())
    chosen = strategy or choose_strategy(client.capabilities())
    log.info("FHIR %s server; fetching records with %s", release, chosen)
    writeback = WriteBack(client, mappings.trial, mappings.fingerprint, release, dry_run=not args.write_back)
    writeback.prepare()
    candidates = _candidates(client, args, mappings)
    run = ServerRun(
        chosen, release, candidates.requests, writeback=writeback, warnings=list(candidates.warnings)
    )
    problems: list[InputProblem] = []
    where = client.base_url
    is_dm = is_dm_condition(mappings)
    writer = ResultWriter(args.out, mappings.trial.study, as_of, mappings.fingerprint)
    try:
        for pid in candidates.patient_ids:
            fetched = _fetch(client, pid, chosen, where, problems)
            if fetched is None:
                continue
            subject = _screen(fetched, mappings, as_of, is_dm)
            writer.subject(subject, extra={"requests": fetched.requests})
            run.requests_per_patient.append(fetched.requests)
            outcome = writeback.write(subject, fetched.versions)
            if writeback.dry_run or outcome.action is Action.FAILED or outcome.provenance_error:
                print(outcome.describe(), file=out)
            if outcome.action is Action.FAILED:
                problems.append(
                    InputProblem(
                        where,
                        f"{subject.patient}: write-back failed: {outcome.detail}",
                        resource=subject.patient,
                    )
                )
            elif outcome.provenance_error:
                problems.append(
                    InputProblem(
                        where,
                        f"{subject.patient}: Provenance for {outcome.reference} failed: {outcome.provenance_error}",
                        resource=subject.patient,
                    )
                )
        writer.close(problems)
    except BaseException:
        writer.abort()
        raise
    run.warnings.extend(f"note: {n}" for n in writeback.notes)
    return run, problems, writer


def _candidates(client: FhirClient, args: argparse.Namespace, mappings: Mappings) -> Candidates:
    if args.patient:
        return given_patients(args.patient)
    if args.group:
        return group_members(client, args.group)
    return find_candidates(client, mappings)


def _fetch(
    client: FhirClient, pid: str, strategy: Strategy, where: str, problems: list[InputProblem]
) -> Fetched | None:
    try:
        fetched = fetch_record(client, pid, strategy)
    except AuthError:
        raise
    except ServerError as exc:
        if exc.status is None:
            raise
        problems.append(
            InputProblem(where, f"Patient/{pid}: cannot fetch the record: {exc}", resource=f"Patient/{pid}")
        )
        return None
    if fetched is None:
        problems.append(
            InputProblem(where, f"Patient/{pid}: no such patient on the server", resource=f"Patient/{pid}")
        )
    return fetched


def _screen(
    fetched: Fetched, mappings: Mappings, as_of: dt.date, is_dm: Callable[[dict[str, object]], bool]
) -> SubjectResult:
    record = fetched.record
    if any(is_dm(c) for c in record.of_type("Condition")):
        return screen_record(record, mappings, as_of)
    # A --patient/--group member without DM: listed like the file path lists non-candidates.
    return no_diagnosis(record.patient_id, fetched.n_conditions, mappings)


def render_server_summary(run: ServerRun) -> str:
    """Request counts per patient and the write-back tally, below the verdict summary."""
    counts = run.requests_per_patient
    how = "$everything" if run.strategy == "everything" else "typed searches"
    lines = [""]
    if counts:
        lines.append(
            f"Requests per patient ({how}, FHIR {run.release}): mean {statistics.fmean(counts):.1f}, "
            f"max {max(counts)}; candidate search: {run.candidate_requests}"
        )
    else:
        lines.append(f"No patient fetched (FHIR {run.release}); candidate search: {run.candidate_requests}")
    wb = run.writeback
    if wb is not None:
        c = wb.counts
        if wb.dry_run:
            lines.append(
                f"Write-back (dry run, nothing written; add --write-back): would create "
                f"{c[Action.CREATED]}, would update {c[Action.UPDATED]}, unchanged {c[Action.UNCHANGED]}, "
                f"staff-managed {c[Action.STAFF]}, failed {c[Action.FAILED]}"
            )
        else:
            line = (
                f"Write-back: created {c[Action.CREATED]}, updated {c[Action.UPDATED]}, "
                f"unchanged {c[Action.UNCHANGED]}, staff-managed {c[Action.STAFF]}, failed {c[Action.FAILED]}"
            )
            if wb.provenance_failures:
                line += f"; Provenance failed {wb.provenance_failures}"
            lines.append(line + f" ({wb.requests} request(s))")
    lines.extend(run.warnings)
    return "\n".join(lines)
