"""A real package: every subpackage and the data folders ship in the wheel, and the installed wheel (not
the editable checkout) screens the examples from another working directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from fhir_adapter import __version__

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_package_list_names_every_subpackage() -> None:
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "fhir_adapter").rglob("__init__.py")
    }
    data = {"fhir_adapter._mappings", "fhir_adapter._mappings.criteria", "fhir_adapter._profiles"}
    assert declared == on_disk | data


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=out,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (found,) = out.glob("fhir_adapter-*.whl")
    return found


def test_the_wheel_carries_the_mappings_and_profiles(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (REPO / "mappings").rglob("*.toml"):
        assert f"fhir_adapter/_mappings/{path.relative_to(REPO / 'mappings')}" in names
    for path in (REPO / "profiles").glob("*.json"):
        assert f"fhir_adapter/_profiles/{path.name}" in names
    assert "fhir_adapter/spark/log4j2.properties" in names  # the Spark engine's quiet local logging
    assert wheel.name == f"fhir_adapter-{__version__}-py3-none-any.whl"  # one version, in one place


def test_the_installed_wheel_screens_the_examples_from_another_directory(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The installed copy comes first on the path; the checkout's editable finder is only a fallback.
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("FHIR_ADAPTER_MAPPINGS", None)
    env.pop("FHIR_ADAPTER_PROFILES", None)
    where = subprocess.run(
        [sys.executable, "-c", "import fhir_adapter.data_files as d; print(d.mappings_dir())"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        check=True,
    )
    assert Path(where.stdout.strip()) == site / "fhir_adapter" / "_mappings"
    for trial in ("NCT05495321", "NCT02728752"):
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "fhir_adapter",
                "screen",
                str(REPO / "examples" / "patients"),
                "--trial",
                trial,
                "--as-of",
                "2026-06-15",
                "--out",
                "result.json",
            ],
            capture_output=True,
            text=True,
            cwd=elsewhere,
            env=env,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        result = json.loads((elsewhere / "result.json").read_text(encoding="utf-8"))
        assert result["study"] == trial and len(result["subjects"]) == 28
