"""``fhir-adapter screen --engine spark``: plan the inputs, run the job, write the manifest, summarise.

The result contract is the local one: the same subjects, ``errors`` and ``summary`` (in part files plus
a manifest, :mod:`fhir_adapter.output.parts`), the same terminal summary and exit codes (0 every input
read; 3 some inputs could not be read, listed under ``errors``; 2 usage or configuration; 4 Spark could
not start or its job failed). ``--merge`` writes the standard result file and report as well.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
from pathlib import Path
from typing import TextIO

import orjson

from fhir_adapter.errors import AdapterError, ExitCode, UsageError
from fhir_adapter.output import summary
from fhir_adapter.output.parts import MANIFEST, StudyParts, manifest_json, merge_results
from fhir_adapter.output.private import private_dir
from fhir_adapter.screening import Screener
from fhir_adapter.settings import ScreenSettings, SparkSettings
from fhir_adapter.spark.hadoop import HadoopFs
from fhir_adapter.spark.inputs import plan_inputs
from fhir_adapter.spark.job import JobResult, run_job
from fhir_adapter.spark.session import spark_session

log = logging.getLogger(__name__)


class SparkJobError(AdapterError):
    """The Spark job failed (an executor lost, the cluster gone): nothing was written; exit 4."""


def run_spark_screen(settings: ScreenSettings, spark_settings: SparkSettings, out: TextIO) -> int:
    from fhir_adapter.screen import load_screener, render_report

    _check(settings, spark_settings)
    assert spark_settings.out_dir is not None
    screener = load_screener(settings)  # a bad mapping fails here, before Spark starts
    with spark_session(spark_settings.master) as spark:
        fs = HadoopFs(spark)
        out_dir = fs.qualify(spark_settings.out_dir)
        local_dir = fs.local_path(out_dir)
        if spark_settings.merge and local_dir is None:
            raise UsageError("--merge needs a local --out-dir; copy the folder and run merge-results")
        if local_dir is not None:
            private_dir(local_dir)  # 0700, missing parents too, whatever the umask
        generated = dt.datetime.now(dt.UTC)
        run = generated.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
        parts = f"parts-{run}"
        uris = [f"{out_dir}/{parts}/{study}" for study in screener.studies]
        try:
            plan = plan_inputs(fs, spark_settings.inputs)
            result = run_job(spark, plan, screener, uris)
        except BaseException as exc:
            _forget(fs, f"{out_dir}/{parts}")
            if _from_spark(exc):
                log.debug("Spark job failed: %s", str(exc)[:2000])
                raise SparkJobError(
                    f"Spark failed ({type(exc).__name__}); no result was written (details with -vv)"
                ) from exc
            raise
        code = ExitCode.PARTIAL if result.problems else ExitCode.OK
        previous = _previous_parts(fs, out_dir)
        fs.write(f"{out_dir}/{MANIFEST}", _manifest(settings, screener, result, parts, generated, code))
        if previous and previous != parts:
            _forget(fs, f"{out_dir}/{previous}")
        if local_dir is not None:
            _private(local_dir / parts)
        master = spark.sparkContext.master
    _print_summary(screener, result, out)
    print(f"Spark ({master}): manifest and part files in {out_dir}", file=out)
    if spark_settings.merge and local_dir is not None:
        for path in merge_results(local_dir):
            render_report(path, path.with_suffix(".html"), None, out)
    return code


def _check(settings: ScreenSettings, spark: SparkSettings) -> None:
    if settings.server is not None:
        raise UsageError("--engine spark reads files; --server is for the local engine")
    if settings.write_back or settings.patients or settings.group:
        raise UsageError("--write-back, --patient and --group need --server")
    if settings.output.out is not None or settings.output.report is not None:
        raise UsageError(
            "--engine spark writes part files and a manifest: give --out-dir DIR (not --out/--report)"
        )
    if spark.out_dir is None:
        raise UsageError("--engine spark writes part files and a manifest: give --out-dir DIR")
    if not spark.inputs:
        raise UsageError("give at least one PATH or URI")
    if spark.master is not None and not spark.master.strip():
        raise UsageError("--master is empty")


def _manifest(
    settings: ScreenSettings,
    screener: Screener,
    result: JobResult,
    parts: str,
    generated: dt.datetime,
    code: int,
) -> bytes:
    assert settings.spark is not None
    studies = [
        StudyParts(
            study=m.trial.study,
            title=m.trial.title,
            rules_version=m.fingerprint,
            folder=f"{parts}/{m.trial.study}",
            files=tuple(files),
            summary=tally.to_json(),
        )
        for m, tally, files in zip(screener.trials, result.tallies, result.parts, strict=True)
    ]
    return manifest_json(
        as_of=screener.as_of,
        generated=generated,
        source="files: " + ", ".join(settings.spark.inputs),
        engine="spark",
        errors=result.problems,
        studies=studies,
        exit_code=code,
        resources_read=result.resources_read,
    )


def _previous_parts(fs: HadoopFs, out_dir: str) -> str | None:
    """The parts folder the current manifest names (removed once the new manifest is in place)."""
    try:
        if not fs.exists(f"{out_dir}/{MANIFEST}"):
            return None
        studies = orjson.loads(fs.read(f"{out_dir}/{MANIFEST}")).get("studies") or []
        folder = str(studies[0]["parts"]).split("/", 1)[0] if studies else ""
    except Exception:  # an unreadable old manifest: leave its parts alone
        return None
    return folder if folder.startswith("parts-") else None


def _forget(fs: HadoopFs, uri: str) -> None:
    try:
        fs.delete(uri)
    except Exception as exc:  # best effort: the manifest, not the folder, is what readers trust
        log.warning("could not remove %s: %s", uri, type(exc).__name__)


def _private(folder: Path) -> None:
    """Owner-only modes on a local parts folder (Hadoop's umask covers most; this covers the rest), and
    without the ``.crc`` checksum files Hadoop's local file system writes beside each part."""
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o700)
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            path = os.path.join(root, name)
            if name.startswith(".") and name.endswith(".crc"):
                os.unlink(path)
            else:
                os.chmod(path, 0o600)


def _from_spark(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(("py4j", "pyspark"))


def _print_summary(screener: Screener, result: JobResult, out: TextIO) -> None:
    for m, tally in zip(screener.trials, result.tallies, strict=True):
        order = [c.id for c in m.trial.criteria]
        heading = f"{m.trial.study}: " if len(screener.trials) > 1 else ""
        print(heading + summary.render(tally, result.problems, order), file=out)
    print(f"Read {result.resources_read} resource(s).", file=out)
    if result.skipped_types:  # as FileSource.summary words it
        shown = ", ".join(f"{t} {n}" for t, n in sorted(result.skipped_types.items()))
        print(f"Skipped {sum(result.skipped_types.values())} of types no criterion reads: {shown}", file=out)
