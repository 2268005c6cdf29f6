"""The clinical text of a record: DocumentReference attachments and DiagnosticReport conclusions and
presented forms, as plain text, within the caps of ``[notes]``.

Nothing here fetches: an attachment is read from its ``data`` (base64), or from what a server source
fetched for its ``url`` beforehand (``PatientRecord.attachments``). Sizes are checked before work is done:
the base64 length before decoding, the decoded size, then at most ``max_text_chars`` characters are kept.
HTML is reduced to its text in one linear pass (no script or style content; block elements end a line, so
a table cell or a paragraph ends a sentence).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import datetime as dt
import html
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fhir_adapter.config.types import NoteSettings
from fhir_adapter.facts.fhirjson import effective_date, is_ignored, parse_date, period_bounds, status_of
from fhir_adapter.model import PatientRecord, Resource

log = logging.getLogger(__name__)

PLAIN_TYPES = frozenset({"text/plain", "text/markdown"})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_SKIPPED_DOCUMENTS = frozenset({"entered-in-error", "superseded"})
_BLOCKS = frozenset(
    {"p", "br", "div", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "hr"}
)
_HIDDEN = frozenset({"script", "style", "head", "title"})


@dataclass(frozen=True, slots=True)
class Document:
    """One resource's text: ``reference`` is what a suggestion cites, ``date`` when the note holds."""

    reference: str
    date: dt.date
    text: str


def documents(record: PatientRecord, settings: NoteSettings) -> Iterator[Document]:
    """Every readable, dated text of the record, in a stable order (type, then id)."""
    for doc in sorted(record.of_type("DocumentReference"), key=lambda r: str(r.get("id", ""))):
        if status_of(doc) in _SKIPPED_DOCUMENTS or status_of(doc, "docStatus") == "entered-in-error":
            continue
        date = document_date(doc)
        if date is None:
            continue
        ref = f"DocumentReference/{doc.get('id', '?')}"
        for content in _list(doc.get("content")):
            if isinstance(content, dict):
                text = attachment_text(content.get("attachment"), record, settings, ref)
                if text:
                    yield Document(ref, date, text)
    for report in sorted(record.of_type("DiagnosticReport"), key=lambda r: str(r.get("id", ""))):
        if is_ignored(report):
            continue
        date = effective_date(report)
        if date is None:
            continue
        ref = f"DiagnosticReport/{report.get('id', '?')}"
        conclusion = report.get("conclusion")
        if isinstance(conclusion, str) and conclusion.strip():
            yield Document(ref, date, conclusion[: settings.max_text_chars])
        for form in _list(report.get("presentedForm")):
            text = attachment_text(form, record, settings, ref)
            if text:
                yield Document(ref, date, text)


def document_date(doc: Resource) -> dt.date | None:
    """When a note's content holds: the period of care it documents (R5 ``period``, R4 ``context.period``:
    its end, else its start), else when the attachment was created, else when the reference was made."""
    context = doc.get("context")
    for period in (doc.get("period"), context.get("period") if isinstance(context, dict) else None):
        start, end = period_bounds(period)
        if end or start:
            return end or start
    for content in _list(doc.get("content")):
        attachment = content.get("attachment") if isinstance(content, dict) else None
        if isinstance(attachment, dict):
            created = parse_date(attachment.get("creation"))
            if created:
                return created
    return parse_date(doc.get("date"))


def attachment_text(attachment: Any, record: PatientRecord, settings: NoteSettings, ref: str) -> str | None:
    """The attachment as text, or None (not text, too large, undecodable, or a URL nobody fetched)."""
    if not isinstance(attachment, dict):
        return None
    source = attachment
    if not isinstance(attachment.get("data"), str):
        url = attachment.get("url")
        fetched = record.attachments.get(url) if isinstance(url, str) else None
        if fetched is None:
            return None
        source = {**fetched, "contentType": attachment.get("contentType") or fetched.get("contentType")}
    mime, charset = _content_type(source.get("contentType"))
    if mime not in PLAIN_TYPES and mime not in HTML_TYPES:
        return None
    raw = decode_base64(source.get("data"), settings.max_attachment_bytes)
    if raw is None:
        # Only the resource id: the attachment itself is patient data.
        log.debug("%s: attachment not read (too large or not base64)", ref)
        return None
    text = _decode(raw, charset)
    if mime in HTML_TYPES:
        text = html_text(text)
    return text[: settings.max_text_chars]


def decode_base64(data: Any, cap: int) -> bytes | None:
    """Base64 data of at most ``cap`` decoded bytes, checked on its length before decoding."""
    if not isinstance(data, str):
        return None
    limit = (cap + 2) // 3 * 4  # base64 length of ``cap`` bytes
    if len(data) > 2 * limit + 16:  # room for the line breaks of MIME-wrapped base64, nothing more
        return None
    compact = "".join(data.split())
    if len(compact) > limit:
        return None
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) <= cap else None


def _content_type(value: Any) -> tuple[str, str | None]:
    if not isinstance(value, str) or not value.strip():
        return "text/plain", None  # att-1: data needs a contentType; a missing one is read as plain text
    mime, *params = (p.strip() for p in value.split(";"))
    charset = None
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip('"').lower() or None
    return mime.lower(), charset


def _decode(raw: bytes, charset: str | None) -> str:
    if charset:
        try:
            codecs.lookup(charset)
            return raw.decode(charset, errors="replace")
        except LookupError:
            pass
    # No charset: UTF-8, else GB18030 (Chinese hospital systems), else UTF-8 with replacement characters.
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", errors="replace")


def html_text(markup: str) -> str:
    """The text of an HTML document or fragment, in one left-to-right pass (linear in its length).

    Not ``html.parser``: on Python 3.11 it is quadratic on unclosed tags (``"<a " * 20000`` takes 20 s),
    and a note is hostile input. A tag is ``<`` followed by a letter, ``/``, ``!`` or ``?`` up to the next
    ``>``; any other ``<`` is text ("CK < 200"). Comments and script/style content are dropped; block
    elements end a line; character references are resolved last (``html.unescape``, bounded).
    """
    low = _lowered(markup)
    out: list[str] = []
    i, n = 0, len(markup)
    while i < n:
        j = markup.find("<", i)
        if j < 0:
            out.append(markup[i:])
            break
        out.append(markup[i:j])
        if markup.startswith("<!--", j):
            k = markup.find("-->", j + 4)
            if k < 0:
                break  # an unclosed comment runs to the end
            i = k + 3
            continue
        following = markup[j + 1 : j + 2]
        if not (following.isascii() and (following.isalpha() or following in "/!?")):
            out.append("<")
            i = j + 1
            continue
        k = markup.find(">", j + 1)
        if k < 0:
            break  # an unclosed tag runs to the end
        name = _tag_name(low[j + 1 : min(k, j + 24)])
        i = k + 1
        if name in _HIDDEN and low[j + 1] != "/":
            close = low.find(f"</{name}", i)
            if close < 0:
                break
            end = markup.find(">", close)
            if end < 0:
                break
            i = end + 1
        elif name in _BLOCKS:
            out.append("\n")
    return html.unescape("".join(out))


def _tag_name(inside: str) -> str:
    name = inside.lstrip("/!?")
    for pos, ch in enumerate(name):
        if not ch.isalnum():
            return name[:pos]
    return name


def _lowered(text: str) -> str:
    """``text.lower()`` with the same length (a few characters lower-case to two), so indexes agree."""
    low = text.lower()
    return low if len(low) == len(text) else "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
