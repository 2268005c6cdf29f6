"""Write each patient's results into one result file per trial (streamed, atomic, mode 0600)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fhir_adapter.config.types import Mappings
from fhir_adapter.model import InputProblem
from fhir_adapter.output.result_file import ResultWriter

if TYPE_CHECKING:
    from fhir_adapter.pipeline import Screened


def result_paths(
    trials: Sequence[Mappings], out: Path | None, out_dir: Path | None, suffix: str = ".json"
) -> list[Path | None]:
    """Where each trial's result goes: ``out`` (None: stdout) for one trial, ``out_dir/<study>.json`` for
    any number of them."""
    if out_dir is not None:
        return [out_dir / f"{m.trial.study}{suffix}" for m in trials]
    return [out]


class ResultSink:
    def __init__(
        self,
        trials: Sequence[Mappings],
        paths: Sequence[Path | None],
        as_of: dt.date,
        source: str,
    ) -> None:
        self.trials = tuple(trials)
        self.writers = [
            ResultWriter(
                path,
                m.trial.study,
                as_of,
                m.fingerprint,
                source=source,
                title=m.trial.title,
            )
            for m, path in zip(self.trials, paths, strict=True)
        ]

    def accept(self, screened: Screened) -> list[InputProblem]:
        extra = {"requests": screened.requests} if screened.requests is not None else None
        for writer, subject in zip(self.writers, screened.results, strict=True):
            writer.subject(subject, extra=extra)
        return []

    def absent(self, patient_id: str) -> None:
        return None

    def failed(self, patient_id: str, problem: InputProblem) -> None:
        return None

    def close(self, problems: list[InputProblem]) -> None:
        for writer in self.writers:
            writer.close(problems)

    def abort(self) -> None:
        for writer in self.writers:
            writer.abort()
