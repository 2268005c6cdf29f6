"""With note extraction off (the default), the 23 original examples screen to exactly the results they had
before components, panels, result words and notes were added (tests/data/baseline, captured before).

Only ``generated`` (the clock) and ``rulesVersion`` (a hash of every mapping file, which changes whenever
one does, by design) may differ; the rest of each file, ``source`` included, must be the same JSON.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
from fhirdata import REPO

from fhir_adapter.cli import main

BASELINE = REPO / "tests" / "data" / "baseline"
VOLATILE = ("generated", "rulesVersion")


def _baseline(trial: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((BASELINE / f"{trial}.json").read_text(encoding="utf-8"))
    return loaded


def _files(baseline: dict[str, object]) -> list[str]:
    """The input files exactly as the baseline run named them (relative to the repository)."""
    source = str(baseline["source"])
    assert source.startswith("files: ")
    return source.removeprefix("files: ").split(", ")


@pytest.mark.parametrize("trial", ["NCT05495321", "NCT02728752"])
def test_extraction_off_gives_the_results_captured_before_issue_13(
    trial: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _baseline(trial)
    files = _files(before)
    assert len(files) == 23 and all((REPO / f).is_file() for f in files)
    monkeypatch.chdir(REPO)
    out = tmp_path / f"{trial}.json"
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(["screen", *files, "--trial", trial, "--as-of", "2026-06-15", "--out", str(out)])
    assert code == 0
    after = json.loads(out.read_text(encoding="utf-8"))
    for key in VOLATILE:
        assert key in before and key in after
        before.pop(key)
        after.pop(key)
    assert after == before
    # Byte for byte too (key order, number formatting), once the two volatile values are blanked.
    assert _blanked(out.read_text(encoding="utf-8")) == _blanked(
        (BASELINE / f"{trial}.json").read_text(encoding="utf-8")
    )


def _blanked(raw: str) -> str:
    for key in VOLATILE:
        raw = re.sub(rf'"{key}":"[^"]*"', f'"{key}":""', raw, count=1)
    return raw
