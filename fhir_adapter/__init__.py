"""fhir-adapter: prescreen FHIR patients for clinical trials whose criteria are data (mappings/)."""

# The one place the version is written: pyproject.toml reads it (``dynamic = ["version"]``).
__version__ = "0.2.0"

__all__ = ["__version__"]
