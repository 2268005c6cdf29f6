"""How what the adapter writes points at what it read, on the read server or on a separate one.

With one server, references stay relative (``Patient/123``) and the ResearchSubject's identifier is
``<study>:<patient id>``, as always. With a separate write target (a research FHIR server) the patient
and the evidence are not on the server that stores the ResearchSubject, so:

- the ResearchSubject refers to the patient by the read server's absolute URL
  (``https://ehr.example/fhir/Patient/123``, the default) or by a business identifier of a configured
  system (``{"type": "Patient", "identifier": {"system": ..., "value": ...}}``); a patient with no such
  identifier (or two different ones) is that patient's failed write, never a guess;
- every Provenance entity (the evidence, the patient) is the read server's absolute URL, versioned as
  read;
- the ResearchSubject's identifier, the key every run searches it by, is built from that same patient
  reference: ``<study>:<absolute patient URL>`` or ``<study>:<system>|<value>``. So a run finds the
  subject an earlier run wrote exactly as in the one-server case, and two read servers writing to one
  research server never share a key.

A business identifier is patient data (an MRN): it goes into the resources on the write server, which
is what the site chose, but never into a log line or an error message (``PatientLink.label``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from fhir_adapter.errors import WriteBackError
from fhir_adapter.model import Resource
from fhir_adapter.settings import PatientReference, WriteTarget

# FHIR search escaping (http://hl7.org/fhir/R4/search.html#escaping): a literal "," "|" "$" or "\" in a
# token value is preceded by "\".
_ESCAPED: Final = str.maketrans({"\\": "\\\\", "|": "\\|", ",": "\\,", "$": "\\$"})
# What stays unencoded in an If-None-Exist query (the server URL-decodes it): the characters the
# adapter's own identifiers use, so the one-server header is unchanged.
_QUERY_SAFE: Final = ":/|,\\$@"


class PatientNotReferable(WriteBackError):
    """The write target refers to patients by a business identifier this patient does not have (or has
    twice). The message names the identifier system and the patient's id, never a value."""


@dataclass(frozen=True, slots=True)
class PatientLink:
    """How the write server refers to one patient, and the key its ResearchSubject is found by."""

    reference: Resource  # the Reference element of ResearchSubject.individual (R4) / .subject (R5)
    key: str  # the patient part of the ResearchSubject identifier value
    label: str  # for messages: "Patient/123" (ids only, never an identifier value)
    private: bool = False  # the key holds a business identifier: keep it out of messages


@dataclass(frozen=True, slots=True)
class Referencing:
    """``read_base`` None: the read server is the write server (relative references, as always)."""

    read_base: str | None = None
    patient_reference: PatientReference = "absolute"
    identifier_system: str | None = None

    def __post_init__(self) -> None:
        if self.read_base is not None and not self.read_base.endswith("/"):
            object.__setattr__(self, "read_base", self.read_base + "/")
        if (
            self.read_base is not None
            and self.patient_reference == "identifier"
            and not self.identifier_system
        ):
            raise ValueError("patient references by identifier need an identifier system")

    @property
    def separate(self) -> bool:
        return self.read_base is not None

    def describe(self) -> str:
        """One line for the run summary: how the written resources point at the read server."""
        if self.read_base is None:
            return "references relative (one server)"
        if self.patient_reference == "identifier":
            return f"patients by identifier {self.identifier_system}, evidence as {self.read_base}Type/id"
        return f"patients and evidence as {self.read_base}Type/id"

    def resource(self, reference: str) -> str:
        """A ``Type/id[/_history/N]`` the source read, as the write server must cite it."""
        return reference if self.read_base is None else self.read_base + reference

    def patient(self, patient_ref: str, patient: Resource | None) -> PatientLink:
        """``patient_ref`` is ``Patient/123``; ``patient`` the Patient resource read (identifier mode)."""
        if self.read_base is None:
            return PatientLink({"reference": patient_ref}, patient_ref.removeprefix("Patient/"), patient_ref)
        if self.patient_reference == "absolute":
            url = self.read_base + patient_ref
            return PatientLink({"reference": url}, url, patient_ref)
        system = self.identifier_system
        assert system is not None
        value = business_identifier(patient, system, patient_ref)
        return PatientLink(
            {"type": "Patient", "identifier": {"system": system, "value": value}},
            f"{system}|{value}",
            patient_ref,
            private=True,
        )


LOCAL: Final = Referencing()


def referencing(read_base: str, write_base: str, target: WriteTarget | None) -> Referencing:
    """The referencing of a run reading ``read_base`` and writing ``write_base`` (both normalised base
    URLs). A write target at the read server's own base (other credentials, same server) is one
    server: references stay relative."""
    if target is None or write_base == read_base:
        return LOCAL
    return Referencing(read_base, target.patient_reference, target.identifier_system)


def business_identifier(patient: Resource | None, system: str, patient_ref: str) -> str:
    """The value of the patient's identifier of ``system``: exactly one distinct value among those not
    marked ``use = old``, else :class:`PatientNotReferable`."""
    if patient is None:
        raise PatientNotReferable(
            f"{patient_ref}: the Patient resource was not read, so its {system} identifier is unknown; "
            "not written"
        )
    identifiers = patient.get("identifier")
    values: set[str] = {
        i["value"]
        for i in (identifiers if isinstance(identifiers, list) else [])
        if isinstance(i, dict)
        and i.get("system") == system
        and isinstance(i.get("value"), str)
        and i["value"].strip()
        and i.get("use") != "old"
    }
    if not values:
        raise PatientNotReferable(
            f"{patient_ref} has no identifier with system {system}, by which the write server refers to "
            "patients: not written (add the identifier in the EHR, or choose another system)"
        )
    if len(values) > 1:
        raise PatientNotReferable(
            f"{patient_ref} has {len(values)} different identifiers with system {system}: not written "
            "(which one is the patient's is a person's decision)"
        )
    return values.pop()


def subject_token(system: str, value: str) -> str:
    """``system|value`` for a token search, the value escaped (an MRN may hold "," or "|")."""
    return f"{system}|{value.translate(_ESCAPED)}"


def identifier_condition(token: str) -> str:
    """The ``If-None-Exist`` query ``identifier=<token>``, percent-encoded where a query needs it."""
    return "identifier=" + quote(token, safe=_QUERY_SAFE)
