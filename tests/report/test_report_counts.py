"""The coordinator report's numbers, checked against counts computed here straight from the result JSON."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fhir_adapter.report import (
    criterion_order,
    funnel,
    render_html,
    status_counts,
    worklist_csv,
    worklist_rows,
    write_report,
)

DATA = Path(__file__).parent / "data"

# The protocol order (prescreening-spec section 3): the oracle here, never an input of the report.
INCLUSION = [
    "age",
    "diagnosis",
    "active-disease",
    "glucocorticoid-dose",
    "immunosuppressant-stable",
    "consent",
    "contraception",
]
EXCLUSION = [
    "iv-glucocorticoid",
    "heart-failure",
    "renal-insufficiency",
    "liver-insufficiency",
    "anemia",
    "thrombocytopenia",
    "other-ctd-or-tumor",
    "drug-allergy",
    "infection",
    "hepatitis-serology",
    "mental-illness",
]
PROTOCOL = INCLUSION + EXCLUSION
WORKLIST = ("candidate", "potential-candidate")


def load(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))
    return result


def page(result: dict[str, Any]) -> ET.Element:
    """The report parsed as XML: it is written well-formed, so this also checks every tag is closed."""
    return ET.fromstring(render_html(result).split("\n", 1)[1])


def all_text(el: ET.Element) -> str:
    return " ".join("".join(el.itertext()).split())


# --- independent oracles -------------------------------------------------------------------------


def oracle_funnel(result: dict[str, Any], order: list[str] = PROTOCOL) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    gone: set[str] = set()
    for cid in order:
        row = dict.fromkeys(("entering", "pass", "unknown", "excluded", "other", "remaining"), 0)
        for s in result["subjects"]:
            if s["patient"] in gone:
                continue
            row["entering"] += 1
            found = [c for c in s["criteria"] if c["id"] == cid]
            if not found:
                row["other"] += 1
                continue
            c = found[0]
            bad = "not-met" if c["type"] == "inclusion" else "met"
            good = "met" if c["type"] == "inclusion" else "not-met"
            if c["verdict"] == "unknown":
                row["unknown"] += 1
            elif c["verdict"] == bad:
                row["excluded"] += 1
                gone.add(s["patient"])
            elif c["verdict"] == good:
                row["pass"] += 1
            else:
                row["other"] += 1
        row["remaining"] = row["entering"] - row["excluded"]
        out[cid] = row
    return out


def oracle_unknowns(subject: dict[str, Any]) -> int:
    return sum(1 for c in subject["criteria"] if c["verdict"] == "unknown")


def oracle_worklist(result: dict[str, Any]) -> list[tuple[int, str]]:
    return sorted((oracle_unknowns(s), s["patient"]) for s in result["subjects"] if s["status"] in WORKLIST)


def oracle_reasons(subject: dict[str, Any]) -> list[str]:
    """What would resolve each unknown: the unknown components' reasons, else the criterion's own."""
    out: list[str] = []
    for c in subject["criteria"]:
        if c["verdict"] != "unknown":
            continue
        parts = [p["reason"] for p in c.get("components", []) if p["verdict"] == "unknown"]
        out += parts or [c["reason"]]
    return out


@pytest.mark.parametrize("name", ["normal", "with_errors", "empty", "notes"])
def test_fixtures_follow_the_result_schema(name: str) -> None:
    schema = json.loads((Path(__file__).parents[2] / "profiles" / "screening-result.schema.json").read_text())
    jsonschema.validate(load(name), schema)


# --- order ---------------------------------------------------------------------------------------


def test_criteria_order_comes_from_the_result() -> None:
    result = load("normal")
    assert [s.id for s in criterion_order(result)] == PROTOCOL
    types = {s.id: s.type for s in criterion_order(result)}
    assert all(types[c] == "inclusion" for c in INCLUSION)
    assert all(types[c] == "exclusion" for c in EXCLUSION)


def test_criteria_order_uses_the_subject_with_most_criteria_and_an_explicit_list() -> None:
    result = load("normal")
    # A patient without a DM diagnosis (one criterion) first must not shorten the order.
    result["subjects"].sort(key=lambda s: len(s["criteria"]))
    assert len(result["subjects"][0]["criteria"]) == 1
    assert [s.id for s in criterion_order(result)] == PROTOCOL
    explicit = ["mental-illness", "age", "not-in-any-subject"]
    got = [s.id for s in criterion_order(result, explicit)]
    assert got[:3] == explicit
    assert got[3:] == [c for c in PROTOCOL if c not in explicit]
    # An id only a later, shorter subject carries is appended, not dropped.
    odd = copy.deepcopy(result["subjects"][0])
    odd["criteria"].append(
        {"id": "site-extra", "type": "exclusion", "verdict": "met", "reason": "x", "evidence": []}
    )
    result["subjects"].append(odd)
    assert [s.id for s in criterion_order(result)] == [*PROTOCOL, "site-extra"]


# --- counts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["normal", "with_errors", "empty"])
def test_status_counts_match_the_result(name: str) -> None:
    result = load(name)
    expected = Counter(s["status"] for s in result["subjects"])
    counts = status_counts(result)
    for st in ("candidate", "potential-candidate", "ineligible"):
        assert counts[st] == expected.get(st, 0)
    cards = {c.get("data-status"): c for c in page(result).iter("div") if "card" in c.get("class", "")}
    for st in ("candidate", "potential-candidate", "ineligible"):
        number = next(span for span in cards[st].iter("span") if span.get("class") == "n")
        assert int(number.text or "") == expected.get(st, 0)
    meta = {dd.get("data-key"): dd.text for dd in page(result).iter("dd")}
    assert meta["Patients screened"] == str(len(result["subjects"]))
    assert meta["Input errors"] == str(len(result["errors"]))
    assert meta["As of"] == result["asOf"]
    assert meta["Rules version"] == result["rulesVersion"]


def test_normal_fixture_has_all_three_statuses() -> None:
    counts = Counter(s["status"] for s in load("normal")["subjects"])
    assert all(counts[st] >= 2 for st in ("candidate", "potential-candidate", "ineligible"))


def test_funnel_numbers_equal_the_independent_attrition() -> None:
    result = load("normal")
    expected = oracle_funnel(result)
    steps = funnel(result)
    assert [s.id for s in steps] == PROTOCOL
    for s in steps:
        exp = expected[s.id]
        got = {
            "entering": s.entering,
            "pass": s.passed,
            "unknown": s.unknown,
            "excluded": s.failed,
            "other": s.other,
            "remaining": s.remaining,
        }
        assert got == exp, s.id
    # What is left after the last criterion is exactly the worklist.
    assert steps[-1].remaining == sum(1 for s in result["subjects"] if s["status"] in WORKLIST)

    # The same numbers in the page's table, row for row, in protocol order.
    table = next(t for t in page(result).iter("table") if t.get("id") == "funnel-table")
    rows = table.findall("./tbody/tr")
    assert [r.get("data-criterion") for r in rows] == PROTOCOL
    for r in rows:
        cells = {td.get("data-col"): int(all_text(td)) for td in r.findall("td") if td.get("data-col")}
        exp = expected[r.get("data-criterion") or ""]
        assert {k: cells[k] for k in exp} == exp
    # Order-free per-criterion exclusions: the ATLAS "per rule" figure.
    for r in rows:
        cid = r.get("data-criterion")
        any_order = sum(
            1
            for s in result["subjects"]
            for c in s["criteria"]
            if c["id"] == cid and c["verdict"] == ("not-met" if c["type"] == "inclusion" else "met")
        )
        cell = next(td for td in r.findall("td") if td.get("data-col") == "excluded-any-order")
        assert int(all_text(cell)) == any_order


def test_explicit_order_reorders_funnel_table_and_csv(tmp_path: Path) -> None:
    result = load("normal")
    order = ["diagnosis", *EXCLUSION]  # exclusions before the rest of the inclusions
    expected = oracle_funnel(result, [*order, *(c for c in PROTOCOL if c not in order)])
    steps = funnel(result, order)
    assert [s.id for s in steps] == list(expected)
    assert all(expected[s.id]["remaining"] == s.remaining for s in steps)
    assert all(expected[s.id]["unknown"] == s.unknown for s in steps)
    write_report(result, tmp_path / "r.html", tmp_path / "w.csv", order=order)
    header = (tmp_path / "w.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[3:-2] == list(expected) and header[-2:] == ["to_resolve", "from_notes"]
    rows = ET.fromstring((tmp_path / "r.html").read_text(encoding="utf-8").split("\n", 1)[1])
    table = next(t for t in rows.iter("table") if t.get("id") == "funnel-table")
    assert [r.get("data-criterion") for r in table.findall("./tbody/tr")] == list(expected)


def test_funnel_svg_has_one_labelled_bar_per_criterion() -> None:
    result = load("normal")
    expected = oracle_funnel(result)
    svg = next(el for el in page(result).iter("svg") if el.get("class") == "funnel")
    assert svg.get("role") == "img"
    svg_title = svg.find("title")
    assert svg_title is not None and "14 patients screened" in (svg_title.text or "")
    rows = [g for g in svg.iter("g") if g.get("data-criterion")]
    assert [g.get("data-criterion") for g in rows] == PROTOCOL
    for g in rows:
        exp = expected[g.get("data-criterion") or ""]
        title = g.find("title")
        assert title is not None
        words = title.text or ""
        assert f"{exp['entering']} patients reached" in words or f"{exp['entering']} patient reached" in words
        assert f"{exp['pass']} pass, {exp['unknown']} unknown, {exp['excluded']} excluded" in words
        assert f"{exp['remaining']} remain" in words
        # The numbers are drawn as text too, not only as bar lengths.
        assert f"{exp['remaining']} remain" in all_text(g)
        # An unknown lane exists exactly where there are unknowns.
        lanes = {r.get("class") for r in g.iter("rect")}
        assert ("seg seg-unknown" in lanes) == (exp["unknown"] > 0)
        assert ("seg seg-fail" in lanes) == (exp["excluded"] > 0)


def test_components_table_counts() -> None:
    result = load("normal")
    table = next(t for t in page(result).iter("table") if t.get("data-parent") == "active-disease")
    for r in table.findall("./tbody/tr"):
        comp = r.get("data-component")
        verdicts = Counter(
            p["verdict"]
            for s in result["subjects"]
            for c in s["criteria"]
            if c["id"] == "active-disease"
            for p in c.get("components", [])
            if p["id"] == comp
        )
        cells = {td.get("data-col"): int(all_text(td)) for td in r.findall("td") if td.get("data-col")}
        assert cells["met"] == verdicts["met"]
        assert cells["not-met"] == verdicts["not-met"]
        assert cells["unknown"] == verdicts["unknown"]


# --- worklist ------------------------------------------------------------------------------------


def test_worklist_order_and_reasons() -> None:
    result = load("normal")
    expected = oracle_worklist(result)
    rows = worklist_rows(result)
    assert [(r["unknown_count"], r["patient"]) for r in rows] == expected
    assert [r["unknown_count"] for r in rows] == sorted(r["unknown_count"] for r in rows)
    subjects = {s["patient"]: s for s in result["subjects"]}
    for r in rows:
        reasons = oracle_reasons(subjects[r["patient"]])
        assert len(reasons) >= r["unknown_count"]
        for reason in reasons:
            assert reason in r["to_resolve"]
        for cid in PROTOCOL:
            found = [c["verdict"] for c in subjects[r["patient"]]["criteria"] if c["id"] == cid]
            assert r[cid] == (found[0] if found else "")
    # Component reasons stand in for a summary of an unknown active-disease.
    ad = next(r for r in rows if r["active-disease"] == "unknown")
    assert (
        "active-disease/csm-enzymes: no CK, aldolase, LDH, ALT or AST in the last 90 days" in ad["to_resolve"]
    )
    ad_reason = next(c["reason"] for c in subjects[ad["patient"]]["criteria"] if c["id"] == "active-disease")
    assert ad_reason not in ad["to_resolve"]
    assert "no body weight in the last 365 days; needed for the prednisone dose" in " ".join(
        r["to_resolve"] for r in rows
    )

    # The page shows the same rows in the same order, each with every reason.
    table = next(t for t in page(result).iter("table") if t.get("id") == "worklist-table")
    trs = table.findall("./tbody/tr")
    assert [
        (
            int(all_text(next(td for td in tr if td.get("data-col") == "unknown-count"))),
            tr.get("data-patient"),
        )
        for tr in trs
    ] == expected
    for tr in trs:
        text = all_text(tr)
        for reason in oracle_reasons(subjects[tr.get("data-patient") or ""]):
            assert " ".join(reason.split()) in text
    # Ineligible patients are not on it.
    assert not {tr.get("data-patient") for tr in trs} & {
        s["patient"] for s in result["subjects"] if s["status"] == "ineligible"
    }


def test_worklist_links_reach_patient_sections() -> None:
    root = page(load("normal"))
    ids = {el.get("id") for el in root.iter() if el.get("id")}
    hrefs = [a.get("href") or "" for a in root.iter("a")]
    assert hrefs
    for href in hrefs:
        assert href.startswith("#") and href[1:] in ids


def test_every_patient_every_criterion_with_verdict_in_text() -> None:
    result = load("normal")
    root = page(result)
    sections = {
        s.get("data-patient"): s for s in root.iter("section") if "patient" in (s.get("class") or "").split()
    }
    assert set(sections) == {s["patient"] for s in result["subjects"]}
    labels = {
        "met": "met",
        "not-met": "not met",
        "unknown": "unknown",
        "not-evaluable": "not evaluable",
        "not-applicable": "not applicable",
    }
    for s in result["subjects"]:
        rows = sections[s["patient"]].findall(".//tbody/tr")
        flat = [x for c in s["criteria"] for x in [(c, False), *((p, True) for p in c.get("components", []))]]
        assert [r.get("data-criterion") for r in rows] == [c["id"] for c, _ in flat]
        for r, (c, _) in zip(rows, flat, strict=True):
            badge = next(sp for sp in r.iter("span") if "badge" in (sp.get("class") or ""))
            assert badge.get("data-verdict") == c["verdict"]
            label = all_text(badge)
            assert label.startswith(labels[c["verdict"]])
            excluding = (c["type"] == "inclusion" and c["verdict"] == "not-met") or (
                c["type"] == "exclusion" and c["verdict"] == "met"
            )
            assert label.endswith("excludes") == excluding
            text = all_text(r)
            assert " ".join(c["reason"].split()) in text
            for ev in c["evidence"]:
                assert ev["reference"] in text


# --- empty, errors, escaping ---------------------------------------------------------------------


def test_empty_result_page() -> None:
    result = load("empty")
    html = render_html(result)
    root = page(result)
    assert "No patients were screened" in html
    ids = {el.get("id") for el in root.iter() if el.get("id")}
    assert not ids & {"funnel-table", "worklist-table", "patients", "errors-table"}
    assert worklist_rows(result) == []
    assert funnel(result) == []
    assert worklist_csv(result).splitlines() == ["patient,status,unknown_count,to_resolve,from_notes"]


def test_empty_result_with_errors_shows_them() -> None:
    result = load("with_errors")
    result["subjects"] = []
    root = page(result)
    assert "No patients were screened" in all_text(root)
    assert any(t.get("id") == "errors-table" for t in root.iter("table"))


def test_errors_table() -> None:
    result = load("with_errors")
    root = page(result)
    table = next(t for t in root.iter("table") if t.get("id") == "errors-table")
    rows = table.findall("./tbody/tr")
    assert len(rows) == len(result["errors"]) == 3
    for tr, err in zip(rows, result["errors"], strict=True):
        cells = [all_text(td) for td in tr.findall("td")]
        assert cells[0] == err["file"]
        assert cells[1] == str(err.get("line", ""))
        assert cells[2] == err.get("resource", "")
        assert cells[3] == err["reason"]
    assert "3 inputs could not be read" in all_text(root)
    assert not any(t.get("id") == "errors-table" for t in page(load("normal")).iter("table"))


def test_reasons_are_escaped() -> None:
    result = load("with_errors")
    html = render_html(result)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#x27;hb&#x27;)&lt;/script&gt;" in html
    assert "&lt;b&gt;platelets&lt;/b&gt;" in html and "&amp; no" in html
    assert "export/&lt;Patient&gt;.ndjson" in html
    # The hostile text survives as text (worklist and patient section), the markup stays intact.
    root = page(result)
    assert "<script>alert('hb')</script>" in all_text(root)
    assert not list(root.iter("script")) and not list(root.iter("b"))
    # Quotes cannot leave an attribute either.
    hostile = copy.deepcopy(result)
    hostile["subjects"][0]["criteria"][0]["id"] = 'age" onmouseover="x'
    assert 'data-criterion="age&quot; onmouseover=&quot;x"' in render_html(hostile)


def test_status_mismatch_is_flagged() -> None:
    result = load("normal")
    assert "status-mismatch" not in render_html(result)
    wrong = next(s for s in result["subjects"] if s["status"] == "potential-candidate")
    wrong["status"] = "candidate"
    html = render_html(result)
    assert 'id="status-mismatch"' in html and wrong["patient"] in html


def test_page_is_self_contained() -> None:
    for name in ("normal", "with_errors", "empty"):
        html = render_html(load(name))
        assert (
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "style-src 'unsafe-inline'; img-src data:\"/>"
        ) in html
        assert not re.search(r"(?i)\b(?:https?:)?//[a-z0-9]", html.replace("<!--", "")), name
        assert not re.search(r"(?i)\ssrc\s*=", html)
        assert not re.search(r"(?i)@import|@font-face", html)
        assert all(u.startswith("#") for u in re.findall(r"(?i)url\(\s*['\"]?([^)'\"]*)", html))
        assert all(h.startswith("#") for h in re.findall(r"(?i)\shref\s*=\s*['\"]?([^'\" >]*)", html))
        root = ET.fromstring(html.split("\n", 1)[1])
        for tag in ("script", "link", "img", "iframe", "object", "embed", "base", "form", "audio", "video"):
            assert not list(root.iter(tag)), tag
        assert "@media print" in html


# --- CSV -----------------------------------------------------------------------------------------


def test_csv_rows_and_columns(tmp_path: Path) -> None:
    result = load("normal")
    html_path, csv_path = tmp_path / "report.html", tmp_path / "worklist.csv"
    write_report(result, html_path, csv_path)
    assert html_path.read_text(encoding="utf-8") == render_html(result)
    raw = csv_path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert rows[0] == ["patient", "status", "unknown_count", *PROTOCOL, "to_resolve", "from_notes"]
    body = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert [(int(r["unknown_count"]), r["patient"]) for r in body] == oracle_worklist(result)
    subjects = {s["patient"]: s for s in result["subjects"]}
    for r in body:
        s = subjects[r["patient"]]
        assert r["status"] == s["status"]
        for c in s["criteria"]:
            assert r[c["id"]] == c["verdict"]
        assert r["to_resolve"] == "; ".join(
            f"{cid}: {reason}"
            for cid, reason in (
                (f"{c['id']}/{p['id']}" if p is not c else c["id"], p["reason"])
                for c in s["criteria"]
                if c["verdict"] == "unknown"
                for p in ([q for q in c.get("components", []) if q["verdict"] == "unknown"] or [c])
            )
        )
        assert (r["to_resolve"] == "") == (r["status"] == "candidate")


def test_csv_only_and_html_only(tmp_path: Path) -> None:
    result = load("with_errors")
    write_report(result, None, tmp_path / "w.csv")
    write_report(result, tmp_path / "r.html", None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "w.csv"]
    rows = list(csv.DictReader((tmp_path / "w.csv").open(encoding="utf-8", newline="")))
    assert [r["patient"] for r in rows] == ["Patient/dm-5001"]
    assert "<script>alert('hb')</script>" in rows[0]["to_resolve"]  # CSV keeps the text as it is


def test_csv_unicode_and_formula_cells() -> None:
    result = load("with_errors")
    subject = result["subjects"][0]
    anemia = next(c for c in subject["criteria"] if c["id"] == "anemia")
    anemia["reason"] = "近90天无血红蛋白结果"
    subject["patient"] = "=HYPERLINK(1)"
    rows = list(csv.DictReader(io.StringIO(worklist_csv(result), newline="")))
    assert rows[0]["to_resolve"] == "anemia: 近90天无血红蛋白结果"
    assert rows[0]["patient"] == "'=HYPERLINK(1)"
    assert "近90天无血红蛋白结果" in render_html(result)


# --- values found in notes (suggestions) --------------------------------------------------------------


def _oracle_suggestions(result: dict[str, Any]) -> dict[str, list[str]]:
    """patient -> "criterion[/component]: date match" for every suggestion of a worklist patient."""
    out: dict[str, list[str]] = {}
    for s in result["subjects"]:
        if s["status"] not in WORKLIST:
            continue
        lines = out.setdefault(s["patient"], [])
        for c in s["criteria"]:
            lines += [f"{c['id']}: {x['date']} {x['match']}" for x in c.get("suggestions", [])]
            for comp in c.get("components", []):
                lines += [
                    f"{c['id']}/{comp['id']}: {x['date']} {x['match']}" for x in comp.get("suggestions", [])
                ]
    return out


def test_the_worklist_lists_every_suggestion_of_its_patients_to_confirm_and_record() -> None:
    result = load("notes")
    expected = _oracle_suggestions(result)
    assert sum(len(v) for v in expected.values()) >= 6  # the fixture really has them
    rows = {r["patient"]: r for r in worklist_rows(result)}
    for patient, lines in expected.items():
        cell = rows[patient]["from_notes"]
        for line in lines:
            criterion_path, rest = line.split(": ", 1)
            date, match = rest.split(" ", 1)
            assert f"{criterion_path}: note of {date} says {match}: confirm and record" in cell
        assert cell.count("confirm and record") == len(lines)
    dm24 = rows["Patient/dm24"]["from_notes"]
    assert "active-disease/mmt8: note of 2026-06-01 says MMT-8: 118/150: confirm and record" in dm24
    text = all_text(page(result).find(".//*[@id='worklist']"))  # type: ignore[arg-type]
    assert "in a note" in text and "note of 2026-06-01 says MMT-8: 118/150: confirm and record" in text


def test_patient_sections_quote_the_sentence_under_the_reason_not_as_evidence() -> None:
    result = load("notes")
    html = render_html(result)
    assert "MMT-8: 118/150, PGA 4/10, HAQ-DI 0.75." in html
    root = page(result)
    for ul in root.iter("ul"):
        if ul.get("class") == "ev":
            assert "in a note" not in all_text(ul)


def test_a_result_without_suggestions_has_an_empty_from_notes_column() -> None:
    assert all(r["from_notes"] == "" for r in worklist_rows(load("normal")))
