"""Sync state in an embedded SQLite file: watermark, per-patient result hash, re-check date, last error.

The schema carries a version (``PRAGMA user_version``); ``MIGRATIONS[n]`` upgrades version n to n+1, so
an older state file is migrated in place on open, never thrown away.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_adapter.errors import StateError
from fhir_adapter.output.private import narrow, not_regular, open_private

log = logging.getLogger(__name__)

MIGRATIONS: list[str] = [
    # 0 -> 1
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE patient (
        id TEXT PRIMARY KEY,
        result_hash TEXT,
        status TEXT,
        recheck_on TEXT,
        last_error TEXT,
        screened_at TEXT
    );
    CREATE TABLE pending (id TEXT PRIMARY KEY, reason TEXT NOT NULL);
    CREATE TABLE run (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started TEXT NOT NULL,
        finished TEXT,
        outcome TEXT,
        manifest TEXT
    );
    """,
    # 1 -> 2: results per (study, patient), with the result itself, so several trials share one state
    # file and the report shows every candidate's current state, not only the last run's patients.
    # patient.result_hash and patient.status (one trial) are no longer read.
    """
    CREATE TABLE result (
        study TEXT NOT NULL,
        patient TEXT NOT NULL,
        result_hash TEXT NOT NULL,
        status TEXT NOT NULL,
        gate_met INTEGER NOT NULL,
        body TEXT NOT NULL,
        screened_at TEXT NOT NULL,
        PRIMARY KEY (study, patient)
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
# Keys of the ``meta`` table.
WATERMARK = "watermark"
LAST_FULL = "last_full_reconciliation"


@dataclass(frozen=True, slots=True)
class PatientState:
    id: str
    recheck_on: dt.date | None
    last_error: str | None
    hashes: dict[str, str]  # study -> result hash of the last screening


@dataclass(frozen=True, slots=True)
class StoredResult:
    study: str
    patient: str
    result_hash: str
    status: str
    gate_met: bool
    body: dict[str, Any]  # the subject's result JSON (spec section 1)


TABLES = frozenset({"meta", "patient", "pending", "run", "result"})


def unusable(path: Path, exc: BaseException) -> StateError:
    """The error for a state file SQLite or the file system refused (SQLite's messages name tables and
    conditions, never data)."""
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    return StateError(
        f"{path}: not a usable sync state file ({detail}): restore it from a backup, or move it away (and "
        "its -wal and -shm files) to start again with a full first run"
    )


class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._open(path)
        except (sqlite3.DatabaseError, OSError, StateError) as exc:
            if "db" in self.__dict__:
                self.db.close()  # opened, then found unusable
            raise exc if isinstance(exc, StateError) else unusable(path, exc) from None

    def _open(self, path: Path) -> None:
        for candidate in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
            if not_regular(candidate):
                raise StateError(f"{candidate}: not a regular file: the sync state must be a file of its own")
        # Created 0600 before SQLite opens it: SQLite would create it 0644 (less the umask), and it gives
        # the -wal and -shm files it creates the database file's mode.
        existed = path.exists()
        os.close(open_private(path))
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        if existed and self.db.execute("PRAGMA user_version").fetchone()[0] == 0:
            # Created by hand (touch), or truncated: either way the run that follows is a first run,
            # and an operator who lost a state should hear it, not find out from a week of full runs.
            log.warning(
                "%s: the state file held no sync state: starting afresh (a first run re-screens everyone)",
                path,
            )
        for suffix in ("-wal", "-shm", "-journal"):
            sidecar = path.with_name(path.name + suffix)
            if sidecar.exists():
                narrow(sidecar)  # left by an older release with a wider mode
        self._migrate()
        found = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if missing := sorted(TABLES - found):
            raise StateError(f"{path}: the sync state lacks its table(s) {', '.join(missing)}: damaged")

    def close(self) -> None:
        self.db.close()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            from fhir_adapter.errors import ConfigError

            raise ConfigError(
                f"{self.path}: state file schema v{version} is newer than this adapter (v{SCHEMA_VERSION}); "
                "upgrade fhir-adapter or point state.path elsewhere"
            )
        for n in range(version, SCHEMA_VERSION):
            self.db.execute("BEGIN")
            # executescript would COMMIT implicitly; statement by statement keeps the migration atomic.
            for statement in _statements(MIGRATIONS[n]):
                self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version = {n + 1}")
            self.db.execute("COMMIT")

    # --- watermark -----------------------------------------------------------------------------------
    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # --- patients ------------------------------------------------------------------------------------
    def patient(self, pid: str) -> PatientState | None:
        row = self.db.execute(
            "SELECT id, recheck_on, last_error FROM patient WHERE id = ?", (pid,)
        ).fetchone()
        if not row:
            return None
        hashes = dict(self.db.execute("SELECT study, result_hash FROM result WHERE patient = ?", (pid,)))
        return PatientState(row[0], _date(row[1]), row[2], hashes)

    def known_patients(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT id FROM patient ORDER BY id")]

    def due_for_recheck(self, as_of: dt.date) -> list[str]:
        rows = self.db.execute(
            "SELECT id FROM patient WHERE recheck_on IS NOT NULL AND recheck_on <= ? ORDER BY id",
            (as_of.isoformat(),),
        )
        return [r[0] for r in rows]

    def record_results(self, pid: str, results: list[StoredResult], recheck_on: dt.date | None) -> None:
        """The patient's screening (every study) and next re-check day, in one transaction."""
        now = _now()
        self.db.execute("BEGIN")
        self.db.execute(
            "INSERT INTO patient (id, recheck_on, last_error, screened_at) VALUES (?, ?, NULL, ?) "
            "ON CONFLICT(id) DO UPDATE SET recheck_on = excluded.recheck_on, last_error = NULL, "
            "screened_at = excluded.screened_at",
            (pid, recheck_on.isoformat() if recheck_on else None, now),
        )
        self.db.executemany(
            "INSERT OR REPLACE INTO result VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (r.study, pid, r.result_hash, r.status, int(r.gate_met), json.dumps(r.body), now)
                for r in results
            ],
        )
        self.db.execute("COMMIT")

    def forget(self, pid: str) -> None:
        """A patient gone from the server: no result to show, nothing to re-check."""
        self.db.execute("DELETE FROM result WHERE patient = ?", (pid,))
        self.db.execute("DELETE FROM patient WHERE id = ?", (pid,))

    def results(self, study: str, candidates_only: bool = True) -> Iterator[StoredResult]:
        """The stored results of a study, sorted by patient: by default the candidates' (gate met)."""
        where = "study = ?" + (" AND gate_met = 1" if candidates_only else "")
        for row in self.db.execute(
            "SELECT study, patient, result_hash, status, gate_met, body FROM result "
            f"WHERE {where} ORDER BY patient",
            (study,),
        ):
            body = _json(row[5])
            if not isinstance(body, dict):
                log.warning(
                    "%s: a stored result of study %s is damaged: left out of the report", self.path, study
                )
                continue
            yield StoredResult(row[0], row[1], row[2], row[3], bool(row[4]), body)

    def record_error(self, pid: str, error: str) -> None:
        self.db.execute(
            "INSERT INTO patient (id, last_error) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET last_error = excluded.last_error",
            (pid, error[:500]),
        )

    # --- the work queue: survives a crash, so the next run finishes what this one started ------------
    def enqueue(self, ids: Iterator[str] | list[str], reason: str) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR IGNORE INTO pending VALUES (?, ?)", ((i, reason) for i in ids))
        self.db.execute("COMMIT")

    def pending(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.db.execute("SELECT id, reason FROM pending ORDER BY id")]

    def done(self, pid: str) -> None:
        self.db.execute("DELETE FROM pending WHERE id = ?", (pid,))

    # --- runs ------------------------------------------------------------------------------------------
    def start_run(self) -> int:
        cur = self.db.execute("INSERT INTO run (started) VALUES (?)", (_now(),))
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, outcome: str, manifest: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE run SET finished = ?, outcome = ?, manifest = ? WHERE id = ?",
            (_now(), outcome, json.dumps(manifest), run_id),
        )

    def runs(self, limit: int = 10) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT id, started, finished, outcome, manifest FROM run ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [
            {
                "id": r[0],
                "started": r[1],
                "finished": r[2],
                "outcome": r[3] or "interrupted",
                "manifest": _json(r[4]) if r[4] else None,
            }
            for r in rows
        ]


def _date(text: Any) -> dt.date | None:
    """A stored re-check date; a damaged one is none (screening the patient sets a new one)."""
    try:
        return dt.date.fromisoformat(text) if isinstance(text, str) and text else None
    except ValueError:
        return None


def _json(text: Any) -> Any:
    """A JSON column, or None when the row is damaged (the caller says what it then leaves out)."""
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return None


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
