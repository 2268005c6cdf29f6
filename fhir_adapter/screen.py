"""``fhir-adapter screen``: choose the source and sinks from the settings, run the pipeline, report.

Files or a server, one trial or several: the input is read once, every trial is judged on each record,
and each trial gets its own result file (``--out`` for one, ``--out-dir DIR`` → ``DIR/<study>.json`` and
``DIR/<study>.html`` for any number) and, with ``--write-back``, its own ResearchSubjects.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from fhir_adapter.config.loader import load_trials
from fhir_adapter.config.types import Mappings
from fhir_adapter.errors import ExitCode, UsageError
from fhir_adapter.model import InputProblem
from fhir_adapter.output import summary
from fhir_adapter.output.result_sink import ResultSink, result_paths
from fhir_adapter.pipeline import Progress, Sink, run
from fhir_adapter.screening import Screener
from fhir_adapter.settings import ScreenSettings, ServerSettings
from fhir_adapter.source.base import Source
from fhir_adapter.source.files import FileSource
from fhir_adapter.source.parallel_read import available_cores
from fhir_adapter.workers import WorkerPool

if TYPE_CHECKING:
    from fhir_adapter.client.http import FhirClient
    from fhir_adapter.source.records import Strategy


def load_screener(settings: ScreenSettings) -> Screener:
    rules = settings.rules
    return Screener(load_trials(rules.trials, rules.overlays, rules.mappings_dir), settings.as_of)


def run_screen(
    settings: ScreenSettings,
    *,
    out: TextIO | None = None,
    progress: Progress | None = None,
    strategy: Strategy | None = None,
) -> int:
    """Screen, write the results (and reports), print the summary to ``out`` (default stderr)."""
    out = out if out is not None else sys.stderr
    if settings.spark is not None:
        from fhir_adapter.spark.run import run_spark_screen

        return run_spark_screen(settings, settings.spark, out)
    screener = load_screener(settings)
    paths = _check_outputs(settings, screener.trials)
    if settings.server is not None and settings.bulk is not None:
        problems, lines = _screen_bulk(settings, screener, paths, progress, out)
    elif settings.server is not None:
        # The server path's modules (requests, JWT, the FHIR models) load only when a server is used.
        from fhir_adapter.client.factory import open_client
        from fhir_adapter.source.server import ServerSource
        from fhir_adapter.writeback.references import referencing
        from fhir_adapter.writeback.resources import release_of
        from fhir_adapter.writeback.sink import WriteBackSink
        from fhir_adapter.writeback.subjects import WriteBack

        if settings.paths:
            raise UsageError("give PATHs or --server, not both")
        if settings.patients and settings.group:
            raise UsageError("give --patient or --group, not both")
        target = settings.write_target
        with (
            open_client(settings.server) as client,
            # A separate write target gets a client of its own: its own session, auth and token.
            open_client(target.server) if target else contextlib.nullcontext(client) as writer,
        ):
            release = release_of(client.fhir_version())
            write_release = release_of(writer.fhir_version()) if writer is not client else release
            refs = referencing(client.base_url, writer.base_url, target)
            source = ServerSource(
                client,
                screener,
                patients=settings.patients or None,
                group=settings.group,
                strategy=strategy,
                overrides=settings.strategies,
                concurrency=settings.server.concurrency,
            )
            writebacks = [
                WriteBack(
                    writer, m.trial, m.fingerprint, write_release, dry_run=not settings.write_back, refs=refs
                )
                for m in screener.trials
            ]
            writeback = WriteBackSink(writebacks, out)
            writeback.prepare()
            source.prepare()
            problems = _run(
                source, screener, paths, [writeback], progress, out, settings.max_consecutive_failures
            )
            lines = [f"FHIR {release} server {client.base_url}", *source.summary()]
            if writer is not client:
                lines.append(
                    f"Write target: FHIR {write_release} server {writer.base_url} ({refs.describe()})"
                )
            lines += writeback.summary()
            lines.append(
                _requests_line(settings.server, *((client,) if writer is client else (client, writer)))
            )
    else:
        if not settings.paths:
            raise UsageError("give at least one PATH, or --server URL")
        if settings.write_back or settings.patients or settings.group:
            raise UsageError("--write-back, --patient and --group need --server")
        with FileSource(settings.paths, screener, readers=settings.workers) as files:
            workers = _workers(settings.workers, files)
            failures = settings.max_consecutive_failures
            if workers > 1:
                files.defer_rows = True
                with WorkerPool(workers, settings.rules, settings.as_of, files.index_path) as pool:
                    problems = _run(files, screener, paths, [], progress, out, failures, pool)
            else:
                problems = _run(files, screener, paths, [], progress, out, failures)
            lines = files.summary()
    print("\n".join(lines), file=out)
    _reports(settings, screener.trials, paths)
    return ExitCode.PARTIAL if problems else ExitCode.OK


def _requests_line(server: ServerSettings, *clients: FhirClient) -> str:
    """Every request this run sent (the metadata, the candidate search, the records, the write-back, to
    a separate write target too), so "requests per patient" is never mistaken for the whole cost."""
    sent = sum(c.request_count for c in clients)
    resent = sum(c.retry_count for c in clients)
    paused = sum(c.throttled_seconds for c in clients)
    line = f"Requests sent: {sent} in all ({resent} resent)"
    line += f"; {server.concurrency} at a time" if server.concurrency > 1 else "; one at a time"
    if server.max_rps:
        line += f", at most {server.max_rps:g}/s"
    if paused:
        line += f"; paused {paused:.1f} s on 429/503"
    return line


def _screen_bulk(
    settings: ScreenSettings,
    screener: Screener,
    paths: list[Path | None],
    progress: Progress | None,
    out: TextIO,
) -> tuple[list[InputProblem], list[str]]:
    """Export from the server, then screen the files through the file path (same verdicts as files)."""
    from fhir_adapter.client.factory import open_client
    from fhir_adapter.source.bulk import BulkSource

    assert settings.server is not None and settings.bulk is not None
    if settings.paths:
        raise UsageError("give PATHs or --server, not both")
    if settings.patients:
        raise UsageError("--bulk exports a Group or the whole server: --patient does not go with it")
    if settings.write_back or settings.write_target:
        option = "--write-back" if settings.write_back else "--write-server"
        raise UsageError(
            f"{option} does not go with --bulk yet: screen the server without --bulk to write back"
        )
    work = settings.bulk_dir or _default_bulk_dir(settings)
    with (
        open_client(settings.server) as client,
        BulkSource(
            client,
            screener,
            settings.bulk,
            work,
            keep_files=settings.keep_bulk_files,
            readers=settings.workers,
        ) as source,
    ):
        source.prepare()
        workers = _workers(settings.workers, source.files)
        failures = settings.max_consecutive_failures
        if workers > 1:
            source.files.defer_rows = True
            with WorkerPool(workers, settings.rules, settings.as_of, source.files.index_path) as pool:
                problems = _run(source, screener, paths, [], progress, out, failures, pool)
        else:
            problems = _run(source, screener, paths, [], progress, out, failures)
        lines = [f"Bulk Data from {client.base_url}", *source.summary()]
    return problems, lines


def _default_bulk_dir(settings: ScreenSettings) -> Path:
    """Beside the result: the folder of ``--out``, or ``--out-dir`` itself, else the working folder."""
    output = settings.output
    if output.out_dir is not None:
        return output.out_dir / ".fhir-adapter-bulk"
    if output.out is not None:
        return output.out.parent / ".fhir-adapter-bulk"
    return Path(".fhir-adapter-bulk")


# Below this many candidates, starting processes costs more than it saves.
AUTO_WORKERS_FROM = 200


def _workers(wanted: int | None, files: FileSource) -> int:
    if wanted is not None:
        return wanted
    return available_cores() if files.candidates() >= AUTO_WORKERS_FROM else 1


def _check_outputs(settings: ScreenSettings, trials: Sequence[Mappings]) -> list[Path | None]:
    output = settings.output
    if output.out is not None and output.out_dir is not None:
        raise UsageError("give --out FILE or --out-dir DIR, not both")
    if len(trials) > 1 and output.out_dir is None:
        raise UsageError("several trials write several results: give --out-dir DIR (one <study>.json each)")
    if output.report is not None and output.out_dir is not None:
        raise UsageError("--out-dir writes <study>.html beside each result; --report is for --out")
    if output.report is not None and output.out is None:
        raise UsageError("--report needs --out (the report is rendered from the result file)")
    return result_paths(trials, output.out, output.out_dir)


def _run(
    source: Source,
    screener: Screener,
    paths: list[Path | None],
    sinks: list[Sink],
    progress: Progress | None,
    out: TextIO,
    max_consecutive_failures: int,
    pool: WorkerPool | None = None,
) -> list[InputProblem]:
    results = ResultSink(screener.trials, paths, screener.as_of, source.description)
    try:
        problems = run(
            source,
            screener,
            [results, *sinks],
            progress=progress,
            pool=pool,
            max_consecutive_failures=max_consecutive_failures,
        )
        results.close(problems)
    except BaseException:
        results.abort()  # never leave half a result where a scheduled job would read it
        raise
    for m, writer in zip(screener.trials, results.writers, strict=True):
        order = [c.id for c in m.trial.criteria]
        heading = f"{m.trial.study}: " if len(screener.trials) > 1 else ""
        print(heading + summary.render(writer.tally, problems, order), file=out)
    return problems


def _reports(settings: ScreenSettings, trials: Sequence[Mappings], paths: list[Path | None]) -> None:
    output = settings.output
    if output.out_dir is not None:
        for m, path in zip(trials, paths, strict=True):
            assert path is not None
            render_report(path, output.out_dir / f"{m.trial.study}.html", None)
    elif output.report is not None and output.out is not None:
        render_report(output.out, output.report, None)


def render_report(result: Path, html: Path, csv: Path | None, out: TextIO | None = None) -> None:
    from fhir_adapter.report import write_report

    try:
        data = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{result}: cannot read the result JSON ({exc})") from exc
    write_report(data, html, csv)
    print(f"report written to {html}" + (f" and {csv}" if csv else ""), file=out or sys.stderr)
