"""Scores in clinical text: the rules of mappings/notes.toml find what they must and nothing else, the
values are suggestions unless the site opts in per concept, notes are read only when turned on, and no
input can make the scan slow."""

from __future__ import annotations

import base64
import json
import time
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fhirdata import (
    AS_OF,
    DM,
    HAQ,
    MMT8,
    PGA,
    REPO,
    baseline,
    condition,
    criterion,
    days_ago,
    observation,
    patient,
    record,
    screen,
    without,
)

from fhir_adapter.config.loader import load_mappings
from fhir_adapter.config.types import Mappings
from fhir_adapter.errors import ConfigError
from fhir_adapter.facts.derive import context
from fhir_adapter.facts.note_scan import scan
from fhir_adapter.facts.note_text import html_text
from fhir_adapter.model import PatientRecord, Status
from fhir_adapter.screening import Screener
from fhir_adapter.writeback.resources import subject_reason

Res = dict[str, Any]
NOTES_ON = REPO / "examples" / "notes-on.toml"
NOTES_DECIDE = REPO / "examples" / "notes-decide.toml"
SCHEMA = json.loads((REPO / "profiles" / "screening-result.schema.json").read_text(encoding="utf-8"))


@cache
def notes_on() -> Mappings:
    return load_mappings(overlays=[NOTES_ON])


@cache
def notes_decide() -> Mappings:
    return load_mappings(overlays=[NOTES_DECIDE])


def found(text: str, m: Mappings | None = None) -> list[tuple[str, str, str]]:
    m = m or notes_on()
    return [(f.concept, f.written, f.unit) for f in scan(text, m.notes.rules.values(), m.notes)]


# -- per concept: what must match and what must not ------------------------------------------------------
MATCH: dict[str, list[tuple[str, str, str]]] = {
    "mmt8": [
        ("MMT-8: 118/150", "118", "{score}"),
        ("MMT8 118", "118", "{score}"),
        ("mmt-8 total score was 120.", "120", "{score}"),
        ("MMT-8 118 of 150", "118", "{score}"),
        ("MMT 8 = 99", "99", "{score}"),
        ("徒手肌力检查(MMT-8)评分118分", "118", "{score}"),
        ("manual muscle testing 135/150", "135", "{score}"),
    ],
    "pga": [
        ("PGA 4/10", "4", "cm"),
        ("PGA 40/100", "40", "mm"),
        ("patient global assessment VAS 4.5 cm", "4.5", "cm"),
        ("PtGA: 45 mm", "45", "mm"),
        ("患者总体评价VAS 4cm", "4", "cm"),
        ("患者总体评价 4厘米", "4", "cm"),
    ],
    "phga": [
        ("PhGA 3/10", "3", "cm"),
        ("MDGA 30 mm", "30", "mm"),
        ("physician global assessment (PhGA): 3/10", "3", "cm"),
        ("医生总体评价 3/10", "3", "cm"),
    ],
    "haq": [
        ("HAQ-DI 0.75", "0.75", "{score}"),
        ("HAQ 1.125", "1.125", "{score}"),
        ("HAQ-DI评分0.75分", "0.75", "{score}"),
        ("HAQ-DI: 1.5/3", "1.5", "{score}"),
    ],
    "extramuscular-vas": [
        ("extramuscular global VAS 2/10", "2", "cm"),
        ("extramuscular activity 15 mm", "15", "mm"),
        ("肌外活动 2厘米", "2", "cm"),
    ],
    "cutaneous-vas": [
        ("MDAAT cutaneous 5/10", "5", "cm"),
        ("cutaneous VAS 50/100", "50", "mm"),
        ("皮肤VAS 5cm", "5", "cm"),
    ],
}
NO_MATCH: dict[str, list[str]] = {
    "mmt8": [
        "MMT-8 not done",
        "MMT-8 2026-06-01",  # a date that looks like a score
        "MMT-8: 06/01",
        "MMT-8 on 2026-06-01: 118",
        "MMT-8 10:30",
        "MMT-8 72/80",  # the 80-point (one side) scale
        "MMT-8 72 / 80",
        "MMT-80 100",
        "MMT-8 160",  # beyond the scale
        "MMT-8 118 (not done today, from 2025)",  # negation in the clause
        "MMT-8未做",
        "declined MMT-8 118",
    ],
    "pga": ["PGA 4", "PGA 4/5", "PGA 4/10/2026", "PGA 12/10", "PGA not assessed", "PGAX 4/10", "PGA 120 mm"],
    "phga": ["PhGA 3", "PhGA 3/10/2025", "PhGA unable 3/10"],
    "haq": ["HAQ-DI 3.5", "HAQ 1,25", "HAQ-DI 1.5.2026", "HAQ-DI not done", "HAQ 06/01", "HAQ-DI 0.5 n/a"],
    "extramuscular-vas": ["extramuscular global VAS 2", "extramuscular VAS 2/10/2026"],
    "cutaneous-vas": ["cutaneous VAS 5", "cutaneous VAS 11/10", "skin VAS 5/10-2"],
}


