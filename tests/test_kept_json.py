"""JSON the adapter keeps (spooled rows re-serialised from Bundles, the concept matcher's cache keys) holds
its own length, not the 4 KB buffer ``orjson.dumps`` returns whatever the length.

Before this was fixed, a-8000 read as one Bundle per patient peaked at 474 MB at one worker (the memory
spool counts 64 MB of row bodies; each held 4 KB); with it, 124 MB (docs/NOTES.md)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import orjson
from fhirdata import default_mappings

from fhir_adapter.facts.codes import ConceptMatcher
from fhir_adapter.facts.fhirjson import kept
from fhir_adapter.source.grouping import Row
from fhir_adapter.source.reader import Item
from fhir_adapter.source.routing import take

_SMALL = {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"}}


def _retained(make: Callable[[], Any], times: int = 200) -> float:
    """Bytes still allocated per call while the results are kept."""
    kept = []
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept.extend(make() for _ in range(times))
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert kept
    return (after - before) / times


def test_orjson_dumps_alone_keeps_a_buffer_much_larger_than_its_json() -> None:
    # The premise of the fix: if orjson ever trims its result, kept() is only a copy too many.
    assert _retained(lambda: orjson.dumps(_SMALL)) > 2000


def test_kept_json_holds_about_its_own_length() -> None:
    assert kept(orjson.dumps(_SMALL)) == orjson.dumps(_SMALL)
    assert _retained(lambda: kept(orjson.dumps(_SMALL))) < 300


def test_a_row_rewritten_from_a_bundle_entry_holds_about_its_own_length() -> None:
    def row() -> Row:
        kind, pid, value = take(Item(dict(_SMALL), "bundle.json", None), None)
        assert (kind, pid) == ("resource", "p1") and isinstance(value, Row)
        return value

    assert orjson.loads(row().body) == _SMALL
    assert _retained(row) < 600


def test_the_concept_matchers_cache_keys_hold_about_their_own_length() -> None:
    matcher = ConceptMatcher(default_mappings().concepts)
    codes = iter(range(10_000))

    def lookup() -> frozenset[str]:
        return matcher.concepts_of(
            {"coding": [{"system": "http://example.org/local", "code": str(next(codes))}]}
        )

    assert lookup() == frozenset()
    assert _retained(lookup) < 1500  # the key, its frozenset and the dict's slot; not 4 KB more
