"""Where the shipped data lives: ``mappings/`` and ``profiles/``.

The repository keeps them at its top level; the wheel carries them inside the package
(``fhir_adapter/_mappings``, ``fhir_adapter/_profiles``, see ``[tool.setuptools.package-dir]``). A source
tree or an editable install has no such folders, so the top-level ones are used there.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _locate(name: str, env: str) -> Path:
    override = os.environ.get(env)
    if override:
        return Path(override)
    packaged = _PACKAGE / f"_{name}"
    return packaged if packaged.is_dir() else _PACKAGE.parent / name


def mappings_dir() -> Path:
    return _locate("mappings", "FHIR_ADAPTER_MAPPINGS")


def profiles_dir() -> Path:
    return _locate("profiles", "FHIR_ADAPTER_PROFILES")
