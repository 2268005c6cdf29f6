"""Running the CLI against a fault server (tests/faultserver.py) and reading what came out."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faultserver import FaultServer
from fhirdata import baseline, for_patient

from fhir_adapter.cli import main

AS_OF = "2026-06-15"
TOKEN = "tok-SECRET-8841"
PATIENTS = ("p1", "p2", "p3", "p4", "p5")
# Patient data a server may quote in an OperationOutcome; none of it may reach a log.
PHI = ("Zhang Weiling", "MRN-8841-2207", "1979-08-23")
PHI_TEXT = f"Patient {PHI[0]} ({PHI[1]}, born {PHI[2]}) is already enrolled"


def load_patients(server: FaultServer, *pids: str) -> None:
    """Dermatomyositis candidates (the test data's baseline) for each id."""
    for pid in pids or PATIENTS:
        server.store.put(*for_patient(baseline(), pid))


@dataclass
class Run:
    code: int
    seconds: float
    err: str
    result: dict[str, Any] | None

    def errors_for(self, patient: str) -> list[dict[str, Any]]:
        return [e for e in (self.result or {}).get("errors", []) if e.get("resource") == patient]

    def screened(self) -> list[str]:
        return [s["patient"] for s in (self.result or {}).get("subjects", [])]


def screen(
    capsys: pytest.CaptureFixture[str], server: FaultServer, out: Path, *args: str, verbose: bool = True
) -> Run:
    """``fhir-adapter screen --server`` against the fault server; its exit code, wall time, stderr and result."""
    if out.exists():
        out.unlink()
    argv = ["screen", "--server", server.base, "--as-of", AS_OF, "--out", str(out), *args]
    if verbose:
        argv.append("-vv")
    capsys.readouterr()
    started = time.monotonic()
    code = main(argv)
    seconds = time.monotonic() - started
    err = capsys.readouterr().err
    result = json.loads(out.read_text()) if out.exists() else None
    return Run(code, seconds, err, result)
