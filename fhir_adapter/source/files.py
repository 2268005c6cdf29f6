"""Files as a source: single resources, Bundles, bulk NDJSON (and .gz), grouped by patient on disk.

Every patient in the input is yielded in id order: the candidates with their whole record, the others
(no resource a trial's gate can admit) as a stub that carries only counts, which the gate then
rejects. See :mod:`fhir_adapter.source.patient_index` for the two passes.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from fhir_adapter.errors import WorkspaceError
from fhir_adapter.model import InputProblem
from fhir_adapter.screening import Screener
from fhir_adapter.source.base import SourceItem, Unbuilt
from fhir_adapter.source.patient_index import PatientIndex


class FileSource:
    """Use as a context manager: the on-disk index lives until the source is closed."""

    def __init__(
        self,
        paths: Sequence[Path],
        screener: Screener,
        workdir: Path | None = None,
        readers: int | None = 1,
    ) -> None:
        """``readers``: processes reading the files (None: every core, for input large enough)."""
        self.paths = tuple(paths)
        self.screener = screener
        types = screener.needed_types | {"Patient", "Medication"}
        self._workdir = workdir or Path(tempfile.gettempdir())
        self._where = "free space there" + (
            "" if workdir else ", or point TMPDIR at a folder with room for it"
        )
        with self._working():
            self._index = PatientIndex(workdir, screener.gate, types, readers=readers)
        self._built = False
        # Set when a worker pool screens the records: rows spooled to the index file are read there.
        self.defer_rows = False

    def __enter__(self) -> FileSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._index.__exit__()

    @property
    def description(self) -> str:
        return "files: " + ", ".join(str(p) for p in self.paths)

    @contextlib.contextmanager
    def _working(self) -> Iterator[None]:
        """SQLite's and the file system's refusals of the working index are the operator's to mend (a
        full disk under TMPDIR is the usual one), not a bug: said as such, naming the folder."""
        try:
            yield
        except (sqlite3.DatabaseError, OSError) as exc:
            if isinstance(exc, OSError) and not _about_workspace(exc, self._workdir):
                raise  # an input file's own error is reported where it is read
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise WorkspaceError(
                f"{self._workdir}: the working index of this screen failed ({detail}); it needs up to the "
                f"size of the input: {self._where}"
            ) from None

    def _build(self) -> PatientIndex:
        if not self._built:
            with self._working():
                self._index.build(self.paths)
            self._built = True
        return self._index

    def expected(self) -> int | None:
        return self._build().count()

    def candidates(self) -> int:
        """How many patients will be screened in full (the others fail every gate)."""
        return self._build().candidate_count()

    def records(self) -> Iterator[SourceItem]:
        index = self._build()
        yield from index.problems
        with self._working():
            for pid, is_candidate in index.patients():
                if not is_candidate:
                    yield Unbuilt(index.stub(pid), index.medication)
                    continue
                if not index.has_patient(pid):
                    yield InputProblem("(input)", f"Patient/{pid} is referenced but not in the input")
                yield Unbuilt(index.deferred(pid) if self.defer_rows else index.raw(pid), index.medication)

    @property
    def index_path(self) -> Path:
        """The on-disk index (worker processes read Medications from it)."""
        return self._build().path

    def summary(self) -> list[str]:
        index = self._build()
        lines = [f"Read {index.resources_read} resource(s)."]
        if index.skipped_types:
            shown = ", ".join(f"{t} {n}" for t, n in sorted(index.skipped_types.items()))
            lines.append(f"Skipped {sum(index.skipped_types.values())} of types no criterion reads: {shown}")
        return lines


def _about_workspace(exc: OSError, workdir: Path) -> bool:
    """An OSError of the working folder (its path, or a full or read-only disk), not of an input file."""
    name = exc.filename
    if name is not None:
        return str(name).startswith(str(workdir))
    return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
