"""Configuration files a fuzzing pass found mishandled (one test per finding, each failing on the code
before its mend): a bad mappings, overlay, criteria or site file is exit 2 naming the file (and the key),
never a hang, never exit 70, and a number that cannot mean anything is refused, not screened with."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fhirdata import DM_GATE_TRIAL as TRIAL
from fhirdata import REPO

from fhir_adapter.cli import main

EXAMPLES = REPO / "examples" / "patients"


def _screen(tmp_path: Path, *args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(
            ["screen", str(EXAMPLES), "--as-of", "2026-06-15", "--out", str(tmp_path / "r.json"), *args]
        )
    return code, err.getvalue()


def _file(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("option", ["--mappings", "--trial"])
def test_a_file_that_is_not_utf8_is_a_usage_error_naming_it(tmp_path: Path, option: str) -> None:
    path = _file(tmp_path, "latin1.toml", b'[concepts.dermatomyositis]\ntext = ["derm\xe9"]\n')
    code, err = _screen(tmp_path, option, str(path))
    assert code == 2, err
    assert f"{path}: not UTF-8" in err


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """In a process of its own: what is tested is that it ends."""
    return subprocess.run(
        [sys.executable, "-m", "fhir_adapter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("option", ["--mappings", "--trial"])
def test_a_fifo_given_as_a_mappings_file_is_refused_not_waited_on(tmp_path: Path, option: str) -> None:
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    done = _cli(
        "screen", str(EXAMPLES), "--as-of", "2026-06-15", "--out", str(tmp_path / "r.json"), option, str(fifo)
    )
    assert done.returncode == 2, done.stderr
    assert "not a regular file (a FIFO)" in done.stderr


@pytest.mark.parametrize("kind", ["fifo", "folder", "latin1"])
def test_a_site_file_that_cannot_be_read_as_toml_is_a_usage_error(tmp_path: Path, kind: str) -> None:
    site = tmp_path / "site.toml"
    if kind == "fifo":
        os.mkfifo(site)
    elif kind == "folder":
        site.mkdir()
    else:
        site.write_bytes(b'[server]\nurl = "http://h\xe9/fhir"\n')
    done = _cli("sync", "--config", str(site), "--dry-run")
    assert done.returncode == 2, done.stderr
    assert str(site) in done.stderr and "internal error" not in done.stderr


def test_a_rule_nested_deeper_than_the_validator_goes_is_a_usage_error(tmp_path: Path) -> None:
    rule = '{verdict = "not-evaluable"}'
    for _ in range(150):
        rule = f"{{all = [{rule}]}}"
    trial = _file(
        tmp_path, "deep.toml", TRIAL + f'[[criteria]]\nid = "x"\ntype = "inclusion"\nrule = {rule}\n'
    )
    code, err = _screen(tmp_path, "--trial", str(trial))
    assert code == 2, err
    assert f"{trial}: nested too deeply" in err


@pytest.mark.parametrize("value", ["nan", "inf", '"NaN"', '"Infinity"', "1e308"])
def test_a_threshold_that_is_no_finite_number_is_refused_at_load(tmp_path: Path, value: str) -> None:
    trial = _file(
        tmp_path,
        "t.toml",
        TRIAL
        + f'[[criteria]]\nid = "x"\ntype = "inclusion"\nrule = {{ fact = "age", op = ">=", value = {value} }}\n',
    )
    code, err = _screen(tmp_path, "--trial", str(trial))
    assert code == 2, err
    assert str(trial) in err and "criteria" in err


@pytest.mark.parametrize("uln", ["0", '"0"', "-40", "nan", "1e-40"])
def test_an_upper_limit_of_normal_that_is_not_above_zero_is_refused(tmp_path: Path, uln: str) -> None:
    overlay = _file(tmp_path, "o.toml", f"[facts.alt-x-uln]\nuln = {{ male = 50, female = {uln} }}\n")
    code, err = _screen(tmp_path, "--mappings", str(overlay))
    assert code == 2, err
    assert f"{overlay}" in err and "alt-x-uln" in err


@pytest.mark.parametrize("factor", ["0", "-0.1", "nan", "inf"])
def test_a_unit_conversion_factor_that_is_not_above_zero_is_refused(tmp_path: Path, factor: str) -> None:
    overlay = _file(
        tmp_path, "o.toml", f'[[units.conversions]]\nfrom = "g/L"\nto = "dg/L"\nfactor = {factor}\n'
    )
    code, err = _screen(tmp_path, "--mappings", str(overlay))
    assert code == 2, err
    assert "conversions" in err and "factor" in err


def test_a_unit_conversion_for_an_unknown_concept_is_refused_naming_the_overlay(tmp_path: Path) -> None:
    overlay = _file(
        tmp_path,
        "o.toml",
        '[[units.conversions]]\nfrom = "mg/dL"\nto = "g/L"\nfactor = 1\nconcepts = ["nosuch"]\n',
    )
    code, err = _screen(tmp_path, "--mappings", str(overlay))
    assert code == 2, err
    assert f"{overlay}: units.conversions (mg/dL -> g/L).concepts: unknown concept 'nosuch'" in err


def test_a_component_id_given_twice_is_refused(tmp_path: Path) -> None:
    trial = _file(
        tmp_path,
        "t.toml",
        TRIAL
        + '[[criteria]]\nid = "x"\ntype = "inclusion"\nrule = { component = "a" }\n'
        + '[[criteria.components]]\nid = "a"\nrule = { fact = "age", op = ">", value = 100 }\n'
        + '[[criteria.components]]\nid = "a"\nrule = { fact = "age", op = ">", value = 1 }\n',
    )
    code, err = _screen(tmp_path, "--trial", str(trial))
    assert code == 2, err
    assert "duplicate component id a" in err


def test_an_overlays_window_replaces_the_shipped_one_whatever_its_unit(tmp_path: Path) -> None:
    overlay = _file(tmp_path, "o.toml", "[facts.iv-antibacterial]\nwindow_days = 10\n")
    code, err = _screen(tmp_path, "--mappings", str(overlay))
    assert code == 0, err
    text = (tmp_path / "r.json").read_text(encoding="utf-8")
    assert "2026-06-05..2026-06-15" in text and "2026-04-15..2026-06-15" not in text


def test_a_fact_with_two_windows_is_refused(tmp_path: Path) -> None:
    trial = _file(
        tmp_path,
        "t.toml",
        TRIAL + '[facts.my-hb]\nkind = "measurement"\nconcept = "hemoglobin"\nunit = "g/L"\n'
        "window_days = 30\nwindow_months = 2\n",
    )
    code, err = _screen(tmp_path, "--trial", str(trial))
    assert code == 2, err
    assert "window_days and window_months: one window only" in err


@pytest.mark.parametrize(
    ("key", "value"), [("max_response_mb", "inf"), ("max_response_mb", "nan"), ("max_rps", "nan")]
)
def test_a_site_number_that_is_not_finite_is_a_usage_error_naming_the_key(
    tmp_path: Path, key: str, value: str
) -> None:
    site = _file(
        tmp_path,
        "site.toml",
        f'[server]\nurl = "http://127.0.0.1:9/fhir"\n{key} = {value}\n[study]\nas_of = "2026-06-15"\n'
        f'[state]\npath = "{tmp_path}/state.sqlite"\n',
    )
    done = _cli("sync", "--config", str(site), "--dry-run")
    assert done.returncode == 2, done.stderr
    assert f"server.{key}: {value} is not a finite number" in done.stderr
