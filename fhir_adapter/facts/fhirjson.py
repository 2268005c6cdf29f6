"""Pure helpers over FHIR JSON: statuses, codings, dates, references. No clinical meaning here."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from fhir_adapter.model import Resource

IGNORED_STATUSES = frozenset({"entered-in-error", "cancelled"})
_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
_DATES: dict[str, dt.date | None] = {}
_DATES_LIMIT = 100_000


def kept(data: bytes) -> bytes:
    """``orjson.dumps``'s result, for keeping (a cache key, a spooled row): orjson hands back its whole
    4 KB write buffer whatever the length, so a kept 100-byte result would hold 4 KB. A copy of the
    exact length."""
    return bytes(memoryview(data))


def status_of(resource: Resource, key: str = "status") -> str:
    """The status code trimmed and lower-cased (vendors send ``"entered-in-error "``)."""
    value = resource.get(key)
    return value.strip().lower() if isinstance(value, str) else ""


def is_ignored(resource: Resource) -> bool:
    return status_of(resource) in IGNORED_STATUSES


def codings(concept: Any) -> Iterator[tuple[str, str, str]]:
    """(system, code, display) of every coding in a CodeableConcept, whitespace-trimmed."""
    if not isinstance(concept, dict):
        return
    found = concept.get("coding")
    for coding in found if isinstance(found, list) else ():
        if not isinstance(coding, dict):
            continue
        system = coding.get("system")
        code = coding.get("code")
        display = coding.get("display")
        yield (
            system.strip().replace(" ", "") if isinstance(system, str) else "",
            code.strip() if isinstance(code, str) else "",
            display.strip() if isinstance(display, str) else "",
        )


def texts(concept: Any) -> list[str]:
    """code.text and every coding.display: the last-resort text to match."""
    if not isinstance(concept, dict):
        return []
    out = [d for _, _, d in codings(concept) if d]
    text = concept.get("text")
    if isinstance(text, str) and text.strip():
        out.append(text.strip())
    return out


def concept_code(concept: Any) -> str:
    """First code of a CodeableConcept (for status-like concepts: clinicalStatus, class)."""
    for _, code, _ in codings(concept):
        if code:
            return code.lower()
    return ""


def parse_date(value: Any) -> dt.date | None:
    """The calendar date of a FHIR date/dateTime/instant; partial dates take their first day.

    Time zones are ignored on purpose: windows are counted in calendar days at the site.
    """
    if not isinstance(value, str):
        return None
    # The pattern reads at most the first 10 characters, so they are the whole key: one entry per distinct
    # day (and per malformed prefix), and a record's thousands of dates are mostly repeats.
    key = value.strip()[:10]
    try:
        return _DATES[key]
    except KeyError:
        pass
    if len(_DATES) >= _DATES_LIMIT:
        _DATES.clear()
    found = _DATES[key] = _parse_day(key)
    return found


def _parse_day(text: str) -> dt.date | None:
    m = _DATE_RE.match(text)
    if not m:
        return None
    try:
        return dt.date(int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1))
    except ValueError:
        return None


# What ``instant`` gives a date or an unparseable value: before every real instant.
UNKNOWN_INSTANT = dt.datetime(1, 1, 1, tzinfo=dt.UTC)


def instant(value: Any) -> dt.datetime:
    """A dateTime as an aware UTC instant for ordering; dates and unparseable values sort first."""
    if not isinstance(value, str) or "T" not in value:
        return UNKNOWN_INSTANT
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return UNKNOWN_INSTANT
    # A time without a zone is local to the source; UTC is as good a guess as any for ordering only.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def effective_instant(resource: Resource) -> dt.datetime:
    for key in ("effectiveDateTime", "effectiveInstant"):
        if key in resource:
            return instant(resource.get(key))
    period = resource.get("effectivePeriod")
    if isinstance(period, dict):
        return instant(period.get("end") or period.get("start"))
    return instant(resource.get("issued"))


def period_bounds(period: Any) -> tuple[dt.date | None, dt.date | None]:
    if not isinstance(period, dict):
        return None, None
    return parse_date(period.get("start")), parse_date(period.get("end"))


def effective_date(resource: Resource) -> dt.date | None:
    """When an observation holds: effectiveDateTime, else the period's end (or start), else issued."""
    for key in ("effectiveDateTime", "effectiveInstant"):
        d = parse_date(resource.get(key))
        if d:
            return d
    start, end = period_bounds(resource.get("effectivePeriod"))
    if end or start:
        return end or start
    return parse_date(resource.get("issued"))


def ref_id(reference: Any) -> str | None:
    """``Type/id`` of a Reference-ish value (dict or string); absolute URLs reduced to the last two parts."""
    if isinstance(reference, dict):
        reference = reference.get("reference")
    if not isinstance(reference, str) or not reference.strip():
        return None
    ref = reference.strip()
    if ref.startswith(("urn:uuid:", "urn:oid:", "#")):
        return ref
    ref = ref.split("/_history/")[0]
    parts = [p for p in ref.split("?")[0].split("/") if p]
    if len(parts) >= 2:
        return f"{parts[-2]}/{parts[-1]}"
    return None


def reference_label(resource: Resource) -> str:
    """``Type/id`` used in evidence."""
    return f"{resource.get('resourceType', 'Resource')}/{resource.get('id', '?')}"


_SUBJECT_KEYS = ("subject", "patient")


def patient_of(resource: Resource) -> str | None:
    """Logical id of the patient a resource is about (``subject`` or ``patient``; a Patient's own id)."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) and rid else None
    for key in _SUBJECT_KEYS:
        subject = resource.get(key)
        if isinstance(subject, dict):
            # Fast path for the bulk-export form "Patient/<id>" (most of an export's resources).
            plain = subject.get("reference")
            if (
                isinstance(plain, str)
                and plain.startswith("Patient/")
                and plain.count("/") == 1
                and "?" not in plain
                and not plain[-1].isspace()
            ):
                return plain[len("Patient/") :] or None
        ref = ref_id(subject)
        if ref and ref.startswith("Patient/"):
            return ref[len("Patient/") :]
    return None


# Beyond this a number is not a lab value, a dose or a score but noise: "1e999999" must not become a
# Decimal that a later quantize() or division cannot handle.
MAX_EXPONENT = 30
# "1,280": a thousands separator (1280) or a decimal comma (1.28)? Nothing in the string says which.
_COMMA_OR_THOUSANDS = re.compile(r"[-+]?[1-9]\d{0,2},\d{3}")


def is_sane(number: Decimal) -> bool:
    """A finite number of a magnitude a measurement, a dose, a score or a threshold can have."""
    return number.is_finite() and abs(number.adjusted()) <= MAX_EXPONENT


def to_decimal(value: Any) -> Decimal | None:
    """A JSON number or numeric string as an exact Decimal; None for anything else: booleans, "NaN",
    "Infinity", or a magnitude no measurement has."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if isinstance(value, str):
        text = value.strip()
        if _COMMA_OR_THOUSANDS.fullmatch(text):
            return None
        text = text.replace(",", ".")
    else:
        text = repr(value)
    if len(text) > 64:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    if not is_sane(number):
        return None
    return number
