"""Command line: parse arguments into typed settings, call the command, map errors to exit codes.

No logic lives here, and nothing below it sees ``argparse``.

Exit codes (README, "Exit codes"): 0 every input read; 3 finished but some inputs could not be read or
written; 2 usage or configuration error; 4 fatal (server unreachable, authentication failed);
5 another sync run holds the lock; 70 internal error (a bug; the log has details at -vv).
``load`` uses the same codes: 0 everything uploaded; 3 some files unreadable or some transactions
rejected (listed); 4 server unreachable or authentication failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from fhir_adapter import __version__, logs
from fhir_adapter.errors import AdapterError, ExitCode, UsageError
from fhir_adapter.output.printable import printable
from fhir_adapter.settings import (
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    MAX_CONCURRENCY,
    MIB,
    AuthSettings,
    BulkSettings,
    ExportSettings,
    OutputSettings,
    PatientReference,
    RuleSettings,
    ScreenSettings,
    ServerSettings,
    SparkSettings,
    WriteTarget,
    cli_names,
)
from fhir_adapter.source.strategies import Overrides

log = logging.getLogger("fhir_adapter")

PATIENT_REFERENCES = get_args(PatientReference)
# An absolute URI (RFC 3986 scheme, then something): an identifier system such as an MRN namespace.
IDENTIFIER_SYSTEM = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from exc


def _instant(value: str) -> dt.datetime:
    """``--since``: a FHIR instant with its zone (the manifest's transactionTime), or a date (UTC midnight)."""
    try:
        if len(value) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not an instant (e.g. 2026-06-01T00:00:00Z) or a date: {value!r}"
        ) from exc
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the time zone (Z or +hh:mm): {value!r}")
    return parsed


def _bulk_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Bulk Data export")
    g.add_argument(
        "--export-level",
        choices=["system", "patient"],
        default="system",
        help="without --group: $export at system level (default) or Patient/$export",
    )
    g.add_argument(
        "--bulk-storage-origin",
        action="append",
        default=[],
        metavar="URL",
        help="an origin (https://host[:port]) other than the server's that may receive the access token for "
        "file downloads; repeatable (default: the token goes to the FHIR server's origin only)",
    )
    g.add_argument(
        "--poll-max-wait",
        type=float,
        default=10.0,
        metavar="S",
        help="longest wait between status polls, whatever Retry-After says (default 10)",
    )
    g.add_argument(
        "--export-timeout",
        type=float,
        default=7200.0,
        metavar="S",
        help="give up polling after this long; the job is kept and the next run resumes it (default 7200)",
    )
    g.add_argument(
        "--downloads", type=int, default=3, metavar="N", help="files downloaded at once (default 3)"
    )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="-v progress, -vv debug (no patient data)"
    )


def _server_options(p: argparse.ArgumentParser) -> None:
    _connection_options(
        p.add_argument_group(
            "FHIR server (secrets come from the environment or files, never from arguments)"
        ),
        prefix="",
        url_help="FHIR base URL to read from (instead of files)",
        token_env="FHIR_TOKEN",
        password_env="FHIR_PASSWORD",
    )


def _write_server_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "write target: ResearchStudy, ResearchSubject and Provenance go to another FHIR server "
        "(each --write-* option is the read server's option of the same name, for that server)"
    )
    _connection_options(
        g,
        prefix="write-",
        url_help="FHIR base URL to write back to (default: the server read from)",
        token_env="FHIR_WRITE_TOKEN",
        password_env="FHIR_WRITE_PASSWORD",
    )
    g.add_argument(
        "--write-patient-ref",
        choices=PATIENT_REFERENCES,
        default=None,
        help="how the ResearchSubject refers to the patient: absolute (the read server's URL, the default) "
        "or identifier (a business identifier of --write-patient-identifier-system)",
    )
    g.add_argument(
        "--write-patient-identifier-system",
        metavar="URI",
        help="the identifier system (e.g. the hospital's MRN system) of --write-patient-ref identifier",
    )


