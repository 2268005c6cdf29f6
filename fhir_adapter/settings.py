"""Typed settings below the command line: the CLI and site.toml both build these, nothing else.

Secrets appear only as references (``env:NAME`` / ``file:/path``); they are resolved when a client is
opened, never stored here. ``names`` maps a field to how the operator spells it (a CLI flag or a
site.toml key), so an error message points at what to edit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from fhir_adapter.source.strategies import Overrides

AuthMethod = Literal["none", "bearer", "basic", "smart"]
# How a separate write target refers to the read server's patients (docs/write-target.md).
PatientReference = Literal["absolute", "identifier"]

# Stop a run (exit 4) after this many patients in a row fail: the server, not the patients, is the problem.
DEFAULT_MAX_CONSECUTIVE_FAILURES = 10
MIB = 1024 * 1024


def cli_names(prefix: str = "") -> dict[str, str]:
    """The flags of one server's option group: ``--token`` ..., or ``--write-token`` ... for the write
    target (``prefix`` ``"write-"``)."""
    flags = {
        "token": "token",
        "basic_user": "basic-user",
        "basic_password": "basic-password",
        "smart_client_id": "smart-client-id",
        "smart_key": "smart-key",
        "smart_token_url": "smart-token-url",
        "url": "server",
        "allow_plain_http": "allow-plain-http",
    }
    return {key: f"--{prefix}{flag}" for key, flag in flags.items()}


CLI_NAMES: Mapping[str, str] = cli_names()


@dataclass(frozen=True, slots=True)
class AuthSettings:
    method: AuthMethod = "none"
    token: str = "env:FHIR_TOKEN"  # bearer token reference
    basic_user: str | None = None
    basic_password: str = "env:FHIR_PASSWORD"  # reference
    smart_client_id: str | None = None
    smart_key: str | None = None  # private key PEM reference
    smart_alg: Literal["RS384", "ES384"] = "RS384"
    smart_kid: str | None = None
    smart_token_url: str | None = None  # default: .well-known/smart-configuration
    smart_scope: str | None = None  # default: read all, write what write-back needs


MAX_CONCURRENCY: Final = 32  # fetch threads; more only queues on the server


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How to reach one FHIR server, and the limits on what it can make us do (docs/security.md)."""

    url: str
    auth: AuthSettings = field(default_factory=AuthSettings)
    ca_bundle: Path | None = None
    timeout: float = 60.0  # read timeout per socket operation, seconds
    # Plain http:// to a host that is not loopback is refused unless this is set.
    allow_plain_http: bool = False
    request_deadline: float = 120.0  # seconds for one whole exchange: connect to the last body byte
    max_response_bytes: int = 64 * MIB  # one response body (decoded)
    max_pages: int = 1000  # pages of one search
    throttle_budget: float = 900.0  # seconds a run may spend waiting on 429/503 answers in total
    concurrency: int = 4  # patient records fetched at once
    max_rps: float | None = None  # request starts per second over all of them; None: no limit
    names: Mapping[str, str] = field(default_factory=lambda: dict(CLI_NAMES))
    # Whether the adapter writes here: the default SMART scope asks for write scopes only then (a read
    # server with a separate write target is asked for read scopes alone).
    writes: bool = True

    def name(self, key: str) -> str:
        return self.names.get(key, key)


@dataclass(frozen=True, slots=True)
class WriteTarget:
    """A separate FHIR server (a research server) for ResearchStudy, ResearchSubject, Provenance and
    Device, with its own URL, TLS and auth; the patient is referred to by the read server's absolute URL
    or by the business identifier of ``identifier_system`` (docs/write-target.md)."""

    server: ServerSettings
    patient_reference: PatientReference = "absolute"
    identifier_system: str | None = None


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """Caps on what an input file controls: one NDJSON line, one JSON document, a decompressed file."""

    max_line_bytes: int = 64 * 1024 * 1024  # one resource per line; attachments can be large
    max_document_bytes: int = 512 * 1024 * 1024  # a Bundle file is parsed whole
    max_decompressed_bytes: int = 256 * 1024**3  # a .gz file
    max_compression_ratio: int = 200  # NDJSON compresses 10-30x; a bomb, 1,000x and more


