"""Patients no gate admits (stubs) with the same counts are screened once: the reused result must be
exactly what screening the next patient would give, its patient and evidence references included."""

from __future__ import annotations

import datetime as dt

from fhir_adapter.config.loader import load_trials
from fhir_adapter.pipeline import _StubResults
from fhir_adapter.screening import Screener
from fhir_adapter.source.grouping import RawRecord
from fhir_adapter.workers import evaluate


def _screener() -> Screener:
    return Screener(load_trials((), (), None), dt.date(2026, 6, 15))


def test_a_reused_stub_result_is_what_screening_that_patient_gives() -> None:
    screener = _screener()
    stubs = _StubResults()
    first = stubs.evaluate(RawRecord("p1", (), {"Condition": 2}), screener)
    second = stubs.evaluate(RawRecord("p2", (), {"Condition": 2}), screener)
    fresh = evaluate(RawRecord("p2", (), {"Condition": 2}), screener, lambda key: None)
    assert second == fresh
    assert first.results != second.results  # the patient differs, so the cache had work to do
    assert "Patient/p1" not in repr(second)


def test_stubs_with_other_counts_are_screened_on_their_own() -> None:
    screener = _screener()
    stubs = _StubResults()
    stubs.evaluate(RawRecord("p1", (), {"Condition": 2}), screener)
    other = stubs.evaluate(RawRecord("p2", (), {"Condition": 0}), screener)
    assert other == evaluate(RawRecord("p2", (), {"Condition": 0}), screener, lambda key: None)
