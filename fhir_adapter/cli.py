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
import sys
from collections.abc import Sequence
from pathlib import Path

from fhir_adapter import __version__, logs
from fhir_adapter.errors import AdapterError, ExitCode, UsageError
from fhir_adapter.settings import (
    AuthSettings,
    OutputSettings,
    RuleSettings,
    ScreenSettings,
    ServerSettings,
)
from fhir_adapter.source.strategies import Overrides

log = logging.getLogger("fhir_adapter")


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from exc


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="-v progress, -vv debug (no patient data)"
    )


def _server_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("FHIR server (secrets come from the environment or files, never from arguments)")
    g.add_argument("--server", metavar="URL", help="FHIR base URL to read from (instead of files)")
    g.add_argument("--auth", choices=["none", "bearer", "basic", "smart"], default="none")
    g.add_argument(
        "--token",
        metavar="REF",
        default="env:FHIR_TOKEN",
        help="bearer token reference: env:NAME or file:/path (default env:FHIR_TOKEN)",
    )
    g.add_argument("--basic-user", metavar="NAME")
    g.add_argument(
        "--basic-password", metavar="REF", default="env:FHIR_PASSWORD", help="env:NAME or file:/path"
    )
    g.add_argument("--smart-client-id", metavar="ID")
    g.add_argument("--smart-key", metavar="REF", help="private key PEM: file:/path or env:NAME")
    g.add_argument("--smart-alg", choices=["RS384", "ES384"], default="RS384")
    g.add_argument("--smart-kid", metavar="KID")
    g.add_argument("--smart-token-url", metavar="URL", help="default: from .well-known/smart-configuration")
    g.add_argument(
        "--smart-scope", metavar="SCOPES", help="default: read all, write the resources write-back needs"
    )
    g.add_argument("--ca-bundle", metavar="PATH", help="custom CA bundle for TLS verification")
    g.add_argument("--timeout", type=float, default=60.0, help="read timeout in seconds (default 60)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fhir-adapter",
        description="Prescreen FHIR patients for clinical trials whose criteria are data (mappings/).",
        epilog="exit codes: 0 ok; 3 finished, but some inputs or writes failed (see errors); 2 usage or "
        "configuration error; 4 fatal (server unreachable, authentication failed); 5 sync lock held; "
        "70 internal error",
    )
    parser.add_argument("--version", action="version", version=f"fhir-adapter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("screen", help="screen FHIR files or a FHIR server; write the result JSON")
    s.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="files or folders (JSON, Bundles, NDJSON, .gz)"
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
        type=Path,
        default=None,
        metavar="DIR",
        help="one DIR/<study>.json and DIR/<study>.html per trial (needed for several trials)",
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
    _server_options(s)
    _common(s)

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

    c = sub.add_parser("check", help="preflight a FHIR server: what it offers, what screen and sync would do")
    c.add_argument("--trial", action="append", default=[], metavar="ID|FILE.toml")
    c.add_argument("--json", action="store_true", help="machine-readable report")
    c.add_argument(
        "--patients", type=int, default=1000, metavar="N", help="estimate the requests of N patients"
    )
    c.add_argument(
        "--no-write-back", action="store_true", help="the run will not write: skip the write checks"
    )
    _server_options(c)
    _common(c)

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


def server_settings(args: argparse.Namespace) -> ServerSettings:
    if not args.server:
        raise UsageError("--server URL is required")
    return ServerSettings(
        url=args.server,
        auth=AuthSettings(
            method=args.auth,
            token=args.token,
            basic_user=args.basic_user,
            basic_password=args.basic_password,
            smart_client_id=args.smart_client_id,
            smart_key=args.smart_key,
            smart_alg=args.smart_alg,
            smart_kid=args.smart_kid,
            smart_token_url=args.smart_token_url,
            smart_scope=args.smart_scope,
        ),
        ca_bundle=Path(args.ca_bundle) if args.ca_bundle else None,
        timeout=float(args.timeout),
    )


def screen_settings(args: argparse.Namespace) -> ScreenSettings:
    return ScreenSettings(
        rules=RuleSettings(
            trials=tuple(args.trial), overlays=tuple(args.mappings), mappings_dir=args.mappings_dir
        ),
        as_of=args.as_of or dt.date.today(),
        output=OutputSettings(out=args.out, out_dir=args.out_dir, report=args.report),
        paths=tuple(args.paths),
        server=server_settings(args) if args.server else None,
        patients=tuple(args.patient),
        group=args.group,
        write_back=args.write_back,
        workers=args.workers,
        strategies=Overrides(records=args.records),
    )


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


def _render_report(result: Path, html: Path, csv: Path | None) -> None:
    from fhir_adapter.screen import render_report

    render_report(result, html, csv)


def _check(args: argparse.Namespace) -> int:
    from fhir_adapter.check import render, run_check
    from fhir_adapter.config.loader import load_trials
    from fhir_adapter.screening import Screener

    screener = Screener(load_trials(args.trial), dt.date.today())
    report = run_check(server_settings(args), screener, args.patients, write_back=not args.no_write_back)
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
        print(f"fhir-adapter: {message}", file=sys.stderr)
    else:
        log.error("%s", message)


__all__ = ["main"]