@dataclass(frozen=True, slots=True)
class RuleSettings:
    """Which trials, which overlays, and (tests only) another mappings folder."""

    trials: tuple[str, ...] = ()  # ids or criteria .toml paths; empty: mappings/trials.toml's default
    overlays: tuple[Path, ...] = ()
    mappings_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class OutputSettings:
    """One trial: ``out`` (or stdout) and ``report``; several: ``out_dir`` gets <study>.json/.html."""

    out: Path | None = None
    out_dir: Path | None = None
    report: Path | None = None


@dataclass(frozen=True, slots=True)
class BulkSettings:
    """A Bulk Data export: where it runs, how long to wait for it, how files are fetched.

    Polls honour ``Retry-After`` but wait at most ``poll_max_wait`` seconds each (HAPI answers a fixed
    120 s however small the job), and give up after ``export_timeout`` seconds in total (the job is kept
    and the next run resumes it). ``storage_origins``: origins other than the FHIR server's that may
    receive the access token for file downloads (``https://host[:port]``).
    """

    level: Literal["system", "patient", "group"] = "system"
    group: str | None = None
    since: dt.datetime | None = None
    types: tuple[str, ...] = ()  # empty: the types the trials' criteria read
    storage_origins: tuple[str, ...] = ()
    poll_initial_wait: float = 1.0
    poll_max_wait: float = 10.0
    export_timeout: float = 2 * 3600.0
    downloads: int = 3  # files fetched at once
    download_attempts: int = 5  # per file, each resuming where the last one broke
    # A file download in which no 64 KiB arrive for this long is cut off (and resumed by the next
    # attempt): a large file takes what it takes, a trickling server cannot hold the run.
    stall_seconds: float = 60.0
    max_compression_ratio: int = 200  # a Content-Encoding body that grows more than this is a bomb
    patients_per_job: int = 1000  # second pass of the two-pass plan: `patient=` references per kick-off
    two_pass: bool = True  # gate's Conditions first (_typeFilter), then the candidates' data


@dataclass(frozen=True, slots=True)
class SparkSettings:
    """``screen --engine spark``: inputs and the result folder exactly as given (paths or URIs)."""

    inputs: tuple[str, ...] = ()
    out_dir: str | None = None  # part files + manifest; required
    master: str | None = None  # None: spark-submit's master, else local[*]
    merge: bool = False  # also write the standard <study>.json (+ .html) into out_dir (local folders)


@dataclass(frozen=True, slots=True)
class ScreenSettings:
    rules: RuleSettings
    as_of: dt.date
    output: OutputSettings = field(default_factory=OutputSettings)
    paths: tuple[Path, ...] = ()
    server: ServerSettings | None = None
    patients: tuple[str, ...] = ()
    group: str | None = None
    write_back: bool = False
    write_target: WriteTarget | None = None  # None: write back to the server read from
    # Processes screening file records; None: every core, once there are enough records to be worth it.
    workers: int | None = 1
    strategies: Overrides = field(default_factory=Overrides)  # forced server strategies (--records ...)
    # --bulk: export from the server, then screen the files (BulkSource); its work folder and whether
    # the downloads stay after a complete run.
    bulk: BulkSettings | None = None
    bulk_dir: Path | None = None
    keep_bulk_files: bool = False
    spark: SparkSettings | None = None  # None: the local engine
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES  # 0: never stop early


@dataclass(frozen=True, slots=True)
class ExportSettings:
    """``fhir-adapter export``: files only, into ``out``; the job file in ``state_dir`` (default ``out``)."""

    server: ServerSettings
    bulk: BulkSettings
    rules: RuleSettings
    out: Path
    state_dir: Path | None = None