def test_every_shipped_rule_has_must_match_and_must_not_cases() -> None:
    assert set(MATCH) == set(NO_MATCH) == set(notes_on().notes.rules)


@pytest.mark.parametrize(
    ("concept", "text", "value", "unit"), [(c, *x) for c, xs in MATCH.items() for x in xs]
)
def test_rule_matches(concept: str, text: str, value: str, unit: str) -> None:
    assert found(text) == [(concept, value, unit)]


@pytest.mark.parametrize(("concept", "text"), [(c, t) for c, ts in NO_MATCH.items() for t in ts])
def test_rule_does_not_match(concept: str, text: str) -> None:
    assert [f for f in found(text) if f[0] == concept] == []


def test_one_clause_negation_does_not_drop_the_next_clause() -> None:
    assert found("HAQ not done, MMT-8 118") == [("mmt8", "118", "{score}")]


def test_the_sentence_and_the_match_are_quoted_and_capped() -> None:
    m = notes_on()
    text = "Seen today. " + "Weakness persists. " + "x" * 500 + " MMT-8: 118/150 " + "y" * 500 + ". Plan."
    (hit,) = scan(text, m.notes.rules.values(), m.notes)
    assert hit.match == "MMT-8: 118/150"
    assert "MMT-8: 118/150" in hit.sentence and len(hit.sentence) <= m.notes.max_sentence_chars + 2
    assert hit.sentence.startswith("…") and hit.sentence.endswith("…")


# -- linear time: hostile text finishes (a generous bound against pathological backtracking) -------------
HOSTILE = [
    "1" * 200_000,
    "MMT-8 " * 40_000,
    "MMT-8 1" * 30_000,
    "PGA 4/10/" * 25_000,
    "HAQ-DI 0." * 30_000,
    "MMT-8 " + "9" * 200_000,
    "评分" * 100_000,
    ("MMT-8 not done, " * 15_000),
]


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: f"{t[:12]!r}x{len(t)}")
def test_hostile_text_is_scanned_in_bounded_time(text: str) -> None:
    m = notes_on()
    started = time.monotonic()
    scan(text, m.notes.rules.values(), m.notes)
    assert time.monotonic() - started < 20  # generous: a backtracking scan would take hours


@pytest.mark.parametrize(
    "markup", ["<a " * 100_000, "<" * 200_000, "<!--" + "a" * 200_000, '<div class="' * 50_000]
)
def test_hostile_html_is_stripped_in_bounded_time(markup: str) -> None:
    started = time.monotonic()
    html_text(markup)
    assert time.monotonic() - started < 20


def test_html_text_drops_markup_scripts_and_comments_and_keeps_literal_less_than() -> None:
    text = html_text(
        "<html><head><title>t</title><style>p{}</style></head><body><p>MMT-8: 118/150</p>"
        "<p>CK &lt; 200, a < b &amp; c<br/>PGA 4/10</p><script>var x = '<p>MMT-8 90</p>'</script>"
        "<!-- MMT-8 80 --></body></html>"
    )
    assert "MMT-8: 118/150" in text and "CK < 200, a < b & c" in text and "PGA 4/10" in text
    assert "90" not in text and "80" not in text and "<" not in text.replace("< 200", "").replace("< b", "")


# -- documents -------------------------------------------------------------------------------------------
def b64(text: str, encoding: str = "utf-8") -> str:
    return base64.b64encode(text.encode(encoding)).decode("ascii")


