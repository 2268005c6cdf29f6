"""Resolve secret references (``env:NAME`` or ``file:/path``) to their values.

Secrets never come from the command line or a config literal: both end up in shell history, process
listings, backups and code review. A reference names where the secret lives instead, so the config
file itself can be shared and committed.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from fhir_adapter.errors import ConfigError

logger = logging.getLogger(__name__)

_ENV = "env:"
_FILE = "file:"


def resolve_secret(ref: str, *, setting: str = "secret") -> str:
    """Return the secret that ``ref`` points to.

    ``setting`` names the configuration key in error messages, so the operator knows what to fix.
    Messages never repeat ``ref`` itself unless it is a well-formed reference: a malformed one is
    most likely the secret pasted in by mistake.
    """
    if ref.startswith(_ENV):
        return _from_env(ref[len(_ENV) :], setting)
    if ref.startswith(_FILE):
        return _from_file(ref[len(_FILE) :], setting)
    raise ConfigError(
        f"{setting}: must be a secret reference 'env:NAME' or 'file:/path'; literal secrets are refused "
        "(they leak through shell history, process lists and config backups)"
    )


def _from_env(name: str, setting: str) -> str:
    if not name:
        raise ConfigError(f"{setting}: 'env:' needs a variable name")
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(f"{setting}: environment variable {name} is not set")
    value = value.rstrip("\r\n")
    if not value:
        raise ConfigError(f"{setting}: environment variable {name} is empty")
    return value


def _from_file(raw_path: str, setting: str) -> str:
    if not raw_path:
        raise ConfigError(f"{setting}: 'file:' needs a path")
    path = Path(raw_path).expanduser()
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{setting}: cannot read secret file {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{setting}: secret file {path} is not UTF-8 text") from None
    if mode & stat.S_IROTH:
        # Warn rather than refuse: containers and mounted secret volumes often get 0644 and the
        # operator may not control that; refusing would block a run for a hygiene issue.
        logger.warning("%s: secret file %s is world-readable; chmod o-r it", setting, path)
    # Editors and `echo >` add a trailing newline that is never part of the secret.
    value = text.rstrip("\r\n")
    if not value:
        raise ConfigError(f"{setting}: secret file {path} is empty")
    return value
