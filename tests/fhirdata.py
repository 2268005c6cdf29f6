"""A tiny builder for readable FHIR R4 JSON test fixtures, and helpers to screen them.

Every helper returns a plain dict, exactly what a FHIR export would contain. Dates are written relative to
``AS_OF`` with ``days_ago(n)``. ``baseline()`` is a complete dermatomyositis patient who screens as a
``candidate``; a test adds, replaces or drops resources to vary exactly one criterion.

    result = screen(*baseline(), observation(HGB, 79, "g/L"))
    assert verdict(result, "anemia") == "met"
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

from fhir_adapter.config.loader import load_mappings
from fhir_adapter.config.types import Mappings
from fhir_adapter.model import CriterionResult, PatientRecord, SubjectResult
from fhir_adapter.screening import screen_record

Res = dict[str, Any]

AS_OF = dt.date(2026, 6, 15)
PID = "p1"
REPO = Path(__file__).resolve().parents[1]

LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
MYO = "https://fhir-adapter.org/CodeSystem/myositis-assessment"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

# Lab / assessment codes: (system, code).
HGB = (LOINC, "718-7")
PLT = (LOINC, "777-3")
CREATININE = (LOINC, "2160-0")
CRCL = (LOINC, "2164-2")
TBIL = (LOINC, "1975-2")
CK = (LOINC, "2157-6")
ALDOLASE = (LOINC, "1761-6")
LDH = (LOINC, "2532-0")
ALT = (LOINC, "1742-6")
AST = (LOINC, "1920-8")
WEIGHT = (LOINC, "29463-7")
HEIGHT = (LOINC, "8302-2")
BMI = (LOINC, "39156-5")
HBSAG = (LOINC, "5196-1")
ANTI_HCV = (LOINC, "13955-0")
NYHA = (LOINC, "88020-3")
MMT8 = (MYO, "mmt8-total")
PGA = (MYO, "ptga-vas")
PHGA = (MYO, "phga-vas")
HAQ = (MYO, "haq-di")
EXTRAMUSCULAR = (MYO, "mdaat-extramuscular-vas")
CUTANEOUS = (MYO, "mdaat-cutaneous-vas")

# Condition codes.
DM = (SCT, "396230008")
JUVENILE_DM = (SCT, "238935002")  # listed in concepts.toml dermatomyositis
POLYMYOSITIS = (SCT, "31384009")
HEART_FAILURE = (SCT, "84114007")
CIRRHOSIS = (SCT, "19943007")
SLE = (SCT, "55464009")
MALIGNANCY_ICD = (ICD10, "C50.9")
BASAL_CELL_SKIN = (ICD10CM, "C44.91")
DVT = (SCT, "128053003")
PNEUMONIA = (SCT, "233604007")
TB_ACTIVE = (SCT, "56717001")
TB_LATENT = (SCT, "11999007")
SCHIZOPHRENIA = (SCT, "58214004")
ALLERGIC_DISPOSITION = (SCT, "609328004")

IV = {"coding": [{"system": SCT, "code": "47625008", "display": "Intravenous route"}]}
ORAL = {"coding": [{"system": SCT, "code": "26643006", "display": "Oral route"}]}
TOPICAL = {"coding": [{"system": SCT, "code": "6064005", "display": "Topical route"}]}
INHALED = {"coding": [{"system": SCT, "code": "18679011000001101", "display": "Inhalation"}]}

_ids = itertools.count(1)


def days_ago(n: int, as_of: dt.date = AS_OF) -> str:
    return (as_of - dt.timedelta(days=n)).isoformat()


def _id(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


def _subject(pid: str) -> Res:
    return {"reference": f"Patient/{pid}"}


def cc(system: str, code: str, display: str | None = None, text: str | None = None) -> Res:
    coding: Res = {"system": system, "code": code}
    if display:
        coding["display"] = display
    out: Res = {"coding": [coding]}
    if text:
        out["text"] = text
    return out


def patient(
    birth: str | None = "1980-03-02", gender: str | None = "female", id: str = PID, **extra: Any
) -> Res:
    res: Res = {"resourceType": "Patient", "id": id}
    if birth is not None:
        res["birthDate"] = birth
    if gender is not None:
        res["gender"] = gender
    return res | extra


def condition(
    code: tuple[str, str] = DM,
    display: str | None = None,
    clinical: str | None = "active",
    verification: str | None = None,
    onset: str | None = None,
    abatement: str | None = None,
    pid: str = PID,
    id: str | None = None,
    **extra: Any,
) -> Res:
    res: Res = {
        "resourceType": "Condition",
        "id": id or _id("cond"),
        "code": cc(code[0], code[1], display),
        "subject": _subject(pid),
        "onsetDateTime": onset or days_ago(400),
    }
    if clinical is not None:
        res["clinicalStatus"] = cc("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical)
    if verification is not None:
        res["verificationStatus"] = cc(
            "http://terminology.hl7.org/CodeSystem/condition-ver-status", verification
        )
    if abatement is not None:
        res["abatementDateTime"] = abatement
    return res | extra


def observation(
    code: tuple[str, str],
    value: float | int | str | None,
    unit: str | None = None,
    date: str | None = None,
    ref_high: float | None = None,
    ref_unit: str | None = None,
    ucum: bool = True,
    status: str = "final",
    pid: str = PID,
    id: str | None = None,
    comparator: str | None = None,
    **extra: Any,
) -> Res:
    """A numeric value becomes valueQuantity (with a UCUM code unless ``ucum=False``); a str valueString.

    ``ref_high`` adds referenceRange[0].high in ``ref_unit`` (default: the value's unit).
    Pass ``valueCodeableConcept=...`` (and ``value=None``) for a coded result.
    """
    res: Res = {
        "resourceType": "Observation",
        "id": id or _id("obs"),
        "status": status,
        "code": cc(*code),
        "subject": _subject(pid),
        "effectiveDateTime": date or days_ago(10),
    }
    if isinstance(value, str):
        res["valueString"] = value
    elif value is not None:
        q: Res = {"value": value}
        if unit:
            q["unit"] = unit
            if ucum:
                q |= {"system": UCUM, "code": unit}
        if comparator:
            q["comparator"] = comparator
        res["valueQuantity"] = q
    if ref_high is not None:
        r_unit = ref_unit or unit
        high: Res = {"value": ref_high}
        if r_unit:
            high |= {"unit": r_unit, "system": UCUM, "code": r_unit}
        res["referenceRange"] = [{"high": high}]
    return res | extra


def coded_result(code: tuple[str, str], system: str, value_code: str, display: str, **kw: Any) -> Res:
    return observation(code, None, valueCodeableConcept=cc(system, value_code, display), **kw)


def drug(name: str, rxnorm: str | None = None) -> Res:
    if rxnorm:
        return {"coding": [{"system": RXNORM, "code": rxnorm, "display": name}], "text": name}
    return {"text": name}


def dosage(
    dose: float | None,
    unit: str | None = "mg",
    frequency: float | None = 1,
    period: float = 1,
    period_unit: str = "d",
    start: str | None = None,
    end: str | None = None,
    route: Res | None = None,
    timing_code: str | None = None,
    text: str | None = None,
) -> Res:
    d: Res = {}
    if text is not None:
        d["text"] = text
    timing: Res = {}
    repeat: Res = {}
    if frequency is not None:
        repeat |= {"frequency": frequency, "period": period, "periodUnit": period_unit}
    if start or end:
        repeat["boundsPeriod"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    if repeat:
        timing["repeat"] = repeat
    if timing_code:
        timing["code"] = {"coding": [{"code": timing_code}]}
    if timing:
        d["timing"] = timing
    if route is not None:
        d["route"] = route
    if dose is not None:
        q: Res = {"value": dose}
        if unit:
            q |= {"unit": unit, "system": UCUM, "code": unit}
        d["doseAndRate"] = [{"doseQuantity": q}]
    return d


def med_request(
    name: str = "prednisone",
    dose: float | None = 10,
    unit: str | None = "mg",
    frequency: float | None = 1,
    period: float = 1,
    period_unit: str = "d",
    start: str | None = None,
    end: str | None = None,
    status: str = "active",
    route: Res | None = None,
    rxnorm: str | None = None,
    timing_code: str | None = None,
    text: str | None = None,
    medication: Res | None = None,
    pid: str = PID,
    id: str | None = None,
    **extra: Any,
) -> Res:
    """A MedicationRequest taken from ``start`` (default 10 days ago) to ``end`` (open while active).

    ``medication`` replaces medicationCodeableConcept, e.g. ``{"medicationReference": {...}}``.
    """
    start = start or days_ago(10)
    res: Res = {
        "resourceType": "MedicationRequest",
        "id": id or _id("medrx"),
        "status": status,
        "intent": "order",
        "subject": _subject(pid),
        "authoredOn": start,
        "dosageInstruction": [
            dosage(dose, unit, frequency, period, period_unit, start, end, route, timing_code, text)
        ],
    }
    res |= medication if medication is not None else {"medicationCodeableConcept": drug(name, rxnorm)}
    return res | extra


def med_statement(
    name: str = "prednisone",
    dose: float | None = 10,
    unit: str | None = "mg",
    frequency: float | None = 1,
    start: str | None = None,
    end: str | None = None,
    status: str = "active",
    route: Res | None = None,
    pid: str = PID,
    **extra: Any,
) -> Res:
    period: Res = {"start": start or days_ago(10)}
    if end:
        period["end"] = end
    res: Res = {
        "resourceType": "MedicationStatement",
        "id": _id("medst"),
        "status": status,
        "subject": _subject(pid),
        "medicationCodeableConcept": drug(name),
        "effectivePeriod": period,
        "dosage": [dosage(dose, unit, frequency, route=route)],
    }
    return res | extra


def med_admin(
    name: str = "methylprednisolone",
    dose: float | None = 500,
    unit: str | None = "mg",
    date: str | None = None,
    route: Res | None = IV,
    status: str = "completed",
    rxnorm: str | None = None,
    pid: str = PID,
    **extra: Any,
) -> Res:
    dose_part: Res = {}
    if route is not None:
        dose_part["route"] = route
    if dose is not None:
        q: Res = {"value": dose}
        if unit:
            q |= {"unit": unit, "system": UCUM, "code": unit}
        dose_part["dose"] = q
    res: Res = {
        "resourceType": "MedicationAdministration",
        "id": _id("medadm"),
        "status": status,
        "subject": _subject(pid),
        "effectiveDateTime": (date or days_ago(5)) + "T09:00:00+08:00",
        "medicationCodeableConcept": drug(name, rxnorm),
        "dosage": dose_part,
    }
    return res | extra


def medication(id: str, name: str, strength_mg: float | None = None, rxnorm: str | None = None) -> Res:
    """A Medication resource; ``strength_mg`` per tablet as ingredient strength (numerator mg / 1 tablet)."""
    res: Res = {"resourceType": "Medication", "id": id, "code": drug(name, rxnorm)}
    if strength_mg is not None:
        res["ingredient"] = [
            {
                "itemCodeableConcept": drug(name),
                "strength": {
                    "numerator": {"value": strength_mg, "unit": "mg", "system": UCUM, "code": "mg"},
                    "denominator": {"value": 1, "unit": "tablet"},
                },
            }
        ]
    return res


def encounter(
    start: str,
    end: str | None = None,
    klass: str = "IMP",
    reason: Res | None = None,
    reason_reference: str | None = None,
    status: str = "finished",
    pid: str = PID,
    **extra: Any,
) -> Res:
    """An Encounter; ``reason`` is a reasonCode CodeableConcept, ``reason_reference`` a ``Condition/id``."""
    period = {"start": start} | ({"end": end} if end else {})
    res: Res = {
        "resourceType": "Encounter",
        "id": _id("enc"),
        "status": status,
        "class": {"system": ACT, "code": klass},
        "subject": _subject(pid),
        "period": period,
    }
    if reason is not None:
        res["reasonCode"] = [reason]
    if reason_reference is not None:
        res["reasonReference"] = [{"reference": reason_reference}]
    return res | extra


def allergy(
    code: str,
    display: str,
    category: str | None = "medication",
    clinical: str | None = "active",
    verification: str | None = None,
    system: str = RXNORM,
    pid: str = PID,
    **extra: Any,
) -> Res:
    res: Res = {
        "resourceType": "AllergyIntolerance",
        "id": _id("allergy"),
        "patient": _subject(pid),
        "code": cc(system, code, display),
    }
    if category is not None:
        res["category"] = [category]
    if clinical is not None:
        res["clinicalStatus"] = cc(
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", clinical
        )
    if verification is not None:
        res["verificationStatus"] = cc(
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", verification
        )
    return res | extra


# --- A complete candidate ------------------------------------------------------------------------------
def activity(mmt8: float = 100, pga: float = 4.5, haq: float = 1.0, ck: float = 980) -> list[Res]:
    """MMT-8 abnormal plus three abnormal CSMs (PGA, HAQ, CK 4.9 x ULN): active-disease met."""
    return [
        observation(MMT8, mmt8, date=days_ago(14)),
        observation(PGA, pga, "cm", date=days_ago(14)),
        observation(HAQ, haq, date=days_ago(14)),
        observation(CK, ck, "U/L", date=days_ago(12), ref_high=200),
    ]


def normal_labs(sex: str = "female") -> list[Res]:
    return [
        observation(HGB, 128, "g/L"),
        observation(PLT, 215, "10*9/L"),
        observation(CREATININE, 62, "umol/L"),
        observation(TBIL, 9.8, "umol/L", ref_high=21 if sex == "female" else 26),
        coded_result(HBSAG, SCT, "260385009", "Negative", date=days_ago(120)),
        observation(ANTI_HCV, "Non-reactive", date=days_ago(120)),
    ]


def weight(kg: float = 60, date: str | None = None, unit: str = "kg", **kw: Any) -> Res:
    return observation(WEIGHT, kg, unit, date=date or days_ago(20), **kw)


def baseline(
    birth: str = "1980-03-02", gender: str = "female", with_weight: bool = True, **activity_kw: float
) -> list[Res]:
    """A 46-year-old with active DM, normal labs and nothing excluding: screens as candidate."""
    out = [patient(birth, gender), condition(DM, "Dermatomyositis")]
    out += activity(**activity_kw)
    out += normal_labs(gender)
    if with_weight:
        out.append(weight(60))
    return out


def without(resources: list[Res], code: tuple[str, str]) -> list[Res]:
    """The resources minus every Observation/Condition coded ``code``."""

    def coded(r: Res) -> bool:
        return any((c.get("system"), c.get("code")) == code for c in (r.get("code") or {}).get("coding", []))

    return [r for r in resources if not coded(r)]


# --- Screening ----------------------------------------------------------------------------------------
@cache
def default_mappings() -> Mappings:
    return load_mappings()


SECOND_TRIAL = "NCT02728752"


@cache
def second_trial_mappings() -> Mappings:
    """The second shipped trial (ProDERM), over the same mappings."""
    return load_mappings(trial=SECOND_TRIAL)


def record(*resources: Res, pid: str = PID) -> PatientRecord:
    grouped: dict[str, list[Res]] = defaultdict(list)
    meds: dict[str, Res] = {}
    patient_res = None
    for r in resources:
        rtype = r["resourceType"]
        if rtype == "Patient":
            patient_res = r
        elif rtype == "Medication":
            meds[f"Medication/{r['id']}"] = r
        else:
            grouped[rtype].append(r)
    return PatientRecord(
        patient_id=pid,
        patient=patient_res,
        resources={k: tuple(v) for k, v in grouped.items()},
        medications=meds,
    )


def screen(*resources: Res, as_of: dt.date = AS_OF, mappings: Mappings | None = None) -> SubjectResult:
    return screen_record(record(*resources), mappings or default_mappings(), as_of)


def criterion(result: SubjectResult, criterion_id: str, component: str | None = None) -> CriterionResult:
    found = next((c for c in result.criteria if c.id == criterion_id), None)
    assert found is not None, f"{criterion_id} not in {[c.id for c in result.criteria]}"
    if component is None:
        return found
    comp = next((c for c in found.components if c.id == component), None)
    assert comp is not None, f"{component} not in {[c.id for c in found.components]}"
    return comp


def verdict(result: SubjectResult, criterion_id: str, component: str | None = None) -> str:
    """The verdict code ("met", "not-met", "unknown", ...) of a criterion or one of its components."""
    return criterion(result, criterion_id, component).verdict.value


def reason(result: SubjectResult, criterion_id: str, component: str | None = None) -> str:
    return criterion(result, criterion_id, component).reason


def evidence_text(result: SubjectResult, criterion_id: str, component: str | None = None) -> str:
    c = criterion(result, criterion_id, component)
    return " | ".join(f"{e.reference}: {e.detail}" for e in c.evidence)


# --- Files: several patients, Bundles and NDJSON ------------------------------------------------------
def for_patient(resources: list[Res], pid: str) -> list[Res]:
    """A copy of ``resources`` about Patient/``pid``, every id prefixed with ``pid`` so copies never collide."""
    out = []
    for r in resources:
        text = json.dumps(r).replace(f'"Patient/{PID}"', f'"Patient/{pid}"')
        copy = json.loads(text)
        copy["id"] = pid if copy["resourceType"] == "Patient" else f"{pid}-{copy['id']}"
        out.append(copy)
    return out


def bundle(
    resources: list[Res],
    type: str = "collection",
    refs: str = "uuid",
    keep_ids: bool = True,
    base: str = "http://ehr.example.org/fhir",
) -> Res:
    """A Bundle of ``resources``.

    refs: "uuid" (fullUrl urn:uuid:<id>, references rewritten to it), "absolute" (fullUrl and references are
    absolute URLs) or "relative" (absolute fullUrl, references left as Type/id).
    keep_ids=False drops every resource id: the fullUrl is then the only identity (carebundle does this).
    """

    def full_url(r: Res) -> str:
        return f"urn:uuid:{r['id']}" if refs == "uuid" else f"{base}/{r['resourceType']}/{r['id']}"

    mapping = {f"{r['resourceType']}/{r['id']}": full_url(r) for r in resources}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (mapping.get(v, v) if k == "reference" and refs != "relative" else rewrite(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    entries = []
    for r in resources:
        body = rewrite(r)
        if not keep_ids:
            body.pop("id", None)
        entry: Res = {"fullUrl": full_url(r), "resource": body}
        if type == "transaction":
            entry["request"] = {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
        elif type == "searchset":
            entry["search"] = {"mode": "match"}
        elif type == "batch-response":
            entry["response"] = {"status": "200 OK", "location": f"{r['resourceType']}/{r['id']}/_history/1"}
        entries.append(entry)
    if type == "batch-response":
        entries.append({"response": {"status": "404 Not Found"}})  # an entry without a resource
    out: Res = {"resourceType": "Bundle", "type": type, "entry": entries}
    if type == "searchset":
        out["total"] = len(resources)
        out["link"] = [{"relation": "next", "url": f"{base}/Observation?page=2"}]
    return out


def ndjson_lines(resources: list[Res]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in resources)


# A criteria file with the dermatomyositis gate only: tests append criteria, concepts or facts to it.
DM_GATE_TRIAL = """\
study = "TEST-1"
title = "t"
version = "1"
[[criteria]]
id = "diagnosis"
type = "inclusion"
gate = true
rule = { fact = "dm-diagnosis", op = "==", value = true }
"""
