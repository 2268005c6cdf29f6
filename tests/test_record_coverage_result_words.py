"""Qualitative result words are data (mappings/concepts.toml result-indeterminate / -negative / -positive),
extendable by the overlay; indeterminate words win, then negatives ("non-reactive" contains "reactive"),
then positives; a word in no list stays unknown and the reason quotes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fhirdata import (
    ANTI_HCV,
    HBSAG,
    SCT,
    baseline,
    cc,
    coded_result,
    observation,
    reason,
    screen,
    verdict,
    without,
)

from fhir_adapter.config.loader import load_mappings

V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

POSITIVE = [
    "Positive",
    "POSITIVE",
    "pos",
    "POS.",
    "+",
    "++",
    "+++",
    "阳性",
    "阳性(+)",
    "（+）",
    "Reactive",
    "Detected",
    "检出",
    "阳",
]
NEGATIVE = [
    "Negative", "NEG", "neg.", "-", "阴性", "阴性(-)", "（-）", "Non-reactive", "non reactive", "Nonreactive",
    "Not detected", "undetected", "未检出", "NR", "阴", "无反应性",
]  # fmt: skip
INDETERMINATE = [
    "Weakly reactive", "weakly positive", "Weak positive", "弱阳性", "±", "+/-", "(±)", "Equivocal", "Borderline",
    "Indeterminate", "inconclusive", "grey zone", "可疑", "灰区", "Negative (equivocal on repeat)",
]  # fmt: skip
UNRECOGNISED = ["see comment", "QNS", "pending", "1+ maybe", "positive control failed?"]


def _hbsag(value: str) -> tuple[str, str]:
    result = screen(*without(baseline(), HBSAG), observation(HBSAG, value))
    return verdict(result, "hepatitis-serology"), reason(result, "hepatitis-serology")


@pytest.mark.parametrize("word", POSITIVE)
def test_positive_words_and_symbols(word: str) -> None:
    assert _hbsag(word)[0] == "met"


@pytest.mark.parametrize("word", NEGATIVE)
def test_negative_words_and_symbols_win_over_the_positive_inside_them(word: str) -> None:
    assert _hbsag(word)[0] == "not-met"


@pytest.mark.parametrize("word", INDETERMINATE)
def test_indeterminate_and_weak_results_are_unknown_for_review(word: str) -> None:
    got, why = _hbsag(word)
    assert got == "unknown" and "indeterminate: needs review" in why and repr(word)[1:-1] in why


@pytest.mark.parametrize("word", UNRECOGNISED)
def test_an_unknown_word_stays_unknown_and_the_reason_quotes_it(word: str) -> None:
    got, why = _hbsag(word)
    # "positive control failed?" holds "positive": a substring list decides it; the others are unknown.
    if "positive" in word:
        assert got == "met"
        return
    assert got == "unknown" and f"'{word}'" in why and "unrecognised result word" in why


def test_symbols_are_whole_result_only() -> None:
    assert _hbsag("HBsAg - see comment")[0] == "unknown"  # "-" inside text is not "negative"
    assert _hbsag("possible")[0] == "unknown"  # "pos" only as the whole result


@pytest.mark.parametrize(
    ("code", "expected"),
    [("IND", "unknown"), ("E", "unknown"), ("WR", "unknown"), ("NR", "not-met"), ("RR", "met")],
)
def test_coded_values_and_interpretations(code: str, expected: str) -> None:
    coded = coded_result(HBSAG, V3, code, code)
    assert verdict(screen(*without(baseline(), HBSAG), coded), "hepatitis-serology") == expected
    interpreted = observation(HBSAG, 0.5, "[IU]/mL", interpretation=[cc(V3, code)])
    assert verdict(screen(*without(baseline(), HBSAG), interpreted), "hepatitis-serology") == expected


def test_snomed_equivocal_is_unknown() -> None:
    coded = coded_result(ANTI_HCV, SCT, "42425007", "Equivocal")
    result = screen(*without(baseline(), ANTI_HCV), coded)
    assert verdict(result, "hepatitis-serology") == "unknown"


def test_the_site_overlay_adds_words(tmp_path: Path) -> None:
    overlay = tmp_path / "site.toml"
    overlay.write_text(
        '[concepts.result-negative]\ntext_exact = ["n", "ng"]\n'
        '[concepts.result-indeterminate]\ntext = ["grey area"]\n',
        encoding="utf-8",
    )
    site = load_mappings(overlays=[overlay])
    assert (
        verdict(
            screen(*without(baseline(), HBSAG), observation(HBSAG, "N"), mappings=site), "hepatitis-serology"
        )
        == "not-met"
    )
    assert _hbsag("N")[0] == "unknown"  # without the overlay
    grey = observation(HBSAG, "positive (grey area)")
    assert (
        verdict(screen(*without(baseline(), HBSAG), grey, mappings=site), "hepatitis-serology") == "unknown"
    )