def document(
    text: str | None = None,
    days: int = 5,
    content_type: str = "text/plain",
    data: str | None = None,
    id: str = "note1",
    **extra: Any,
) -> Res:
    attachment: Res = {"contentType": content_type}
    if data is not None or text is not None:
        attachment["data"] = data if data is not None else b64(text or "")
    return {
        "resourceType": "DocumentReference",
        "id": id,
        "status": "current",
        "subject": {"reference": "Patient/p1"},
        "date": days_ago(days) + "T10:00:00Z",
        "content": [{"attachment": attachment | extra.pop("attachment", {})}],
        **extra,
    }


def suggestions(rec: PatientRecord, fact: str, m: Mappings | None = None) -> list[dict[str, str]]:
    ctx = context(rec, m or notes_on(), AS_OF)
    return [s.to_json() for s in ctx.fact(fact).suggestions]


def rec(*resources: Res) -> PatientRecord:
    return record(patient(), condition(DM), *resources)


def test_a_note_gives_a_suggestion_with_value_date_resource_and_sentence() -> None:
    got = suggestions(rec(document("Clinic. MMT-8: 118/150, PGA 4/10.", days=14)), "mmt8")
    assert got == [
        {
            "concept": "mmt8",
            "value": "118",
            "unit": "{score}",
            "date": days_ago(14),
            "reference": "DocumentReference/note1",
            "match": "MMT-8: 118/150",
            "text": "MMT-8: 118/150, PGA 4/10.",
        }
    ]


def test_notes_are_off_by_default_and_then_not_even_read() -> None:
    default = load_mappings()
    assert not default.notes.enabled
    assert suggestions(rec(document("MMT-8: 118/150")), "mmt8", default) == []
    assert not {"DocumentReference", "DiagnosticReport"} & Screener([default], AS_OF).needed_types
    assert {"DocumentReference", "DiagnosticReport"} <= Screener([notes_on()], AS_OF).needed_types


def test_the_note_date_is_the_period_of_care_then_the_attachment_then_the_reference() -> None:
    r4 = document("MMT-8 118", days=1, context={"period": {"start": days_ago(30)}})
    assert suggestions(rec(r4), "mmt8")[0]["date"] == days_ago(30)
    r5 = document("MMT-8 118", days=1, id="r5", period={"start": days_ago(40), "end": days_ago(39)})
    assert suggestions(rec(r5), "mmt8")[0]["date"] == days_ago(39)
    created = document("MMT-8 118", days=1, id="c", attachment={"creation": days_ago(20)})
    assert suggestions(rec(created), "mmt8")[0]["date"] == days_ago(20)


@pytest.mark.parametrize(
    "doc",
    [
        document("MMT-8 118", status="entered-in-error"),
        document("MMT-8 118", status="superseded"),
        document("MMT-8 118", docStatus="entered-in-error"),
        document("MMT-8 118", days=200),  # outside the 90-day window
        document("MMT-8 118", days=-3),  # after the as-of date
        document("MMT-8 118", content_type="application/pdf"),
        document(data="not base64!!"),
        document(attachment={"url": "Binary/b1"}),  # a URL nobody fetched (files): not read
    ],
    ids=["entered-in-error", "superseded", "docStatus", "old", "future", "pdf", "bad-base64", "url-in-files"],
)
def test_notes_that_are_not_read(doc: Res) -> None:
    assert suggestions(rec(doc), "mmt8") == []


def test_attachment_size_is_capped_before_decoding(tmp_path: Path) -> None:
    overlay = tmp_path / "small.toml"
    overlay.write_text("[notes]\nenabled = true\nmax_attachment_bytes = 64\n", encoding="utf-8")
    small = load_mappings(overlays=[overlay])
    assert suggestions(rec(document("MMT-8 118")), "mmt8", small)
    assert suggestions(rec(document("x" * 100 + " MMT-8 118")), "mmt8", small) == []


def test_text_beyond_max_text_chars_is_not_scanned(tmp_path: Path) -> None:
    overlay = tmp_path / "short.toml"
    overlay.write_text("[notes]\nenabled = true\nmax_text_chars = 50\n", encoding="utf-8")
    short = load_mappings(overlays=[overlay])
    assert suggestions(rec(document("MMT-8 118")), "mmt8", short)
    assert suggestions(rec(document("." * 60 + " MMT-8 118")), "mmt8", short) == []


