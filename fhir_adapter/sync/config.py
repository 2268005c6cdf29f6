"""site.toml: everything a scheduled run needs, validated on load. Secrets only by reference."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from fhir_adapter.config.loader import profiles_dir
from fhir_adapter.config.toml_file import read_toml
from fhir_adapter.errors import ConfigError
from fhir_adapter.settings import (
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    MIB,
    AuthSettings,
    BulkSettings,
    RuleSettings,
    ServerSettings,
    WriteTarget,
)
from fhir_adapter.source.strategies import Overrides


def site_names(table: str) -> dict[str, str]:
    """How the operator spells each setting of ``[server]`` or ``[writeback]``, for error messages."""
    keys = {
        "url": "url",
        "token": "auth.token",
        "basic_user": "auth.username",
        "basic_password": "auth.password",
        "smart_client_id": "auth.client_id",
        "smart_key": "auth.private_key",
        "smart_token_url": "auth.token_url",
        "allow_plain_http": "allow_plain_http",
    }
    return {name: f"{table}.{key}" for name, key in keys.items()}


SITE_NAMES = site_names("server")


@dataclass(frozen=True, slots=True)
class SiteConfig:
    path: Path
    server: ServerSettings
    rules: RuleSettings
    as_of: dt.date | None  # None: today, on the day of the run
    state_path: Path
    manifests: Path
    lock_path: Path
    max_patients: int
    write_back: bool
    full_every_days: int = 0
    report_html: Path | None = None
    result_path: Path | None = None
    report_dir: Path | None = None  # several studies: <study>.json and <study>.html here
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES
    group: str | None = None  # [server] group: the candidates are this Group's members
    strategies: Overrides = field(default_factory=Overrides)  # [strategies]: forced choices
    write_target: WriteTarget | None = None  # [writeback]: a separate write server
    bulk: BulkSettings = field(default_factory=BulkSettings)  # [bulk]: exports of the bulk strategies
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def server_url(self) -> str:
        return self.server.url


def load_site_config(path: Path) -> SiteConfig:
    raw = read_toml(path)
    schema = json.loads((profiles_dir() / "site-config.schema.json").read_text(encoding="utf-8"))
    try:
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(raw))
    except RecursionError as exc:
        raise ConfigError(f"{path}: nested too deeply") from exc
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        message = err.message
        if "does not match '^(env|file):.+'" in message:
            message = "secrets are given by reference: env:VARIABLE or file:/path (never the secret itself)"
        # [server] and [writeback] share their keys through a $ref, so an unknown key there is an
        # "unevaluated" one; it reads the same as everywhere else.
        message = message.replace("Unevaluated properties are", "Additional properties are")
        raise ConfigError(f"{path}: {key}: {message}")
    base = path.parent

    def resolve(value: str | None) -> Path | None:
        if value is None:
            return None
        p = Path(value)
        return p if p.is_absolute() else base / p

    server, state = raw["server"], raw["state"]
    limits, study = raw.get("limits", {}), raw.get("study", {})
    as_of_raw = study.get("as_of", "today")
    try:
        as_of = None if as_of_raw == "today" else dt.date.fromisoformat(as_of_raw)
    except ValueError:
        raise ConfigError(f"{path}: study.as_of: {as_of_raw!r} is not a calendar date") from None
    state_path = resolve(state["path"])
    assert state_path is not None
    ids = study.get("id", [])
    trials = tuple(ids if isinstance(ids, list) else [ids])
    # A criteria file given by path is relative to site.toml, like every other path here.
    trials = tuple(str(resolve(t)) if t.endswith(".toml") else t for t in trials)
    report = raw.get("report", {})
    if len(trials) > 1 and (report.get("result") or report.get("html")):
        raise ConfigError(f"{path}: report: several studies write several reports: use report.dir")
    target = raw.get("writeback")
    return SiteConfig(
        path=path,
        server=_connection(server, "server", resolve, writes=target is None),
        rules=RuleSettings(
            trials=trials,
            overlays=tuple(p for p in (resolve(o) for o in raw.get("mappings", {}).get("overlays", [])) if p),
        ),
        as_of=as_of,
        state_path=state_path,
        manifests=resolve(state.get("manifests")) or state_path.parent / "runs",
        lock_path=resolve(state.get("lock")) or state_path.with_suffix(".lock"),
        max_patients=int(limits.get("max_patients_per_run", 0)),
        full_every_days=int(limits.get("full_reconciliation_days", 0)),
        write_back=bool(limits.get("write_back", True)),
        report_html=resolve(report.get("html")),
        result_path=resolve(report.get("result")),
        report_dir=resolve(report.get("dir")),
        max_consecutive_failures=int(
            limits.get("max_consecutive_failures", DEFAULT_MAX_CONSECUTIVE_FAILURES)
        ),
        group=server.get("group"),
        strategies=Overrides(**raw.get("strategies", {})),
        write_target=_write_target(path, target, resolve) if target is not None else None,
        bulk=_bulk_settings(raw.get("bulk", {})),
        raw=raw,
    )


def _connection(
    table: dict[str, Any],
    name: str,
    resolve: Callable[[str | None], Path | None],
    *,
    writes: bool,
    secrets: tuple[str, str] = ("env:FHIR_TOKEN", "env:FHIR_PASSWORD"),
) -> ServerSettings:
    """``[server]`` or ``[writeback]`` (both validated by the schema's ``connection``); ``secrets``: the
    default references of the bearer token and the basic-auth password."""
    auth = table.get("auth", {"type": "none"})
    defaults = ServerSettings(table["url"])
    return ServerSettings(
        url=table["url"],
        auth=AuthSettings(
            method=auth.get("type", "none"),
            token=auth.get("token", secrets[0]),
            basic_user=auth.get("username"),
            basic_password=auth.get("password", secrets[1]),
            smart_client_id=auth.get("client_id"),
            smart_key=auth.get("private_key"),
            smart_alg=auth.get("algorithm", "RS384"),
            smart_kid=auth.get("kid"),
            smart_token_url=auth.get("token_url"),
            smart_scope=auth.get("scope"),
        ),
        ca_bundle=resolve(table.get("ca_bundle")),
        timeout=float(table.get("timeout_seconds", defaults.timeout)),
        allow_plain_http=bool(table.get("allow_plain_http", False)),
        request_deadline=float(table.get("request_deadline_seconds", defaults.request_deadline)),
        max_response_bytes=int(float(table.get("max_response_mb", defaults.max_response_bytes / MIB)) * MIB),
        max_pages=int(table.get("max_pages", defaults.max_pages)),
        throttle_budget=float(table.get("throttle_budget_seconds", defaults.throttle_budget)),
        # Only [server] (the schema says so): write-back sends one patient's writes at a time.
        concurrency=int(table.get("concurrency", defaults.concurrency)),
        max_rps=float(table["max_rps"]) if "max_rps" in table else None,
        names=site_names(name),
        writes=writes,
    )


def _write_target(
    path: Path, table: dict[str, Any], resolve: Callable[[str | None], Path | None]
) -> WriteTarget:
    system = table.get("patient_identifier_system")
    mode = table.get("patient_reference", "identifier" if system else "absolute")
    if mode == "identifier" and not system:
        raise ConfigError(
            f'{path}: writeback.patient_identifier_system: needed with patient_reference = "identifier"'
        )
    if mode == "absolute" and system:
        raise ConfigError(
            f'{path}: writeback.patient_identifier_system: goes with patient_reference = "identifier"'
        )
    # The read server's secrets are never reused here by accident: the defaults are variables of their own.
    secrets = ("env:FHIR_WRITE_TOKEN", "env:FHIR_WRITE_PASSWORD")
    return WriteTarget(_connection(table, "writeback", resolve, writes=True, secrets=secrets), mode, system)


def _bulk_settings(table: dict[str, Any]) -> BulkSettings:
    defaults = BulkSettings()
    return BulkSettings(
        poll_max_wait=float(table.get("poll_max_wait_seconds", defaults.poll_max_wait)),
        export_timeout=float(table.get("export_timeout_seconds", defaults.export_timeout)),
        downloads=int(table.get("downloads", defaults.downloads)),
        patients_per_job=int(table.get("patients_per_job", defaults.patients_per_job)),
        storage_origins=tuple(table.get("storage_origins", ())),
    )