def _connection_options(
    g: argparse._ArgumentGroup, *, prefix: str, url_help: str, token_env: str, password_env: str
) -> None:
    """One server's URL, auth, TLS and limits: ``--server``, ``--auth`` ... for the server read from,
    ``--write-server``, ``--write-auth`` ... (``prefix="write-"``) for a separate write target."""

    def opt(name: str) -> str:
        return f"--{prefix}{name}"

    g.add_argument(opt("server"), metavar="URL", help=url_help)
    g.add_argument(opt("auth"), choices=["none", "bearer", "basic", "smart"], default="none")
    g.add_argument(
        opt("token"),
        metavar="REF",
        default=f"env:{token_env}",
        help=f"bearer token reference: env:NAME or file:/path (default env:{token_env})",
    )
    g.add_argument(opt("basic-user"), metavar="NAME")
    g.add_argument(
        opt("basic-password"),
        metavar="REF",
        default=f"env:{password_env}",
        help=f"env:NAME or file:/path (default env:{password_env})",
    )
    g.add_argument(opt("smart-client-id"), metavar="ID")
    g.add_argument(opt("smart-key"), metavar="REF", help="private key PEM: file:/path or env:NAME")
    g.add_argument(opt("smart-alg"), choices=["RS384", "ES384"], default="RS384")
    g.add_argument(opt("smart-kid"), metavar="KID")
    g.add_argument(
        opt("smart-token-url"), metavar="URL", help="default: from .well-known/smart-configuration"
    )
    g.add_argument(
        opt("smart-scope"),
        metavar="SCOPES",
        help="default: read all, and write the resources write-back needs where it writes",
    )
    g.add_argument(opt("ca-bundle"), metavar="PATH", help="custom CA bundle for TLS verification")
    g.add_argument(
        opt("timeout"),
        type=_positive,
        default=60.0,
        metavar="SECONDS",
        help="read timeout per socket read, seconds (default 60)",
    )
    limits = ServerSettings("https://x")
    g.add_argument(
        opt("allow-plain-http"),
        action="store_true",
        help="allow http:// to a host that is not loopback (patient data and tokens travel unencrypted)",
    )
    g.add_argument(
        opt("request-deadline"),
        type=_positive,
        default=limits.request_deadline,
        metavar="SECONDS",
        help=f"deadline of one whole HTTP exchange, body included (default {limits.request_deadline:.0f})",
    )
    g.add_argument(
        opt("max-response-mb"),
        type=_positive,
        default=limits.max_response_bytes / MIB,
        metavar="MB",
        help=f"largest response body read (default {limits.max_response_bytes // MIB})",
    )
    g.add_argument(
        opt("max-pages"),
        type=int,
        default=limits.max_pages,
        metavar="N",
        help=f"most pages followed in one search (default {limits.max_pages})",
    )
    g.add_argument(
        opt("throttle-budget"),
        type=float,
        default=limits.throttle_budget,
        metavar="SECONDS",
        help="total time a run may wait on 429/503 answers before it stops with exit 4 "
        f"(default {limits.throttle_budget:.0f})",
    )
    if not prefix:
        g.add_argument(
            "--concurrency",
            type=int,
            default=limits.concurrency,
            metavar="N",
            help=f"patient records fetched (and candidate searches run) at once (default "
            f"{limits.concurrency}; results are the same and in the same order whatever N)",
        )
    g.add_argument(
        opt("max-rps"),
        type=_positive,
        default=None,
        metavar="R",
        help="at most R requests per second to the server, all fetches together (default: no limit; "
        "a 429 slows every fetch down either way)",
    )


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fhir-adapter",
        description="Prescreen FHIR patients for clinical trials whose criteria are data (mappings/).",
        epilog="exit codes: 0 ok; 3 finished, but some inputs or writes failed (see errors); 2 usage or "
        "configuration error; 4 fatal (server unreachable at the start, authentication failed after a "
        "token refresh, K patients in a row failed, throttling budget spent); 5 sync lock held; "
        "70 internal error",
    )
    parser.add_argument("--version", action="version", version=f"fhir-adapter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("screen", help="screen FHIR files or a FHIR server; write the result JSON")
    s.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="files or folders (JSON, Bundles, NDJSON, .gz); with --engine spark also URIs (s3a://, hdfs://)",
    )
    s.add_argument(
        "--trial",
        action="append",
        default=[],
        metavar="ID|FILE.toml",
        help="trial to screen for: an id in mappings/criteria/, or a criteria file; repeatable "
        "(default: mappings/trials.toml's default)",
    )
    s.add_argument("--as-of", type=_date, default=None, help="evaluation date (default: today)")
    s.add_argument(
        "--mappings",
        type=Path,
        action="append",
        default=[],
        metavar="OVERLAY.toml",
        help="site overlay; repeatable, applied in order",
    )
    s.add_argument("--mappings-dir", type=Path, default=None, help=argparse.SUPPRESS)
    s.add_argument("--out", type=Path, default=None, help="result JSON of one trial (default: stdout)")
    s.add_argument(
        "--out-dir",
        default=None,
        metavar="DIR",
        help="one DIR/<study>.json and DIR/<study>.html per trial (needed for several trials); "
        "--engine spark: the manifest and part files (a path or URI)",
    )
    s.add_argument(
        "--report", type=Path, default=None, metavar="HTML", help="also write the coordinator report"
    )
    s.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="files: processes that screen records (default: every core once there are a few hundred "
        "candidates; 1 screens in this process)",
    )
    s.add_argument("--patient", action="append", default=[], metavar="ID", help="server: screen this patient")
    s.add_argument("--group", metavar="ID", help="server: screen the members of this Group")
    s.add_argument("--write-back", action="store_true", help="server: write ResearchSubject + Provenance")
    s.add_argument(
        "--records",
        choices=["everything", "typed"],
        default=None,
        help="server: how each record is read (default: $everything when the server offers it)",
    )
    s.add_argument(
        "--bulk",
        action="store_true",
        help="server: Bulk Data $export (system level, or --group), then screen the files as `screen DIR` does",
    )
    s.add_argument(
        "--bulk-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="--bulk: work folder for the job file and the downloads (default: .fhir-adapter-bulk beside the "
        "result); a killed run resumes the same export from it",
    )
    s.add_argument(
        "--keep-bulk-files", action="store_true", help="--bulk: keep the downloads after a complete run"
    )
    s.add_argument(
        "--single-pass",
        action="store_true",
        help="--bulk: one export of every type the criteria read (default: the gate's Conditions first, "
        "where the server supports _typeFilter, then the candidates' data)",
    )
    s.add_argument(
        "--max-consecutive-failures",
        type=int,
        default=DEFAULT_MAX_CONSECUTIVE_FAILURES,
        metavar="K",
        help="stop (exit 4) after K patients in a row fail; 0 never stops "
        f"(default {DEFAULT_MAX_CONSECUTIVE_FAILURES})",
    )
    _bulk_options(s)
    g = s.add_argument_group("engine (files only)")
    g.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="local (default): this machine; spark: Apache Spark (pip install 'fhir-adapter[spark]')",
    )
    g.add_argument(
        "--master",
        metavar="URL",
        default=None,
        help="spark: the Spark master (default: spark-submit's, else local[*])",
    )
    g.add_argument(
        "--merge",
        action="store_true",
        help="spark: also merge the parts into DIR/<study>.json and DIR/<study>.html (a local DIR)",
    )
    _server_options(s)
    _write_server_options(s)
    _common(s)

    e = sub.add_parser("export", help="Bulk Data $export into a folder of NDJSON files (nothing screened)")
    e.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new or empty folder")
    e.add_argument("--group", metavar="ID", help="Group/ID/$export (default: system level)")
    e.add_argument(
        "--since",
        type=_instant,
        default=None,
        metavar="INSTANT",
        help="only what changed since then (e.g. the transactionTime of the last export)",
    )
    e.add_argument(
        "--type",
        action="append",
        default=[],
        metavar="TYPE[,TYPE]",
        help="_type (default: the types the trials' criteria read); repeatable",
    )
    e.add_argument(
        "--trial",
        action="append",
        default=[],
        metavar="ID|FILE.toml",
        help="the trials whose criteria choose the types (default: mappings/trials.toml's default)",
    )
    e.add_argument("--mappings", type=Path, action="append", default=[], metavar="OVERLAY.toml")
    e.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the job file lives (default: --out); a killed run resumes the same job",
    )
    _bulk_options(e)
    _server_options(e)
    _common(e)

    ld = sub.add_parser("load", help="upload FHIR files to a server as transaction Bundles (PUT Type/id)")
    ld.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="files or folders (JSON, Bundles, NDJSON, .gz)"
    )
    ld.add_argument(
        "--chunk-size", type=int, default=200, metavar="N", help="resources per transaction (default 200)"
    )
    _server_options(ld)
    _common(ld)

    y = sub.add_parser("sync", help="scheduled, incremental screening of a FHIR server with write-back")
    y.add_argument("--config", type=Path, required=True, metavar="site.toml", help="the site configuration")
    y.add_argument("--dry-run", action="store_true", help="show what a run would do; change nothing")
    y.add_argument("--full", action="store_true", help="full reconciliation: re-screen every candidate")
    y.add_argument("--status", action="store_true", help="print the last runs and exit")
    y.add_argument(
        "--as-of", type=_date, default=None, help="evaluation date (default: the config's, else today)"
    )
    y.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="HTML",
        help="write the coordinator report of this run's result (default: [report] html; needs [report] result)",
    )
    _common(y)

    c = sub.add_parser(
        "check",
        help="preflight a FHIR server: what it offers, what screen and sync would do",
        description="Preflight a FHIR server: what it offers, what screen and sync would do there. Give the "
        "server and the screen's options (--trial, --mappings, --group, --records, --write-server), or "
        "--config site.toml for what that sync would do (its server, studies, overlays, Group, "
        "[strategies] and [writeback]).",
    )
    c.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="site.toml",
        help="check what this sync configuration would do (instead of --server and the rule options)",
    )
    c.add_argument("--trial", action="append", default=[], metavar="ID|FILE.toml")
    c.add_argument(
        "--mappings",
        type=Path,
        action="append",
        default=[],
        metavar="OVERLAY.toml",
        help="site overlay; repeatable, applied in order (as screen --mappings)",
    )
    c.add_argument(
        "--records",
        choices=["everything", "typed"],
        default=None,
        help="as screen --records: the screen's way of reading each record (default: the server's best)",
    )
    c.add_argument("--json", action="store_true", help="machine-readable report")
    c.add_argument(
        "--patients",
        type=int,
        default=1000,
        metavar="N",
        help="estimate the requests of a run that reads N records (the candidates a search finds, or "
        "the Group's members; not the whole population)",
    )
    c.add_argument(
        "--no-write-back", action="store_true", help="the run will not write: skip the write checks"
    )
    c.add_argument(
        "--group",
        metavar="ID",
        help="the Group screen --group or the sync's [server] group names (Group members, Group-level $export)",
    )
    _server_options(c)
    _write_server_options(c)
    _common(c)

    m = sub.add_parser(
        "merge-results", help="merge a result in parts (screen --engine spark) into standard result files"
    )
    m.add_argument(
        "folder", type=Path, metavar="DIR", help="the --out-dir of the Spark run (with manifest.json)"
    )
    m.add_argument("--out", type=Path, default=None, help="the result file (a run of one trial)")
    m.add_argument(
        "--out-dir", type=Path, default=None, metavar="OUT", help="OUT/<study>.json per trial (default: DIR)"
    )
    _common(m)

    r = sub.add_parser("report", help="render a result JSON as an HTML page (and a CSV worklist)")
    r.add_argument("result", type=Path)
    r.add_argument("--html", type=Path, required=True)
    r.add_argument("--csv", type=Path, default=None)
    _common(r)
    return parser


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise (cron mails stay short)."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < 50:
            return
        if done == total or done % max(1, total // 100) == 0:
            width = 30
            filled = width * done // total
            sys.stderr.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} patients")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def server_settings(args: argparse.Namespace, prefix: str = "", *, writes: bool = True) -> ServerSettings:
    """The settings of ``--server`` and its options, or (``prefix="write-"``) of ``--write-server``."""
    names = cli_names(prefix)

    def arg(name: str) -> Any:
        return getattr(args, (prefix + name).replace("-", "_"))

    if not arg("server"):
        raise UsageError(f"{names['url']} URL is required")
    if arg("max_pages") < 1:
        raise UsageError(f"--{prefix}max-pages must be at least 1")
    if arg("throttle_budget") < 0:
        raise UsageError(f"--{prefix}throttle-budget must be >= 0")
    # Records are fetched in parallel from the read server only; write-back goes one patient at a time.
    concurrency = arg("concurrency") if not prefix else 1
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
    return ServerSettings(
        url=arg("server"),
        auth=AuthSettings(
            method=arg("auth"),
            token=arg("token"),
            basic_user=arg("basic_user"),
            basic_password=arg("basic_password"),
            smart_client_id=arg("smart_client_id"),
            smart_key=arg("smart_key"),
            smart_alg=arg("smart_alg"),
            smart_kid=arg("smart_kid"),
            smart_token_url=arg("smart_token_url"),
            smart_scope=arg("smart_scope"),
        ),
        ca_bundle=Path(arg("ca_bundle")) if arg("ca_bundle") else None,
        timeout=float(arg("timeout")),
        allow_plain_http=arg("allow_plain_http"),
        request_deadline=float(arg("request_deadline")),
        max_response_bytes=int(arg("max_response_mb") * MIB),
        max_pages=arg("max_pages"),
        throttle_budget=float(arg("throttle_budget")),
        concurrency=concurrency,
        max_rps=arg("max_rps"),
        names=names,
        writes=writes,
    )