def test_html_charsets_and_chinese_encodings() -> None:
    html = document("<p>徒手肌力(MMT-8)评分118分</p>", content_type="text/html; charset=utf-8")
    assert suggestions(rec(html), "mmt8")[0]["value"] == "118"
    gb = document(data=b64("MMT-8评分118分。", "gb18030"), content_type="text/plain")  # no charset given
    assert suggestions(rec(gb), "mmt8")[0]["value"] == "118"
    declared = document(data=b64("HAQ-DI评分0.75分", "gbk"), content_type='text/plain; charset="GBK"')
    assert suggestions(rec(declared), "haq")[0]["value"] == "0.75"


def test_diagnostic_report_conclusion_and_presented_form_are_read() -> None:
    report = {
        "resourceType": "DiagnosticReport",
        "id": "dr1",
        "status": "final",
        "code": {"text": "Myositis assessment"},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": days_ago(7),
        "conclusion": "MMT-8 120/150.",
        "presentedForm": [{"contentType": "text/html", "data": b64("<p>HAQ-DI 1.0</p>")}],
    }
    r = rec(report)
    assert suggestions(r, "mmt8")[0]["reference"] == "DiagnosticReport/dr1"
    assert suggestions(r, "haq")[0]["value"] == "1.0"


def test_a_fetched_url_attachment_is_read_from_the_record() -> None:
    doc = document(attachment={"url": "Binary/b1"}, content_type="text/plain")
    r = rec(doc)
    fetched = PatientRecord(
        r.patient_id,
        r.patient,
        r.resources,
        attachments={"Binary/b1": {"contentType": "text/plain", "data": b64("MMT-8 118")}},
    )
    assert suggestions(fetched, "mmt8")[0]["value"] == "118"


# -- suggestions never decide; a site opts in per concept ---------------------------------------------------
def _active_without(*codes: tuple[str, str]) -> list[Res]:
    resources = baseline()
    for code in codes:
        resources = without(resources, code)
    return resources


def test_a_suggestion_changes_no_verdict_and_appears_on_the_component() -> None:
    resources = _active_without(MMT8)
    plain = screen(*resources)
    noted = screen(*resources, document("MMT-8: 118/150", days=14), mappings=notes_on())
    assert plain.status == noted.status == Status.POTENTIAL_CANDIDATE
    a, b = criterion(plain, "active-disease", "mmt8"), criterion(noted, "active-disease", "mmt8")
    assert a.verdict == b.verdict and a.reason == b.reason and a.evidence == b.evidence
    assert [s.value for s in b.suggestions] == ["118"] and not a.suggestions
    parent = criterion(noted, "active-disease")
    assert parent.suggestions == ()  # on the component, not repeated on its criterion


def test_a_suggestion_only_when_the_note_is_newer_than_the_recorded_result() -> None:
    resources = _active_without(MMT8)
    older = observation(MMT8, 100, date=days_ago(30))
    newer_note = screen(*resources, older, document("MMT-8 118", days=10), mappings=notes_on())
    assert [s.value for s in criterion(newer_note, "active-disease", "mmt8").suggestions] == ["118"]
    same_day = screen(*resources, older, document("MMT-8 118", days=30), mappings=notes_on())
    assert criterion(same_day, "active-disease", "mmt8").suggestions == ()
    older_note = screen(*resources, older, document("MMT-8 118", days=60), mappings=notes_on())
    assert criterion(older_note, "active-disease", "mmt8").suggestions == ()


def test_with_decide_a_note_value_decides_and_says_from_note() -> None:
    resources = _active_without(MMT8, PGA, HAQ)
    note = document("MMT-8: 118/150, PGA 40/100, HAQ-DI 0.75.", days=14)
    suggested = screen(*resources, note, mappings=notes_on())
    decided = screen(*resources, note, mappings=notes_decide())
    assert suggested.status == Status.POTENTIAL_CANDIDATE
    assert decided.status == Status.CANDIDATE
    pga = criterion(decided, "active-disease", "csm-pga")
    assert pga.verdict.value == "met" and pga.suggestions == ()
    (ev,) = pga.evidence
    assert ev.reference == "DocumentReference/note1" and ev.from_note
    assert "4 cm (reported 40 mm)" in ev.detail and "from note" in ev.detail
    assert "decided from notes: active-disease" in subject_reason(decided)
    assert "from notes" not in subject_reason(suggested)


