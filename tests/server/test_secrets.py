"""resolve_secret: env:/file: references only, trailing newline stripped, literals refused."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fhir_adapter.client.secrets import resolve_secret
from fhir_adapter.errors import ConfigError


def test_env_reference_returns_the_variable_without_trailing_newline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_SECRET", "s3cret\n")

    assert resolve_secret("env:FHIR_SECRET") == "s3cret"


def test_unset_env_variable_is_a_config_error_naming_setting_and_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FHIR_SECRET", raising=False)

    with pytest.raises(ConfigError, match="client_secret: environment variable FHIR_SECRET is not set"):
        resolve_secret("env:FHIR_SECRET", setting="client_secret")


def test_empty_env_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_SECRET", "")

    with pytest.raises(ConfigError, match="empty"):
        resolve_secret("env:FHIR_SECRET")


def test_file_reference_strips_only_the_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  tok en  \r\n")
    path.chmod(0o600)

    assert resolve_secret(f"file:{path}") == "  tok en  "


def test_file_reference_keeps_a_multi_line_pem_intact(tmp_path: Path) -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----"
    path = tmp_path / "key.pem"
    path.write_text(pem + "\n")
    path.chmod(0o600)

    assert resolve_secret(f"file:{path}") == pem


def test_world_readable_secret_file_is_used_but_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "key.pem"
    path.write_text("k\n")
    path.chmod(0o644)
    caplog.set_level(logging.WARNING, logger="fhir_adapter")

    assert resolve_secret(f"file:{path}", setting="private_key") == "k"

    assert any("world-readable" in r.getMessage() and "private_key" in r.getMessage() for r in caplog.records)


def test_private_secret_file_is_not_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "key.pem"
    path.write_text("k")
    path.chmod(0o600)
    caplog.set_level(logging.WARNING, logger="fhir_adapter")

    resolve_secret(f"file:{path}")

    assert caplog.records == []


def test_missing_file_is_a_config_error_naming_setting_and_path(tmp_path: Path) -> None:
    path = tmp_path / "absent"

    with pytest.raises(ConfigError, match=f"private_key: cannot read secret file {path}"):
        resolve_secret(f"file:{path}", setting="private_key")


def test_empty_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_text("\n")
    path.chmod(0o600)

    with pytest.raises(ConfigError, match="empty"):
        resolve_secret(f"file:{path}")


@pytest.mark.parametrize("literal", ["hunter2", "Bearer abc", "ENV:NAME", "envNAME", "/etc/secret"])
def test_literal_secret_is_refused_naming_the_setting_without_echoing_it(literal: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_secret(literal, setting="fhir.client_secret")

    message = str(caught.value)
    assert message.startswith("fhir.client_secret: ")
    assert literal not in message


@pytest.mark.parametrize("ref", ["env:", "file:"])
def test_reference_without_a_name_is_a_config_error(ref: str) -> None:
    with pytest.raises(ConfigError, match="needs a"):
        resolve_secret(ref)
