"""fhir-adapter: prescreen FHIR patients for clinical trials (first trial: NCT05495321)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fhir-adapter")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
