"""What to ask a Bulk Data server for, read off the trials: the types, the gate's ``_typeFilter``, and the
Medications a Patient- or Group-level export cannot carry.

- ``_type``: every type the trials' criteria read (``Screener.needed_types``, which has Patient and
  Medication). Patient and Group exports leave ``Medication`` out: it is not in the Patient compartment
  (HAPI refuses it, HAPI-0512) and the IG leaves its inclusion to the server; the Medications the
  exported requests reference are read one by one afterwards (:func:`fetch_medications`).
- The first pass of the two-pass plan asks only for the resources a trial's gate can admit:
  ``Condition?code=<tokens>`` (the same ``system|code`` tokens as the server's candidate search, at most
  20 per filter: several filters of one type are OR-ed) and ``Condition?code:text=<text>`` for each text
  pattern (a "starts with" match on servers, as in :mod:`fhir_adapter.source.candidates`). Every returned
  resource is checked again with the file path's matcher before its patient counts as a candidate.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Final
from urllib.parse import quote

import orjson

from fhir_adapter.client.bulk import Level
from fhir_adapter.client.bulk_files import ndjson_lines
from fhir_adapter.client.http import FhirClient
from fhir_adapter.client.urls import check_id
from fhir_adapter.errors import AuthError, ServerError
from fhir_adapter.facts.fhirjson import patient_of, ref_id
from fhir_adapter.model import InputProblem
from fhir_adapter.output.private import open_private, private_dir
from fhir_adapter.screening import Gate
from fhir_adapter.source.candidates import CODES_PER_SEARCH, search_tokens

log = logging.getLogger(__name__)

# Types whose medicationReference names a Medication resource.
MEDICATION_USERS: Final = frozenset(
    {"MedicationRequest", "MedicationAdministration", "MedicationStatement", "MedicationDispense"}
)
# The referenced Medications read after a Patient/Group export; numbered 000 so it never meets a
# manifest file's name (those start at 001) and a fresh job's clean-up removes it too.
MEDICATION_FILE: Final = "Medication.000.ndjson"
# Characters a FHIR search value may keep inside a _typeFilter (the OR comma and the token bar matter).
_SAFE: Final = ":/|,\\.-_~"


def export_types(needed: Iterable[str], level: Level) -> tuple[str, ...]:
    types = set(needed) | {"Patient"}
    if level != "system":
        types.discard("Medication")
    return tuple(sorted(types))


def gate_filters(gate: Gate) -> tuple[str, ...]:
    """``_typeFilter`` values that ask for the resources the gate can admit (empty: it admits anyone)."""
    if gate.everyone:
        return ()
    filters: list[str] = []
    for rtype, concepts in gate.selectors:
        tokens = sorted({t for c in concepts for t in search_tokens(c)})
        for start in range(0, len(tokens), CODES_PER_SEARCH):
            chunk = ",".join(tokens[start : start + CODES_PER_SEARCH])
            filters.append(f"{rtype}?code={quote(chunk, safe=_SAFE)}")
        for text in sorted({t for c in concepts for t in c.text}):
            filters.append(f"{rtype}?code:text={quote(text, safe='')}")
    return tuple(filters)


def admitted_patients(paths: Iterable[Path], gate: Gate) -> tuple[set[str], int]:
    """Patients with a resource in ``paths`` that the gate admits, and how many lines were unreadable
    (or named a patient whose id is not a FHIR id)."""
    found: set[str] = set()
    bad = 0
    for path in paths:
        for _, resource in ndjson_lines(path):
            if not isinstance(resource, dict):
                bad += 1
                continue
            pid = patient_of(resource)
            if pid is None or not gate.admits(resource):
                continue
            try:
                found.add(check_id(pid))  # it goes into a kick-off: a hostile id must not
            except ValueError:
                bad += 1
    return found, bad


def referenced_medications(paths: Iterable[Path]) -> tuple[set[str], set[str]]:
    """(ids of Medications referenced by the medication resources, ids of Medications present)."""
    wanted: set[str] = set()
    present: set[str] = set()
    for path in paths:
        for _, resource in ndjson_lines(path):
            if not isinstance(resource, dict):
                continue
            rtype = resource.get("resourceType")
            if rtype == "Medication" and isinstance(resource.get("id"), str):
                present.add(resource["id"])
            elif rtype in MEDICATION_USERS:
                ref = ref_id(resource.get("medicationReference"))
                if ref and ref.startswith("Medication/"):
                    wanted.add(ref.removeprefix("Medication/"))
    return wanted, present


def fetch_medications(
    client: FhirClient, paths: Iterable[Path], dest: Path
) -> tuple[Path | None, list[InputProblem], int]:
    """Read the referenced Medications the export does not hold into ``dest`` (NDJSON, 0600).

    Returns the file (None when nothing was needed), problems (one per Medication that could not be
    read), and the number of requests sent. A Medication the server does not have is left out, as an
    export would have left it out.
    """
    wanted, present = referenced_medications(paths)
    missing = sorted(wanted - present)
    if not missing:
        return None, [], 0
    problems: list[InputProblem] = []
    before = client.request_count
    private_dir(dest.parent)
    tmp = dest.with_name(dest.name + ".part")
    written = 0
    with _private_open(tmp) as fh:
        for mid in _valid(missing, problems, client.base_url):
            try:
                response = client.read("Medication", mid)
            except AuthError:
                raise
            except ServerError as exc:
                problems.append(
                    InputProblem(
                        client.base_url,
                        f"cannot read the Medication ({exc.status or 'no answer'})",
                        resource=f"Medication/{mid}",
                    )
                )
                continue
            if response is None or response.body is None:
                continue
            fh.write(orjson.dumps(response.body) + b"\n")
            written += 1
    tmp.replace(dest)
    log.info(
        "bulk export: read %d of %d referenced Medication(s) the export does not carry", written, len(missing)
    )
    return dest, problems, client.request_count - before


def _valid(ids: list[str], problems: list[InputProblem], where: str) -> Iterator[str]:
    for mid in ids:
        try:
            yield check_id(mid)
        except ValueError:
            problems.append(InputProblem(where, "a medicationReference is not a valid Medication id"))


def _private_open(path: Path) -> IO[bytes]:
    return os.fdopen(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb")