def write_target_settings(args: argparse.Namespace) -> WriteTarget | None:
    """``--write-server`` and its options; None without it (write-back goes to the server read from)."""
    system = args.write_patient_identifier_system
    mode: PatientReference = args.write_patient_ref or ("identifier" if system else "absolute")
    if not args.write_server:
        if args.write_patient_ref or system:
            raise UsageError("--write-patient-ref and --write-patient-identifier-system need --write-server")
        return None
    if mode == "identifier" and not system:
        raise UsageError("--write-patient-ref identifier needs --write-patient-identifier-system URI")
    if mode == "absolute" and system:
        raise UsageError("--write-patient-identifier-system goes with --write-patient-ref identifier")
    if system and not IDENTIFIER_SYSTEM.fullmatch(system):
        raise UsageError(f"--write-patient-identifier-system: {system!r} is not an absolute URI")
    return WriteTarget(server_settings(args, "write-"), mode, system)


def bulk_settings(
    args: argparse.Namespace, *, group: str | None, since: dt.datetime | None = None
) -> BulkSettings:
    if args.downloads < 1:
        raise UsageError("--downloads must be at least 1")
    if args.poll_max_wait <= 0 or args.export_timeout <= 0:
        raise UsageError("--poll-max-wait and --export-timeout must be positive")
    types = tuple(t.strip() for arg in getattr(args, "type", []) for t in arg.split(",") if t.strip())
    for rtype in types:
        if not re.fullmatch(r"[A-Z][A-Za-z]{1,63}", rtype):
            raise UsageError(f"--type: {rtype!r} is not a FHIR resource type")
    if group is not None and (not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", group) or group in (".", "..")):
        raise UsageError(f"--group: {group!r} is not a FHIR id (A-Z a-z 0-9 - . up to 64 characters)")
    return BulkSettings(
        level="group" if group else args.export_level,
        group=group,
        since=since,
        types=types,
        storage_origins=tuple(args.bulk_storage_origin),
        poll_max_wait=float(args.poll_max_wait),
        export_timeout=float(args.export_timeout),
        downloads=int(args.downloads),
        two_pass=not getattr(args, "single_pass", False),
    )


def export_settings(args: argparse.Namespace) -> ExportSettings:
    return ExportSettings(
        server=server_settings(args),
        bulk=bulk_settings(args, group=args.group, since=args.since),
        rules=RuleSettings(trials=tuple(args.trial), overlays=tuple(args.mappings)),
        out=args.out,
        state_dir=args.state_dir,
    )


def screen_settings(args: argparse.Namespace) -> ScreenSettings:
    if args.bulk and not args.server:
        raise UsageError("--bulk needs --server URL")
    spark = None
    if args.engine == "spark":
        spark = SparkSettings(
            inputs=tuple(args.paths), out_dir=args.out_dir, master=args.master, merge=args.merge
        )
        if args.workers is not None:
            raise UsageError(
                "--workers is for the local engine; Spark's are --master local[N] or the cluster's"
            )
    elif args.master is not None or args.merge:
        raise UsageError("--master and --merge are options of --engine spark")
    local = spark is None
    target = write_target_settings(args)
    if target is not None and not args.server:
        raise UsageError("--write-server needs --server URL (write-back records what a server screen found)")
    return ScreenSettings(
        rules=RuleSettings(
            trials=tuple(args.trial), overlays=tuple(args.mappings), mappings_dir=args.mappings_dir
        ),
        as_of=args.as_of or dt.date.today(),
        output=OutputSettings(
            out=args.out, out_dir=Path(args.out_dir) if local and args.out_dir else None, report=args.report
        ),
        paths=tuple(Path(p) for p in args.paths) if local else (),
        spark=spark,
        server=server_settings(args, writes=target is None) if args.server else None,
        patients=tuple(args.patient),
        group=args.group,
        write_back=args.write_back,
        write_target=target,
        workers=args.workers,
        strategies=Overrides(records=args.records),
        bulk=bulk_settings(args, group=args.group) if args.bulk else None,
        bulk_dir=args.bulk_dir,
        keep_bulk_files=args.keep_bulk_files,
        max_consecutive_failures=_non_negative(args.max_consecutive_failures, "--max-consecutive-failures"),
    )


def _non_negative(value: int, option: str) -> int:
    if value < 0:
        raise UsageError(f"{option} must be >= 0")
    return value


def _screen(args: argparse.Namespace) -> int:
    from fhir_adapter.screen import run_screen

    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    return run_screen(screen_settings(args), progress=_Progress())


def _load(args: argparse.Namespace) -> int:
    from fhir_adapter.client.factory import open_client
    from fhir_adapter.load import load_paths

    if args.chunk_size < 1:
        raise UsageError("--chunk-size must be at least 1")
    with open_client(server_settings(args)) as client:
        report = load_paths(client, args.paths, args.chunk_size)
    print(report.render(), file=sys.stderr)
    return ExitCode.PARTIAL if report.problems else ExitCode.OK


def _export(args: argparse.Namespace) -> int:
    from fhir_adapter.export import run_export_command

    return run_export_command(export_settings(args))


def _merge_results(args: argparse.Namespace) -> int:
    from fhir_adapter.output.parts import merge_results

    if args.out is not None and args.out_dir is not None:
        raise UsageError("give --out FILE or --out-dir DIR, not both")
    for path in merge_results(args.folder, args.out, args.out_dir):
        print(f"result written to {path}", file=sys.stderr)
    return ExitCode.OK


def _render_report(result: Path, html: Path, csv: Path | None) -> None:
    from fhir_adapter.screen import render_report

    render_report(result, html, csv)


def _check(args: argparse.Namespace) -> int:
    from fhir_adapter.check import render, run_check
    from fhir_adapter.config.loader import load_trials
    from fhir_adapter.screening import Screener
    from fhir_adapter.source.strategies import Overrides
    from fhir_adapter.sync.config import load_site_config

    _non_negative(args.patients, "--patients")
    if args.config is not None:
        # site.toml holds the servers, their auth and limits, the studies, overlays and Group: an option
        # given beside it would be ignored, so it is refused instead.
        own = {"command", "config", "json", "patients", "no_write_back", "records", "verbose"}
        defaults = vars(build_parser().parse_args(["check"]))
        given = sorted(
            "--" + key.replace("_", "-")
            for key, value in vars(args).items()
            if key not in own and value != defaults.get(key)
        )
        if given:
            raise UsageError(
                f"--config names the servers, studies, overlays and Group: drop {', '.join(given)}"
            )
        config = load_site_config(args.config)
        server, rules, group, overrides = config.server, config.rules, config.group, config.strategies
        write_back = config.write_back and not args.no_write_back
        target = config.write_target if write_back else None
        as_of = config.as_of or dt.date.today()
    else:
        target = None if args.no_write_back else write_target_settings(args)
        server = server_settings(args, writes=target is None)
        rules = RuleSettings(trials=tuple(args.trial), overlays=tuple(args.mappings))
        group, overrides, write_back, as_of = args.group, Overrides(), not args.no_write_back, dt.date.today()
    screener = Screener(load_trials(rules.trials, rules.overlays), as_of)
    report = run_check(
        server,
        screener,
        args.patients,
        write_back=write_back,
        write_target=target,
        group=group,
        screen_records=args.records,
        sync_overrides=overrides,
    )
    print(render(report, args.json))
    return report.exit_code


def _sync(args: argparse.Namespace) -> int:
    from fhir_adapter.sync import manifest, run
    from fhir_adapter.sync.config import load_site_config

    config = load_site_config(args.config)
    if args.status:
        print(manifest.status(config))
        return ExitCode.OK
    return run.sync(config, dry_run=args.dry_run, full=args.full, as_of=args.as_of, report=args.report)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.setup(args.verbose)
    try:
        if args.command == "screen":
            return _screen(args)
        if args.command == "load":
            return _load(args)
        if args.command == "export":
            return _export(args)
        if args.command == "merge-results":
            return _merge_results(args)
        if args.command == "report":
            _render_report(args.result, args.html, args.csv)
            return ExitCode.OK
        if args.command == "sync":
            return _sync(args)
        if args.command == "check":
            return _check(args)
        raise UsageError(f"unknown command {args.command}")
    except AdapterError as exc:
        _report_error(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _report_error("interrupted")
        return 130
    except BrokenPipeError:  # the reader of our output went away (`| head`): nothing left to say
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return 141
    except Exception as exc:  # a bug: say so briefly; where it happened only at -vv, never the data
        log.debug("internal error: %s", logs.where(exc))
        _report_error(f"internal error: {type(exc).__name__}; run with -vv for details")
        return ExitCode.INTERNAL


def _report_error(message: str) -> None:
    """On a terminal, a plain line; under cron/systemd/Kubernetes, a JSON log line like every other."""
    if sys.stderr.isatty():
        print(printable(f"fhir-adapter: {message}"), file=sys.stderr)
    else:
        log.error("%s", message)


__all__ = ["main"]
