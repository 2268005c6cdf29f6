"""A result written in parts (the Spark engine): a manifest, and per trial a folder of NDJSON part files.

``DIR/manifest.json`` holds everything of the standard result file (spec section 1) except the subjects:
per trial ``study``, ``title``, ``rulesVersion``, ``summary`` and where its parts are; once for the run
``asOf``, ``generator``, ``generated``, ``source``, ``errors`` (the same list every trial's result
carries) and ``exitCode``. The parts (``DIR/parts-<run>/<study>/part-NNNNN``) hold one subject per line,
sorted by patient id across the files in the order the manifest lists them. The manifest is written
last: a run that fails leaves the previous manifest and its parts in place.

:func:`merge_results` streams them into the standard result file (validated by
``profiles/screening-result.schema.json``), for a result that fits on one machine. Needs no Spark.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fhir_adapter import __version__
from fhir_adapter.errors import UsageError
from fhir_adapter.model import InputProblem
from fhir_adapter.output.result_file import ResultWriter, Tally

MANIFEST = "manifest.json"
FORMAT = "fhir-adapter result parts 1"


@dataclass(frozen=True, slots=True)
class StudyParts:
    study: str
    title: str | None
    rules_version: str
    folder: str  # relative to the manifest's folder
    files: tuple[str, ...]
    summary: dict[str, Any]


def manifest_json(
    *,
    as_of: dt.date,
    generated: dt.datetime,
    source: str,
    engine: str,
    errors: Sequence[InputProblem],
    studies: Sequence[StudyParts],
    exit_code: int,
    resources_read: int,
) -> bytes:
    body = {
        "format": FORMAT,
        "engine": engine,
        "asOf": as_of.isoformat(),
        "generator": f"fhir-adapter {__version__}",
        "generated": generated.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "source": source,
        "exitCode": exit_code,
        "resourcesRead": resources_read,
        "studies": [
            {
                "study": s.study,
                **({"title": s.title} if s.title else {}),
                "rulesVersion": s.rules_version,
                "parts": s.folder,
                "files": list(s.files),
                "summary": s.summary,
            }
            for s in studies
        ],
        "errors": [e.to_json() for e in errors],
    }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the manifest of a result in parts ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"{path}: not a manifest of fhir-adapter result parts (format {FORMAT!r})")
    return data


def merge_results(folder: Path, out: Path | None = None, out_dir: Path | None = None) -> list[Path]:
    """Write each trial's standard result file: ``out`` (one trial only), else ``out_dir`` (default:
    ``folder``) ``/<study>.json``. Returns the files written."""
    manifest = read_manifest(folder)
    studies = manifest["studies"]
    if out is not None and len(studies) != 1:
        raise UsageError(f"{folder / MANIFEST} holds {len(studies)} trials: give --out-dir, not --out")
    errors = [_problem(e) for e in manifest["errors"]]
    written = []
    for study in studies:
        path = out if out is not None else (out_dir or folder) / f"{study['study']}.json"
        writer = ResultWriter(
            path,
            study["study"],
            dt.date.fromisoformat(manifest["asOf"]),
            study["rulesVersion"],
            source=manifest.get("source"),
            title=study.get("title"),
            generated=dt.datetime.fromisoformat(manifest["generated"].replace("Z", "+00:00")),
        )
        try:
            for body in _subjects(folder / study["parts"], study["files"]):
                writer.subject_json(body)
            _check(writer.tally, study, folder)
            writer.close(errors)
        except BaseException:
            writer.abort()
            raise
        written.append(path)
    return written


def _subjects(folder: Path, files: Sequence[str]) -> Iterator[dict[str, Any]]:
    for name in files:
        path = folder / name
        try:
            with path.open("rb") as fh:
                for line in fh:
                    if line.strip():
                        yield orjson.loads(line)
        except (OSError, orjson.JSONDecodeError) as exc:
            raise UsageError(f"{path}: cannot read a part file of the result ({exc})") from exc


def _check(tally: Tally, study: dict[str, Any], folder: Path) -> None:
    expected = study.get("summary")
    if expected is not None and tally.to_json() != expected:
        raise UsageError(
            f"{folder / study['parts']}: the part files do not add up to the manifest's summary "
            f"({tally.patients} subjects, the manifest says {expected.get('patients')}): incomplete copy?"
        )


def _problem(e: dict[str, Any]) -> InputProblem:
    return InputProblem(str(e["file"]), str(e["reason"]), line=e.get("line"), resource=e.get("resource"))
