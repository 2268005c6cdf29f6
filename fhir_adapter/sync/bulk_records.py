"""The queued patients' records read from a Bulk Data export's files (the sync's ``bulk`` records strategy).

The files go through :class:`FileSource`, the two streaming passes of ``screen DIR`` and ``screen --bulk``,
so each record, and its verdicts, are those of screening the same data as files. Only the queued patients
are handed on, each as a built record with the ``versionId`` of every resource in it (the Provenance of a
write-back cites them; export files carry ``meta.versionId``).

A queued patient the export does not hold is ``Absent``: deleted on the server, or no longer a member of
the Group the export is of; the sync then forgets it, as when a server read answers 404. That is only
safe when every file of the export arrived: with one missing (a download that failed), a record could
lack its Conditions and be judged ineligible, and a patient could look deleted. So with an incomplete
export no queued patient is screened: each is a problem and stays queued, and the next run resumes the
job for the missing files.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from fhir_adapter.model import InputProblem, PatientRecord, Resource
from fhir_adapter.screening import Screener
from fhir_adapter.source.base import Absent, Screenable, SourceItem, Unbuilt
from fhir_adapter.source.files import FileSource
from fhir_adapter.source.grouping import build
from fhir_adapter.source.records import note_version


def versions_of(record: PatientRecord) -> dict[str, str]:
    """``"Observation/abc" -> "3"`` for every resource of the record that carries a ``versionId``."""
    versions: dict[str, str] = {}
    resources: list[Resource] = [*([record.patient] if record.patient else [])]
    for items in record.resources.values():
        resources.extend(items)
    resources.extend(record.medications.values())
    for resource in resources:
        note_version(versions, resource)
    return versions


class ExportRecords:
    """A ``Source`` of the ``patients`` in ``files``. Use as a context manager (the on-disk index).

    ``problems`` collects what names no queued patient (an unreadable line, a row that is not a JSON
    object): the caller reports it with the run's errors, since the pipeline has no patient to give it to.
    """

    def __init__(
        self,
        files: Sequence[Path],
        screener: Screener,
        patients: Sequence[str],
        *,
        complete: bool,
        description: str,
        workdir: Path | None = None,
    ) -> None:
        # Every core once the export is large enough to gain from them, as `screen DIR` reads (the
        # verdicts do not depend on it).
        self._files = FileSource(files, screener, workdir, readers=None)
        self.wanted = sorted(set(patients))
        self.complete = complete
        self._description = description
        self.problems: list[InputProblem] = []

    def __enter__(self) -> ExportRecords:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._files.__exit__(exc_type, exc, tb)

    @property
    def description(self) -> str:
        return self._description

    def expected(self) -> int | None:
        return len(self.wanted)

    def summary(self) -> list[str]:
        return self._files.summary() if self.complete and self.wanted else []

    def records(self) -> Iterator[SourceItem]:
        if not self.wanted:
            return
        if not self.complete:
            for pid in self.wanted:
                yield InputProblem(
                    self._description,
                    f"Patient/{pid}: not screened: files of the export are missing (the next run fetches them)",
                    resource=f"Patient/{pid}",
                )
            return
        wanted = set(self.wanted)
        seen: set[str] = set()
        for item in self._files.records():
            if isinstance(item, InputProblem):
                about = item.resource.removeprefix("Patient/") if item.resource else None
                if about in wanted:
                    yield item
                else:
                    self.problems.append(item)
                continue
            if not isinstance(item, Unbuilt) or item.raw.patient_id not in wanted:
                continue
            pid = item.raw.patient_id
            seen.add(pid)
            record, problems = build(item.raw, item.medication)
            self.problems.extend(problems)
            yield Screenable(record, versions_of(record))
        for pid in self.wanted:
            if pid not in seen:
                yield Absent(pid)
