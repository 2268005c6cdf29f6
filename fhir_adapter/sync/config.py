"""site.toml: everything a scheduled run needs, validated on load. Secrets only by reference."""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from fhir_adapter.config.loader import profiles_dir
from fhir_adapter.errors import ConfigError
from fhir_adapter.settings import (
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    MIB,
    AuthSettings,
    RuleSettings,
    ServerSettings,
)
from fhir_adapter.source.strategies import Overrides

# How the operator spells each setting in site.toml, for error messages.
SITE_NAMES = {
    "url": "server.url",
    "token": "server.auth.token",
    "basic_user": "server.auth.username",
    "basic_password": "server.auth.password",
    "smart_client_id": "server.auth.client_id",
    "smart_key": "server.auth.private_key",
    "smart_token_url": "server.auth.token_url",
    "allow_plain_http": "server.allow_plain_http",
}


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
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def server_url(self) -> str:
        return self.server.url


def load_site_config(path: Path) -> SiteConfig:
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    schema = json.loads((profiles_dir() / "site-config.schema.json").read_text(encoding="utf-8"))
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(raw))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        message = err.message
        if "does not match '^(env|file):.+'" in message:
            message = "secrets are given by reference: env:VARIABLE or file:/path (never the secret itself)"
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
    auth = server.get("auth", {"type": "none"})
    defaults = ServerSettings(server["url"])
    return SiteConfig(
        path=path,
        server=ServerSettings(
            url=server["url"],
            auth=AuthSettings(
                method=auth.get("type", "none"),
                token=auth.get("token", "env:FHIR_TOKEN"),
                basic_user=auth.get("username"),
                basic_password=auth.get("password", "env:FHIR_PASSWORD"),
                smart_client_id=auth.get("client_id"),
                smart_key=auth.get("private_key"),
                smart_alg=auth.get("algorithm", "RS384"),
                smart_kid=auth.get("kid"),
                smart_token_url=auth.get("token_url"),
                smart_scope=auth.get("scope"),
            ),
            ca_bundle=resolve(server.get("ca_bundle")),
            timeout=float(server.get("timeout_seconds", 60)),
            allow_plain_http=bool(server.get("allow_plain_http", False)),
            request_deadline=float(server.get("request_deadline_seconds", defaults.request_deadline)),
            max_response_bytes=int(
                float(server.get("max_response_mb", defaults.max_response_bytes / MIB)) * MIB
            ),
            max_pages=int(server.get("max_pages", defaults.max_pages)),
            throttle_budget=float(server.get("throttle_budget_seconds", defaults.throttle_budget)),
            concurrency=int(server.get("concurrency", defaults.concurrency)),
            max_rps=float(server["max_rps"]) if "max_rps" in server else None,
            names=SITE_NAMES,
        ),
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
        raw=raw,
    )
