"""Find the values of concepts in clinical text with the rules of ``mappings/notes.toml``.

Linear in the length of the text: each rule phrase is located with ``str.find`` (left to right, never
re-scanning), and every occurrence costs a bounded amount of work (at most ``_WINDOW`` characters after
the phrase are looked at for its number, at most ``_CLAUSE`` on either side for a negation). The only
regular expression is the number itself, with bounded repetitions and no alternation; nothing in the
rules is compiled to a pattern, so a site's overlay cannot make it backtrack.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from fhir_adapter.config.types import NoteRule, NoteSettings, NoteShape

_NUMBER = re.compile(r"\d{1,4}(?:\.\d{1,3})?")
_SEPARATORS = frozenset(" \t\u00a0\u3000:：=()（）[]【】")
_SPACES = frozenset(" \t\u00a0\u3000")
_CLAUSE_ENDS = frozenset(",，;；。!！?？|\n\r")
_SENTENCE_ENDS = frozenset("。!！?？\n\r")
_WINDOW = 48  # characters after a phrase in which its number must start
_CLAUSE = 80  # characters looked at on either side for a negation
_MAX_CONNECTORS = 4
_MATCH_CHARS = 80


@dataclass(frozen=True, slots=True)
class Found:
    concept: str
    value: Decimal
    written: str  # the number as written
    unit: str
    match: str  # phrase to the end of the shape: "MMT-8: 118/150"
    sentence: str


def lowered(text: str) -> str:
    """``text.lower()`` with the same length, so an index into it is an index into ``text``."""
    low = text.lower()
    return low if len(low) == len(text) else "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def scan(text: str, rules: Iterable[NoteRule], settings: NoteSettings) -> list[Found]:
    """Every value the rules find in ``text``, in the order of the text (one per number)."""
    text = text[: settings.max_text_chars]
    low = lowered(text)
    found: dict[tuple[str, int], tuple[int, Found]] = {}
    for rule in rules:
        # Longest phrase first: "HAQ-DI 0.75" is read through "HAQ-DI", and "HAQ" at the same place adds nothing.
        for phrase in sorted(rule.phrases, key=len, reverse=True):
            start = 0
            while True:
                at = low.find(phrase, start)
                if at < 0:
                    break
                start = at + 1
                end = at + len(phrase)
                if not _stands_alone(low, at, end):
                    continue
                hit = _value_after(low, end, rule, settings)
                if hit is None:
                    continue
                number_at, number_end, value, shape, stop = hit
                key = (rule.concept, number_at)
                if key in found or _negated(low, at, stop, settings.negations):
                    continue
                found[key] = (
                    at,
                    Found(
                        concept=rule.concept,
                        value=value,
                        written=text[number_at:number_end],
                        unit=shape.unit,
                        match=_squash(text[at:stop])[:_MATCH_CHARS],
                        sentence=_sentence(text, at, stop, settings.max_sentence_chars),
                    ),
                )
    return [f for _, f in sorted(found.values(), key=lambda t: t[0])]


def _is_word(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _stands_alone(low: str, start: int, end: int) -> bool:
    """A phrase that begins or ends with an ASCII letter or digit must not touch another one there."""
    if _is_word(low[start]) and start > 0 and _is_word(low[start - 1]):
        return False
    return not (_is_word(low[end - 1]) and end < len(low) and _is_word(low[end]))


def _value_after(
    low: str, pos: int, rule: NoteRule, settings: NoteSettings
) -> tuple[int, int, Decimal, NoteShape, int] | None:
    limit = min(len(low), pos + _WINDOW)
    connectors = 0
    while pos < limit:
        if low[pos] in _SEPARATORS:
            pos += 1
            continue
        word = _connector_at(low, pos, settings.connectors)
        if word is None or connectors >= _MAX_CONNECTORS:
            break
        pos += len(word)
        connectors += 1
    number = _NUMBER.match(low, pos, min(len(low), pos + 8))
    if number is None or pos >= limit:
        return None
    number_end = number.end()
    value = Decimal(number.group(0))
    for shape in rule.shapes:
        stop = _after(low, number_end, shape.after)
        if stop is None or value > shape.max or _continues(low, stop):
            continue
        return number.start(), number_end, value, shape, stop
    return None


def _connector_at(low: str, pos: int, connectors: tuple[str, ...]) -> str | None:
    for word in connectors:  # longest first
        if low.startswith(word, pos):
            end = pos + len(word)
            if _is_word(word[-1]) and end < len(low) and _is_word(low[end]):
                continue  # "is" inside "isolated"
            return word
    return None


def _skip_spaces(low: str, pos: int, most: int = 2) -> int:
    while most and pos < len(low) and low[pos] in _SPACES:
        pos += 1
        most -= 1
    return pos


def _after(low: str, pos: int, after: str) -> int | None:
    """End of ``after`` written at ``pos`` (a space or two allowed before each of its characters)."""
    for ch in after:
        pos = _skip_spaces(low, pos)
        if pos >= len(low) or low[pos] != ch:
            return None
        pos += 1
    return pos


def _digit(low: str, pos: int) -> bool:
    return pos < len(low) and "0" <= low[pos] <= "9"


def _continues(low: str, stop: int) -> bool:
    """The number goes on: another number, a scale ("/80"), a date ("-06-01", "/10/2026", ".06"), a time,
    or a decimal comma ("1,25" is not 1)."""
    if stop < len(low) and low[stop] in ".:-," and _digit(low, stop + 1):
        return True
    pos = _skip_spaces(low, stop)
    if _digit(low, pos):
        return True
    return pos < len(low) and low[pos] == "/" and _digit(low, _skip_spaces(low, pos + 1))


def _clause_bounds(low: str, start: int, stop: int) -> tuple[int, int]:
    a = start
    while a > 0 and start - a < _CLAUSE and not _ends_clause(low, a - 1):
        a -= 1
    b = stop
    while b < len(low) and b - stop < _CLAUSE and not _ends_clause(low, b):
        b += 1
    return a, b


def _ends_clause(low: str, pos: int) -> bool:
    ch = low[pos]
    return ch in _CLAUSE_ENDS or (ch == "." and not _digit(low, pos + 1))


def _negated(low: str, start: int, stop: int, negations: tuple[str, ...]) -> bool:
    a, b = _clause_bounds(low, start, stop)
    clause = low[a:b]
    for word in negations:
        at = clause.find(word)
        while at >= 0:
            if _stands_alone(clause, at, at + len(word)):
                return True
            at = clause.find(word, at + 1)
    return False


def _sentence(text: str, start: int, stop: int, most: int) -> str:
    """The sentence around ``text[start:stop]``, cut to about ``most`` characters around the match ("…"
    marks a cut)."""
    half = max(0, (most - (stop - start)) // 2)
    a = start
    while a > 0 and start - a < half and not _sentence_end(text, a - 1):
        a -= 1
    b = stop
    while b < len(text) and b - stop < half and not _sentence_end(text, b):
        b += 1
    if b < len(text) and _sentence_end(text, b) and not text[b].isspace():
        b += 1  # keep the full stop
    cut_left = a > 0 and not _sentence_end(text, a - 1)
    cut_right = b < len(text) and not _sentence_end(text, b - 1) and not _sentence_end(text, b)
    out = ("…" if cut_left else "") + _squash(text[a:b]) + ("…" if cut_right else "")
    return out[: most + 2]


def _sentence_end(text: str, pos: int) -> bool:
    """A sentence ends at a line end, "。", "!", "?", or a full stop followed by a space or the end (not
    the point of "0.75")."""
    ch = text[pos]
    if ch in _SENTENCE_ENDS:
        return True
    return ch == "." and (pos + 1 == len(text) or text[pos + 1].isspace())


def _squash(text: str) -> str:
    return " ".join(text.split())
