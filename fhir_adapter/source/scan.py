"""Read a bulk NDJSON line's type and patient from its bytes, without parsing it, when that is certain.

Most lines of a hospital export belong to patients no trial can admit; parsing them only to drop them
is most of the cost of a screen. :func:`scan` returns the ``resourceType`` and the patient id of a line
whose bytes leave no doubt, and ``None`` whenever they could: then the caller parses the line as before,
so the answer never depends on how the JSON is spelled.

Why a byte scan can be exact: a backslash in JSON only ever starts an escape inside a string, and
escapes pair from the left, so overwriting every ``\\\\`` and then every ``\\"`` with two bytes no
token holds leaves a line of the same length in which every ``"`` delimits a string and every string
that held an escape is spoiled for the patterns below (their character sets exclude the filler and the
backslash). ``"subject":`` can then only be a key. The scan gives up (``None``) on a ``\\u`` escape left
after that (it could spell a key or a type), on more than one ``"resourceType"`` (contained resources,
Bundles), on a key that occurs twice, on a reference other than ``Patient/<id>`` or an absolute URL
ending in it (versions, ``urn:uuid:``, queries), and on a reference object holding nested objects. What
it returns is what :func:`fhirjson.patient_of` gives for the parsed line. Every pattern is a fixed token
with optional blanks between: linear in the line.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

_RESOURCE_TYPE: Final = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]{1,64})"')
_KEYS: Final = (
    (b'"subject"', re.compile(rb'"subject"\s*:\s*\{')),
    (b'"patient"', re.compile(rb'"patient"\s*:\s*\{')),
)
# ``Patient/<id>``, or an absolute URL ending in it: ``patient_of`` keeps a reference's last two parts.
_PATIENT_REF: Final = re.compile(
    rb'"reference"\s*:\s*"((?:https?://[A-Za-z0-9\-._~:/%@!$&\'()*+,;=]*/)?)Patient/([A-Za-z0-9\-.]{1,64})"'
)
_ID: Final = re.compile(rb"[A-Za-z0-9\-.]{1,64}")
_TYPE: Final = re.compile(rb"[A-Za-z]{1,64}")
# The compact spelling bulk servers write (HAPI, Epic, Synthea): checked with find() before any regex.
_COMPACT_START: Final = b'{"resourceType":"'
_COMPACT_SUBJECT: Final = b'"subject":{"reference":"Patient/'


class Scanned(NamedTuple):
    resource_type: str
    patient: str | None  # None for a Patient line: its own id is read by parsing (one line per patient)


def scan(line: bytes) -> Scanned | None:
    """The line's type and patient when its bytes are unambiguous; None means "parse it"."""
    if b"\\" in line or line.count(b'"resourceType"') != 1:
        return None
    fast = _compact(line)
    if fast is not None:
        return fast
    found = _RESOURCE_TYPE.search(line)
    if found is None:
        return None
    rtype = found.group(1).decode("ascii")
    if rtype == "Patient":
        return Scanned(rtype, None)
    for token, key in _KEYS:
        n = line.count(token)
        if n == 0:
            continue  # patient_of() looks at "subject", then "patient"
        if n > 1:
            return None
        opened = key.search(line)
        if opened is None:
            return None  # the token is not an object-valued key: let the parser decide
        start = opened.end()
        end = line.find(b"}", start)
        if end < 0 or b"{" in line[start:end]:
            return None
        ref = _PATIENT_REF.search(line, start, end)
        if ref is None or b"/_history/" in ref.group(1):
            return None
        return Scanned(rtype, ref.group(2).decode("ascii"))
    return None


def _compact(line: bytes) -> Scanned | None:
    """The common spelling, ``{"resourceType":"X",...,"subject":{"reference":"Patient/ID"}...``, by
    find() alone; anything else goes to the general scan (which gives the same answer, more slowly)."""
    if not line.startswith(_COMPACT_START):
        return None
    end = line.find(b'"', 17)
    if end < 0 or not _TYPE.fullmatch(line, 17, end):
        return None
    rtype = line[17:end].decode("ascii")
    if rtype == "Patient":
        return Scanned(rtype, None)
    at = line.find(_COMPACT_SUBJECT, end)
    if at < 0 or line.count(b'"subject"') != 1:
        return None
    start = at + len(_COMPACT_SUBJECT)
    close = line.find(b'"', start)
    if close < 0 or line[close + 1 : close + 2] != b"}" or not _ID.fullmatch(line, start, close):
        return None
    return Scanned(rtype, line[start:close].decode("ascii"))
