"""What a run leaves for the operator: its counts, the JSON manifest, and ``--status``."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir_adapter.output.private import atomic_writer
from fhir_adapter.sync.config import SiteConfig
from fhir_adapter.sync.state import WATERMARK, State, unusable


@dataclass
class Counts:
    candidates: int = 0
    queued: int = 0
    evaluated: int = 0
    unchanged: int = 0
    written: int = 0
    staff_managed: int = 0
    not_candidate: int = 0
    errors: int = 0
    deleted_resources: int = 0
    deletions_not_traced: int = 0  # no patient learned: re-screened by the next full reconciliation
    requests: int = 0  # every HTTP request the run sent, retries included
    reasons: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "queued": self.queued,
            "evaluated": self.evaluated,
            "unchanged": self.unchanged,
            "written": self.written,
            "skippedStaffManaged": self.staff_managed,
            "notCandidate": self.not_candidate,
            "errors": self.errors,
            "deletedResourcesSeen": self.deleted_resources,
            "deletionsNotTraced": self.deletions_not_traced,
            "requests": self.requests,
            "queuedBecause": dict(self.reasons),
        }


def write_manifest(folder: Path, run_id: int, manifest: dict[str, Any]) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with atomic_writer(folder / f"run-{stamp}-{run_id:06d}.json") as fh:  # 0600, folder 0700
        json.dump(manifest, fh, indent=2)


def render_manifest(manifest: dict[str, Any]) -> str:
    c = manifest["counts"]
    strategies = manifest.get("strategies")
    return (
        f"sync run {manifest['run']} {manifest['outcome']}: as of {manifest['asOf']}; "
        f"queued {c['queued']} ({', '.join(f'{k}: {v}' for k, v in c['queuedBecause'].items()) or 'nothing changed'}), "
        f"evaluated {c['evaluated']}, written {c['written']}, unchanged {c['unchanged']}, "
        f"staff-managed {c['skippedStaffManaged']}, errors {c['errors']}"
        + (f", requests {c['requests']}" if "requests" in c else "")
        + f"; watermark {manifest['watermarkBefore']} -> {manifest['watermarkAfter']}"
        + (
            "; strategies: " + ", ".join(f"{k} {v}" for k, v in strategies.items())
            if isinstance(strategies, dict) and strategies
            else ""
        )
    )


def status(config: SiteConfig, limit: int = 10) -> str:
    if not (config.state_path.exists() or config.state_path.is_symlink()):
        return f"no runs yet ({config.state_path} does not exist)"
    state = State(config.state_path)
    try:
        runs = state.runs(limit)
        pending = len(state.pending())
        watermark = state.get(WATERMARK)
    except sqlite3.DatabaseError as exc:
        raise unusable(config.state_path, exc) from None
    finally:
        state.close()
    lines = [f"watermark: {watermark}; queued patients: {pending}"]
    for run in runs:
        m = run["manifest"]
        if isinstance(m, dict) and m:
            try:
                shown = render_manifest(m)
            except (KeyError, TypeError, AttributeError):
                shown = "(its stored manifest is damaged)"
            lines.append(f"  #{run['id']} {run['started']} -> {run['finished']} {run['outcome']}: {shown}")
        else:
            lines.append(
                f"  #{run['id']} {run['started']} {run['outcome']} (no manifest: the run did not finish)"
            )
    return "\n".join(lines)