def test_with_decide_the_recorded_result_wins_on_the_same_day_and_when_newer() -> None:
    resources = _active_without(MMT8)
    coded = observation(MMT8, 130, date=days_ago(14))  # 130: not <= 125
    for days in (14, 30):
        result = screen(*resources, coded, document("MMT-8 100", days=days), mappings=notes_decide())
        mmt = criterion(result, "active-disease", "mmt8")
        assert mmt.verdict.value == "not-met" and not any(e.from_note for e in mmt.evidence)
    newer = screen(*resources, coded, document("MMT-8 100", days=3), mappings=notes_decide())
    assert criterion(newer, "active-disease", "mmt8").verdict.value == "met"


def test_with_decide_notes_of_one_day_that_disagree_are_unknown_with_both_as_suggestions() -> None:
    resources = _active_without(MMT8)
    a = document("MMT-8 100", days=5, id="a")
    b = document("MMT-8 118", days=5, id="b")
    result = screen(*resources, a, b, mappings=notes_decide())
    mmt = criterion(result, "active-disease", "mmt8")
    assert mmt.verdict.value == "unknown" and "different values" in mmt.reason
    assert sorted(s.value for s in mmt.suggestions) == ["100", "118"]


def test_suggestions_follow_the_result_schema_exactly() -> None:
    result = screen(*_active_without(MMT8), document("MMT-8: 118/150", days=14), mappings=notes_on())
    body = {"study": "X", "asOf": AS_OF.isoformat(), "subjects": [result.to_json()], "errors": []}
    jsonschema.Draft202012Validator(SCHEMA).validate(body)
    extra = json.loads(json.dumps(body))
    mmt = next(c for c in extra["subjects"][0]["criteria"] if c["id"] == "active-disease")["components"][0]
    mmt["suggestions"][0]["extra"] = "x"
    assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(extra))


# -- configuration is validated, naming the file and the key ---------------------------------------------
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '[notes.rules.mmt9]\nphrases = ["MMT-9"]\nshapes = [{after = "", unit = "{score}", max = 1}]\n',
            "notes.rules.mmt9: unknown concept",
        ),
        (
            '[notes.rules.pga]\nshapes = [{after = "/10", unit = "kg", max = 10}]\n',
            "notes.rules.pga.shapes[6].unit: 'kg' cannot be converted to 'cm', the unit of facts.pga",
        ),
        (
            "[notes.rules.ck]\ndecide = true\n",
            "notes.rules.ck: a rule needs at least one phrase and one shape",
        ),
        (
            "[notes]\nenable = true\n",
            "notes: Additional properties are not allowed ('enable' was unexpected)",
        ),
        ('[notes.rules.haq]\ndecide = "yes"\n', "notes.rules.haq.decide: 'yes' is not of type 'boolean'"),
    ],
)
def test_a_bad_notes_overlay_names_the_file_and_the_key(tmp_path: Path, body: str, message: str) -> None:
    overlay = tmp_path / "site.toml"
    overlay.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_mappings(overlays=[overlay])
    assert str(overlay) in str(caught.value) and message in str(caught.value)


def test_a_site_can_add_phrases_and_a_rule_for_another_measurement(tmp_path: Path) -> None:
    overlay = tmp_path / "site.toml"
    overlay.write_text(
        '[notes]\nenabled = true\n[notes.rules.mmt8]\nphrases = ["肌力评分"]\n'
        '[notes.rules.ck]\nphrases = ["CK"]\nshapes = [{after = "U/L", unit = "U/L", max = 100000}]\n',
        encoding="utf-8",
    )
    site = load_mappings(overlays=[overlay])
    assert found("肌力评分 118", site) == [("mmt8", "118", "{score}")]
    assert suggestions(rec(document("CK 980 U/L")), "ck-x-uln", site)[0]["value"] == "980"
    assert Decimal(found("CK 980 U/L", site)[0][1]) == 980
