"""Write the result file of spec section 1 incrementally, so a large run never holds all subjects."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from fhir_adapter import __version__
from fhir_adapter.model import InputProblem, SubjectResult
from fhir_adapter.output.private import temporary_file


@dataclass
class Tally:
    """Counts for the terminal summary and the result's ``summary`` block."""

    statuses: Counter[str] = field(default_factory=Counter)
    criteria: dict[str, Counter[str]] = field(default_factory=dict)
    patients: int = 0

    def add(self, subject: dict[str, Any]) -> None:
        """Count one subject's result JSON (spec section 1)."""
        self.patients += 1
        self.statuses[str(subject.get("status"))] += 1
        for c in subject.get("criteria") or []:
            self.criteria.setdefault(str(c.get("id")), Counter())[str(c.get("verdict"))] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "patients": self.patients,
            "statuses": dict(sorted(self.statuses.items())),
            "criteria": {k: dict(sorted(v.items())) for k, v in self.criteria.items()},
        }


class ResultWriter:
    """Streams ``{"study", "asOf", ..., "subjects": [...], "errors": [...], "summary": {...}}``.

    With a path, writes to a temporary file in the same folder and renames it at the end, so a crashed run
    never leaves a half-written result where a scheduled job would read it.
    """

    def __init__(
        self,
        path: Path | None,
        study: str,
        as_of: dt.date,
        rules_version: str,
        *,
        source: str | None = None,
        title: str | None = None,
        generated: dt.datetime | None = None,
    ) -> None:
        """``source`` says where the data came from ("files: ...", "server: URL") for the report."""
        self.path = path
        self.tally = Tally()
        self._first = True
        if path is None:
            self._fh: IO[bytes] = sys.stdout.buffer
            self._tmp: str | None = None
        else:
            fd, self._tmp = temporary_file(path)  # 0600, its folder 0700 when created here
            self._fh = os.fdopen(fd, "wb")
        when = generated or dt.datetime.now(dt.UTC)
        head: dict[str, Any] = {"study": study}
        if title:
            head["title"] = title
        head |= {
            "asOf": as_of.isoformat(),
            "rulesVersion": rules_version,
            "generator": f"fhir-adapter {__version__}",
            "generated": when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        if source:
            head["source"] = source
        self._fh.write(orjson.dumps(head)[:-1] + b',\n"subjects": [')

    def subject(self, subject: SubjectResult, extra: dict[str, Any] | None = None) -> None:
        body = subject.to_json()
        if extra:
            body.update(extra)
        self.subject_json(body)

    def subject_json(self, body: dict[str, Any]) -> None:
        """A subject's result as JSON already (sync writes the stored state of every candidate)."""
        self.tally.add(body)
        self._fh.write((b"\n" if self._first else b",\n") + orjson.dumps(body))
        self._first = False

    def close(self, errors: list[InputProblem]) -> None:
        self._fh.write(b'\n],\n"errors": ')
        self._fh.write(
            orjson.dumps([e.to_json(server_text=True) for e in errors], option=orjson.OPT_INDENT_2)
        )
        self._fh.write(b',\n"summary": ' + orjson.dumps(self.tally.to_json()) + b"\n}\n")
        self._fh.flush()
        if self._tmp is not None and self.path is not None:
            self._fh.close()
            os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._tmp is not None:
            self._fh.close()
            Path(self._tmp).unlink(missing_ok=True)
