"""Seeded fuzzing of the file readers and the screen: hostile files never crash, hang or exhaust the
adapter, never disturb the other patients, and never vanish without a trace.

The corpus (tests/fuzzcorpus.py) mutates real cases: type confusion at random JSON paths, bad numbers
and dates, deep nesting, encodings, truncation, stray bytes, nested Bundles, R5-shaped fields, and the
special files (FIFO, a link to /dev/zero, a link loop, a compression bomb, an endless line, a file name
that is not UTF-8, a very deep folder tree). FUZZ_CASES sets the size (CI: the default).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fuzzcorpus import write_corpus

from fhir_adapter.source.reader import display

CASES = int(os.environ.get("FUZZ_CASES", "300"))
SEEDS = [int(s) for s in os.environ.get("FUZZ_SEEDS", "11").split(",")]
WALL_LIMIT_S = 240  # a hang, not a slow run: the corpus screens in seconds
RSS_LIMIT_KB = 1_500_000


def screen(folder: Path, out: Path) -> tuple[int, str, dict[str, Any], float, int]:
    started = time.monotonic()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "fhir_adapter",
            "screen",
            str(folder),
            "--as-of",
            "2026-06-15",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=WALL_LIMIT_S,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    return run.returncode, run.stderr, result, time.monotonic() - started, rss


@pytest.mark.parametrize("seed", SEEDS)
def test_hostile_files_are_screened_or_reported_and_never_disturb_the_rest(tmp_path: Path, seed: int) -> None:
    corpus = tmp_path / "corpus"
    controls, mutants = write_corpus(corpus, CASES, seed)
    alone = tmp_path / "controls"
    alone.mkdir()
    for pid in controls:
        (alone / f"{pid}.json").write_bytes((corpus / f"{pid}.json").read_bytes())
    code, err, baseline, _, _ = screen(alone, tmp_path / "baseline.json")
    assert code == 0, err

    code, err, result, seconds, rss = screen(corpus, tmp_path / "result.json")

    assert code in (0, 3), err[-3000:]
    assert "Traceback" not in err
    assert seconds < WALL_LIMIT_S and rss < RSS_LIMIT_KB
    subjects = {s["patient"]: s for s in result["subjects"]}
    before = {s["patient"]: s for s in baseline["subjects"]}
    for pid in controls:  # every untouched patient screens exactly as it does alone
        assert subjects[f"Patient/{pid}"] == before[f"Patient/{pid}"], pid
    errors = result["errors"]
    assert not [e for e in errors if "internal error" in e["reason"]], errors
    reported = {e["file"] for e in errors}
    missing = []
    for mutant in mutants:
        screened = mutant.patient is not None and f"Patient/{mutant.patient}" in subjects
        if not screened and display(mutant.path) not in reported:
            missing.append(f"{mutant.what}: {display(mutant.path)}")
    assert missing == [], missing[:20]
    # The special files are reported as what they are.
    reasons = " | ".join(e["reason"] for e in errors)
    for expected in (
        "not a regular file (a FIFO)",
        "not a regular file (a device)",
        "link loop",
        "decompresses to more",
    ):
        assert expected in reasons, expected
