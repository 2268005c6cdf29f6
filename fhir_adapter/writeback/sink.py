"""Hand each screened patient to the write-back of every trial: one ResearchSubject per (study, patient)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from fhir_adapter.model import InputProblem

if TYPE_CHECKING:
    from fhir_adapter.pipeline import Screened
from fhir_adapter.writeback.subjects import Action, Outcome, WriteBack


class WriteBackSink:
    """``writebacks`` in the screener's trial order. In a dry run every decision is printed to ``out``;
    otherwise only failures are."""

    def __init__(self, writebacks: Sequence[WriteBack], out: TextIO) -> None:
        self.writebacks = tuple(writebacks)
        self.out = out
        self.outcomes: list[Outcome] = []  # the last patient's, for callers that act on them (sync)

    def prepare(self) -> None:
        for wb in self.writebacks:
            wb.prepare()

    def accept(self, screened: Screened) -> list[InputProblem]:
        problems: list[InputProblem] = []
        self.outcomes = []
        patient = screened.record.patient if screened.record is not None else None
        for wb, subject in zip(self.writebacks, screened.results, strict=True):
            outcome = wb.write(subject, screened.versions, patient)
            self.outcomes.append(outcome)
            study = wb.trial.study
            if (
                wb.dry_run
                or outcome.action is Action.FAILED
                or outcome.provenance_error
                or outcome.provenance_repaired
            ):
                print(f"{study} {outcome.describe()}", file=self.out)
            where = wb.client.base_url
            if outcome.action is Action.FAILED:
                problems.append(
                    InputProblem(
                        where,
                        f"{subject.patient}: {study} write-back failed: {outcome.detail}",
                        resource=subject.patient,
                        server_text=outcome.server_text,
                    )
                )
            elif outcome.provenance_error:
                problems.append(
                    InputProblem(
                        where,
                        f"{subject.patient}: {study} Provenance for {outcome.reference} failed: "
                        f"{outcome.provenance_error}",
                        resource=subject.patient,
                        server_text=outcome.server_text,
                    )
                )
        return problems

    def absent(self, patient_id: str) -> None:
        return None

    def failed(self, patient_id: str, problem: InputProblem) -> None:
        return None

    def summary(self) -> list[str]:
        lines = []
        for wb in self.writebacks:
            c = wb.counts
            counts = (
                f"created {c[Action.CREATED]}, updated {c[Action.UPDATED]}, unchanged {c[Action.UNCHANGED]}, "
                f"staff-managed {c[Action.STAFF]}, not a candidate {c[Action.NOT_CANDIDATE]}, "
                f"failed {c[Action.FAILED]}"
            )
            if wb.dry_run:
                lines.append(
                    f"Write-back {wb.trial.study} (dry run, nothing written; add --write-back): "
                    + counts.replace("created", "would create").replace("updated", "would update", 1)
                )
            else:
                line = f"Write-back {wb.trial.study}: {counts}"
                if wb.provenance_repaired:
                    line += f"; missing Provenance written {wb.provenance_repaired}"
                if wb.provenance_failures:
                    line += f"; Provenance failed {wb.provenance_failures}"
                lines.append(line + f" ({wb.requests} request(s))")
            lines.extend(f"note: {n}" for n in wb.notes)
        return lines
