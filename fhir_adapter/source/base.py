"""The seam every source plugs into: it yields patient records, one at a time, in patient-id order.

Files (Bundles, NDJSON), a FHIR server (``$everything`` or typed searches) and a Bulk Data export are
sources; the one per-patient loop in :mod:`fhir_adapter.pipeline` screens whatever they yield. A source
never raises for one patient's data: what it cannot read becomes an ``InputProblem`` in the stream
(with ``resource = "Patient/<id>"`` when it is that patient's), and only a failure that dooms every
later patient (the server unreachable from the start, authentication refused) is raised.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from fhir_adapter.model import InputProblem, PatientRecord
from fhir_adapter.source.grouping import MedicationLookup, RawRecord


@dataclass(frozen=True, slots=True)
class Screenable:
    """One patient's record as a source has it, and what a write-back needs to cite it."""

    record: PatientRecord
    # versionId of every resource read ("Observation/abc" -> "3"): the Provenance cites these versions.
    versions: Mapping[str, str] = field(default_factory=dict)
    # HTTP requests this record cost (server sources), reported per patient in the result.
    requests: int | None = None
    # Resources the source could not use (the patient is screened without them), reported in errors.
    problems: tuple[InputProblem, ...] = ()


@dataclass(frozen=True, slots=True)
class Unbuilt:
    """A patient's rows as a file source spooled them: parsed and built where the patient is screened
    (this process, or a worker process: see :mod:`fhir_adapter.workers`)."""

    raw: RawRecord
    medication: MedicationLookup  # Medications by reference, for building in this process


@dataclass(frozen=True, slots=True)
class Absent:
    """A patient the source was asked for but no longer has (deleted on the server)."""

    patient_id: str


SourceItem = Screenable | Unbuilt | Absent | InputProblem


class Source(Protocol):
    """Yields every patient of the run, sorted by id, and says what it is for the result file."""

    @property
    def description(self) -> str:
        """Where the data came from, for the result file and the report ("files: a, b", "server: URL")."""
        ...

    def records(self) -> Iterator[SourceItem]: ...

    def expected(self) -> int | None:
        """How many patients ``records`` will yield, when known before it starts (for progress)."""
        ...

    def summary(self) -> list[str]:
        """Lines for the terminal summary after the run: strategies used, requests sent, warnings."""
        ...
