"""Generate examples/patients/*.json: synthetic prescreening patients for both shipped trials (FHIR R4).

Every patient is invented. Each Bundle is a `collection` with `urn:uuid:` fullUrls, the way EHR exports and
Synthea write them. Dates are relative to AS_OF (2026-06-15): screen with `--as-of 2026-06-15`.
Run `python examples/make_examples.py` after changing this file; tests check the files are current.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

AS_OF = dt.date(2026, 6, 15)
OUT = Path(__file__).parent / "patients"
LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
MYO = "https://fhir-adapter.org/CodeSystem/myositis-assessment"
LIS = "http://hospital.example.org/fhir/CodeSystem/lis-item"  # a site's local lab codes, as vendors send them

Res = dict[str, Any]


def day(days_before: int) -> str:
    return (AS_OF - dt.timedelta(days=days_before)).isoformat()


class Builder:
    def __init__(self, pid: str, birth: str, gender: str) -> None:
        self.pid = pid
        self.entries: list[Res] = []
        self.n = 0
        self.add(
            {
                "resourceType": "Patient",
                "id": pid,
                "birthDate": birth,
                "gender": gender,
                "name": [{"family": "Example", "given": [pid.upper()]}],
                "identifier": [{"system": "http://hospital.example.org/mrn", "value": f"MRN-{pid}"}],
            }
        )

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{self.pid}-{prefix}{self.n}"

    def add(self, resource: Res) -> Res:
        self.entries.append(resource)
        return resource

    @property
    def subject(self) -> Res:
        return {"reference": f"urn:uuid:{self.pid}"}

    def condition(
        self, system: str, code: str, display: str, status: str | None = "active", **extra: Any
    ) -> Res:
        res: Res = {
            "resourceType": "Condition",
            "id": self._id("cond"),
            "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
            "subject": self.subject,
            "onsetDateTime": extra.pop("onset", day(400)),
        }
        if status:
            res["clinicalStatus"] = {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}
                ]
            }
        res.update(extra)
        return self.add(res)

    def dm(self) -> Res:
        return self.condition(SCT, "396230008", "Dermatomyositis")

    def obs(
        self,
        code: tuple[str, str, str],
        value: Any,
        unit: str | None,
        days_before: int,
        high: float | None = None,
        ucum: bool = True,
        **extra: Any,
    ) -> Res:
        system, c, display = code
        res: Res = {
            "resourceType": "Observation",
            "id": self._id("obs"),
            "status": "final",
            "code": {"coding": [{"system": system, "code": c, "display": display}], "text": display},
            "subject": self.subject,
            "effectiveDateTime": day(days_before),
        }
        if isinstance(value, str):
            res["valueString"] = value
        elif value is not None:
            q: Res = {"value": value}
            if unit:
                q["unit"] = unit
                if ucum:
                    q |= {"system": UCUM, "code": unit}
            res["valueQuantity"] = q
        if high is not None:
            rr: Res = {"value": high, "unit": unit}
            if ucum and unit:
                rr |= {"system": UCUM, "code": unit}
            res["referenceRange"] = [{"high": rr}]
        res.update(extra)
        return self.add(res)

    def normal_labs(self, days_before: int = 10, sex: str = "female") -> None:
        self.obs(HGB, 128, "g/L", days_before)
        self.obs(PLT, 215, "10*9/L", days_before)
        self.obs(CREA, 62, "umol/L", days_before)
        self.obs(TBIL, 9.8, "umol/L", days_before, high=21 if sex == "female" else 26)
        self.obs(
            HBSAG,
            None,
            None,
            120,
            valueCodeableConcept={"coding": [{"system": SCT, "code": "260385009", "display": "Negative"}]},
        )
        self.obs(HCV, "Non-reactive", None, 120)
        self.obs(WEIGHT, 60, "kg", 20)
        self.obs(HEIGHT, 165, "cm", 20)

    def med_request(
        self,
        drug: str,
        rxnorm: str,
        dose: float,
        unit: str | None,
        freq: int,
        period: float,
        start: str,
        status: str = "active",
        route: Res | None = None,
        **extra: Any,
    ) -> Res:
        dq: Res = {"value": dose}
        if unit:
            dq |= {"unit": unit, "system": UCUM, "code": unit}
        dosage: Res = {
            "timing": {
                "repeat": {
                    "frequency": freq,
                    "period": period,
                    "periodUnit": "d",
                    "boundsPeriod": {"start": start},
                }
            },
            "doseAndRate": [{"doseQuantity": dq}],
        }
        if route:
            dosage["route"] = route
        res: Res = {
            "resourceType": "MedicationRequest",
            "id": self._id("medrx"),
            "status": status,
            "intent": "order",
            "subject": self.subject,
            "authoredOn": start,
            "medicationCodeableConcept": {
                "coding": [{"system": RXNORM, "code": rxnorm, "display": drug}],
                "text": drug,
            },
            "dosageInstruction": [dosage],
        }
        res.update(extra)
        return self.add(res)

    def assessment(
        self, code: str, display: str, value: float, unit: str | None, days_before: int = 14
    ) -> Res:
        return self.obs((MYO, code, display), value, unit, days_before)

    def note(self, text: str, days_before: int, content_type: str = "text/plain; charset=utf-8") -> Res:
        """A clinic note: a DocumentReference with the text inline (base64 ``data``)."""
        return self.add(
            {
                "resourceType": "DocumentReference",
                "id": self._id("note"),
                "status": "current",
                "docStatus": "final",
                "type": {"coding": [{"system": LOINC, "code": "11506-3", "display": "Progress note"}]},
                "subject": self.subject,
                "date": day(days_before) + "T17:30:00+08:00",
                "content": [
                    {
                        "attachment": {
                            "contentType": content_type,
                            "language": "zh-CN" if any(ord(c) > 0x2E80 for c in text) else "en",
                            "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
                            "title": "Clinic note",
                            "creation": day(days_before) + "T17:30:00+08:00",
                        }
                    }
                ],
                "context": {"period": {"start": day(days_before), "end": day(days_before)}},
            }
        )

    def bundle(self) -> Res:
        return {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": _strip_id(r)} for r in self.entries],
        }


def _strip_id(r: Res) -> Res:
    # Resources in the Bundle are addressed by their urn:uuid fullUrl; the id stays for readability.
    return r


HGB = (LOINC, "718-7", "Hemoglobin [Mass/volume] in Blood")
PLT = (LOINC, "777-3", "Platelets [#/volume] in Blood by Automated count")
CREA = (LOINC, "14682-9", "Creatinine [Moles/volume] in Serum or Plasma")
TBIL = (LOINC, "14631-6", "Bilirubin.total [Moles/volume] in Serum or Plasma")
CK = (LOINC, "2157-6", "Creatine kinase [Enzymatic activity/volume] in Serum or Plasma")
ALT = (LOINC, "1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma")
LDH = (LOINC, "2532-0", "Lactate dehydrogenase [Enzymatic activity/volume] in Serum or Plasma")
HBSAG = (LOINC, "5196-1", "Hepatitis B virus surface Ag [Presence] in Serum or Plasma by Immunoassay")
HCV = (LOINC, "13955-0", "Hepatitis C virus Ab [Presence] in Serum or Plasma by Immunoassay")
WEIGHT = (LOINC, "29463-7", "Body weight")
HEIGHT = (LOINC, "8302-2", "Body height")
IV_ROUTE = {
    "coding": [{"system": SCT, "code": "47625008", "display": "Intravenous route"}],
    "text": "静脉滴注",
}


def active_disease(
    b: Builder, mmt8: float = 100, pga: float = 4.5, ck: float = 980, haq: float = 1.0
) -> None:
    b.assessment("mmt8-total", "MMT-8 total score", mmt8, None)
    b.assessment("ptga-vas", "Patient global assessment VAS", pga, "cm")
    b.assessment("haq-di", "HAQ-DI", haq, None)
    b.obs(CK, ck, "U/L", 12, high=200)


def patients() -> list[tuple[str, str, Builder]]:
    """(NCT05495321 status, what it shows, patient); the NCT02728752 status is in SECOND_TRIAL."""
    out: list[tuple[str, str, Builder]] = []

    b = Builder("dm01", "1981-03-02", "female")  # the spec's example patient
    b.dm()
    active_disease(b)
    b.normal_labs()
    b.med_request("predniSONE 5 MG Oral Tablet", "312615", 3, None, 1, 1, day(200))  # 15 mg/d, 0.25 mg/kg/d
    b.med_request(
        "Methotrexate 2.5 MG Oral Tablet", "105586", 4, None, 1, 7, day(300)
    )  # 10 mg weekly, stable
    out.append(("candidate", "active DM by MMT-8 + 3 CSMs; prednisone 0.25 mg/kg/d; stable methotrexate", b))

    b = Builder("dm02", "1975-09-30", "male")
    b.dm()
    b.assessment("mmt8-total", "MMT-8 total score", 125, None)  # exactly 125: abnormal
    b.obs(CK, 260, "U/L", 5, high=200)  # exactly 1.3 x ULN
    b.assessment("haq-di", "HAQ-DI", 0.25, None)  # exactly 0.25
    b.normal_labs(sex="male")
    b.entries = [e for e in b.entries if e.get("code", {}).get("coding", [{}])[0].get("code") != "5196-1"]
    out.append(
        ("potential-candidate", "boundaries met (MMT-8 125, CK 1.3 x ULN, HAQ 0.25); no HBsAg result", b)
    )

    b = Builder("dm03", "1968-01-20", "female")
    b.dm()
    active_disease(b)
    b.normal_labs()
    b.med_request("predniSONE 20 MG Oral Tablet", "312617", 1.5, None, 1, 1, day(20))  # 30 mg/d / 60 kg = 0.5
    out.append(("ineligible", "prednisone exactly 0.5 mg/kg/d (the limit is < 0.5)", b))

    b = Builder("dm04", "1990-07-07", "female")
    b.dm()
    active_disease(b)
    b.normal_labs()
    for d in (9, 8, 7):
        b.add(
            {
                "resourceType": "MedicationAdministration",
                "id": b._id("medadm"),
                "status": "completed",
                "subject": b.subject,
                "effectiveDateTime": day(d) + "T09:00:00+08:00",
                "medicationCodeableConcept": {
                    "coding": [{"system": RXNORM, "code": "6902", "display": "methylprednisolone"}],
                    "text": "注射用甲泼尼龙琥珀酸钠 500mg",
                },
                "dosage": {
                    "route": IV_ROUTE,
                    "dose": {"value": 500, "unit": "mg", "system": UCUM, "code": "mg"},
                },
            }
        )
    out.append(
        ("ineligible", "IV methylprednisolone pulse 500 mg x 3 (10.4 mg/kg/d prednisone-equivalent)", b)
    )

    b = Builder("pm05", "1972-02-11", "male")
    b.condition(SCT, "31384009", "Polymyositis")
    b.normal_labs(sex="male")
    out.append(
        ("ineligible", "polymyositis, not dermatomyositis: listed with the diagnosis criterion only", b)
    )

    b = Builder("dm06", "1950-06-15", "female")  # 76th birthday on the as-of date
    b.dm()
    active_disease(b)
    b.normal_labs()
    out.append(("ineligible", "76 today", b))

    b = Builder("dm07", "1950-06-16", "male")  # 75 on the day before the 76th birthday
    b.dm()
    active_disease(b)
    b.normal_labs(sex="male")
    b.obs(WEIGHT, 70, "kg", 5)
    out.append(("candidate", "75 on the day before the 76th birthday", b))

    b = Builder("dm08", "1985-11-03", "female")
    b.dm()
    active_disease(b)
    b.normal_labs()
    b.obs(HBSAG, "Positive", None, 30)
    out.append(("ineligible", "HBsAg positive (valueString)", b))

    b = Builder("dm09", "1979-04-18", "male")
    b.dm()
    active_disease(b)
    b.normal_labs(sex="male")
    pneu = b.condition(
        SCT, "233604007", "Pneumonia", status="resolved", onset=day(40), abatementDateTime=day(25)
    )
    b.add(
        {
            "resourceType": "Encounter",
            "id": b._id("enc"),
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "IMP",
                "display": "inpatient encounter",
            },
            "subject": b.subject,
            "period": {"start": day(40), "end": day(30)},
            "reasonReference": [{"reference": f"urn:uuid:{pneu['id']}"}],
        }
    )
    out.append(("ineligible", "inpatient stay for pneumonia 40-30 days ago", b))

    b = Builder("dm10", "1966-08-08", "male")
    b.dm()
    active_disease(b)
    b.normal_labs(sex="male")
    b.obs(CREA, 4.52, "mg/dL", 3)  # 400 umol/L: Cockcroft-Gault ~17 mL/min
    b.obs(WEIGHT, 154, "lbs", 3, ucum=False)
    out.append(("ineligible", "creatinine 4.52 mg/dL, 154 lbs: Cockcroft-Gault <= 30 mL/min", b))

    b = Builder("dm11", "1988-12-24", "female")
    b.condition(SCT, "238935002", "Dermatomyositis sine myositis")
    b.assessment("mdaat-cutaneous-vas", "MDAAT cutaneous VAS", 5.0, "cm")
    b.assessment("ptga-vas", "Patient global assessment VAS", 30, "mm")
    b.assessment("phga-vas", "Physician global assessment VAS", 4.0, "cm")
    b.assessment("mdaat-extramuscular-vas", "MDAAT extramuscular global VAS", 1.0, "cm")
    b.assessment("mmt8-total", "MMT-8 total score", 146, None)
    b.obs(CK, 120, "U/L", 12, high=200)
    b.normal_labs()
    out.append(
        (
            "candidate",
            "amyopathic DM via cutaneous VAS 5 cm and 3 CSMs (PGA 30 mm, PhGA 4 cm, extramuscular 1.0)",
            b,
        )
    )

    b = Builder("dm12", "1983-05-05", "female")
    b.dm()
    active_disease(b)
    b.normal_labs()
    b.med_request("mycophenolate mofetil 500 MG Oral Tablet", "68149", 2, None, 2, 1, day(30))
    out.append(("ineligible", "mycophenolate started 30 days ago", b))

    b = Builder("dm13", "1961-10-10", "male")
    b.dm()
    active_disease(b)
    b.normal_labs(sex="male")
    b.condition(SCT, "84114007", "Heart failure")
    out.append(("potential-candidate", "heart failure with no NYHA class recorded", b))

    b = Builder("dm14", "1970-03-15", "female")
    b.dm()
    b.assessment("mmt8-total", "MMT-8 total score", 98, None)
    b.assessment("phga-vas", "Physician global assessment VAS", 25, "mm")
    # Vendor shapes: local code first, no UCUM code, K/uL, stray whitespace in status, a duplicate result.
    b.add(
        {
            "resourceType": "Observation",
            "id": b._id("obs"),
            "status": "final",
            "code": {
                "coding": [
                    {"system": LIS, "code": "ALT01", "display": "丙氨酸氨基转移酶", "userSelected": True},
                    {"system": LOINC, "code": "1742-6"},
                ],
                "text": "ALT",
            },
            "subject": b.subject,
            "effectiveDateTime": day(6),
            "valueQuantity": {"value": 96, "unit": "IU/L"},
        }
    )
    b.add(
        {
            "resourceType": "Observation",
            "id": b._id("obs"),
            "status": "entered-in-error ",
            "code": {"coding": [{"system": LOINC, "code": "1742-6"}]},
            "subject": b.subject,
            "effectiveDateTime": day(2),
            "valueQuantity": {"value": 20, "unit": "IU/L"},
        }
    )
    b.obs(HGB, 12.9, "g/dL", 8)
    b.obs(PLT, 188, "K/uL", 8, ucum=False)
    b.obs(CREA, 0.71, "mg/dL", 8, ucum=False)
    b.obs(TBIL, "<3.4 umol/L", None, 8)
    b.obs(HBSAG, "Non-reactive", None, 100)
    b.obs(HCV, "Negative", None, 100)
    b.obs(WEIGHT, 132, "[lb_av]", 30)
    out.append(
        (
            "candidate",
            'vendor shapes: local codes, IU/L, K/uL, g/dL, mg/dL, "<3.4 umol/L", lbs, entered-in-error',
            b,
        )
    )

    b = Builder("dm15", "1977-07-21", "female")
    b.dm()
    active_disease(b)
    b.normal_labs()
    b.condition(SCT, "55464009", "Systemic lupus erythematosus")
    out.append(("ineligible", "systemic lupus erythematosus (other connective tissue disease)", b))

    b = Builder("dm16", "1964-02-29", "male")
    b.dm()
    active_disease(b)
    b.normal_labs(sex="male")
    b.condition(ICD10, "Z22.7", "Latent tuberculosis", status=None)
    out.append(("potential-candidate", "latent tuberculosis only: infection unknown, needs review", b))

    b = Builder("dm17", "1992-09-09", "female")
    b.dm()
    active_disease(b)
    b.normal_labs()
    for drug, code in (("penicillin", "7980"), ("sulfamethoxazole", "10180")):
        b.add(
            {
                "resourceType": "AllergyIntolerance",
                "id": b._id("allergy"),
                "patient": b.subject,
                "category": ["medication"],
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {"coding": [{"system": RXNORM, "code": code, "display": drug}]},
            }
        )
    out.append(("ineligible", "allergic to two drugs", b))

    b = Builder("dm18", "1958-01-01", "male")
    b.dm()
    b.assessment("mmt8-total", "MMT-8 total score", 112, None)
    b.med_request("prednisone", "8640", 30, "mg", 1, 1, day(10))
    b.add(
        {
            "resourceType": "MedicationRequest",
            "id": b._id("medrx"),
            "status": "active",
            "intent": "order",
            "subject": b.subject,
            "authoredOn": day(5),
            "medicationCodeableConcept": {"text": "甲泼尼龙片"},
            "dosageInstruction": [{"text": "8mg 每日一次 口服"}],
        }
    )
    out.append(("potential-candidate", "dose only as text; no body weight; few activity measures", b))

    # --- Patients for the second trial (NCT02728752, ProDERM) ---------------------------------------------
    b = Builder("pd19", "1948-02-14", "female")  # 78: too old for NCT05495321 (<= 75), not for ProDERM (< 80)
    b.dm()
    b.assessment("mmt8-total", "MMT-8 total score", 130, None)  # < 142 (ProDERM), not <= 125
    b.assessment("ptga-vas", "Patient global assessment VAS", 4.5, "cm")
    b.assessment("phga-vas", "Physician global assessment VAS", 3.0, "cm")
    b.obs(CK, 980, "U/L", 12, high=200)
    b.normal_labs()
    b.med_request("predniSONE 5 MG Oral Tablet", "312615", 2, None, 1, 1, day(120))  # 10 mg/d for months
    b.med_request("Methotrexate 2.5 MG Oral Tablet", "105586", 6, None, 1, 7, day(300))  # 15 mg weekly
    out.append(("ineligible", "78: too old for NCT05495321; MMT-8 130 and stable treatment fit ProDERM", b))

    b = Builder("pd20", "1979-08-01", "male")
    b.dm()
    active_disease(b)
    b.normal_labs(sex="male")
    b.obs(WEIGHT, 111.6, "kg", 3)  # 111.6 kg / 1.65 m^2 = 41.0 kg/m2
    b.med_request("Methotrexate 2.5 MG Oral Tablet", "105586", 6, None, 1, 7, day(300))
    out.append(("candidate", "BMI 41 from weight and height: excluded from ProDERM only", b))

    b = Builder("pd21", "1969-05-20", "female")
    b.condition(SCT, "396230008", "Dermatomyositis", onset=day(800))
    active_disease(b)
    b.normal_labs()
    b.condition(ICD10, "C50.9", "Malignant neoplasm of breast", status="remission", onset=day(450))
    b.med_request("Methotrexate 2.5 MG Oral Tablet", "105586", 6, None, 1, 7, day(300))
    out.append(
        (
            "candidate",
            "breast cancer 350 days after the myositis (in remission): cancer-associated myositis",
            b,
        )
    )

    b = Builder("pd22", "1986-10-30", "female")
    b.dm()
    active_disease(b)
    b.normal_labs()
    b.condition(
        SCT,
        "128053003",
        "Deep venous thrombosis",
        status="resolved",
        onset=day(180),
        abatementDateTime=day(90),
    )
    b.med_request("Methotrexate 2.5 MG Oral Tablet", "105586", 6, None, 1, 7, day(300))
    out.append(("candidate", "deep vein thrombosis 6 months ago, resolved: excluded from ProDERM only", b))

    b = Builder("pd23", "1974-12-12", "male")
    b.dm()
    active_disease(b)
    b.normal_labs(sex="male")
    old = b.med_request(
        "Methotrexate 2.5 MG Oral Tablet", "105586", 4, None, 1, 7, day(300), status="completed"
    )
    old["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["end"] = day(11)
    b.med_request("Methotrexate 2.5 MG Oral Tablet", "105586", 6, None, 1, 7, day(10))  # 10 -> 15 mg weekly
    out.append(("ineligible", "methotrexate raised from 10 to 15 mg weekly 10 days ago", b))

    # --- More of the record (docs/record-coverage.md): components, panels, result words, notes -------------
    b = Builder("dm24", "1982-04-09", "female")
    b.dm()
    b.obs(CK, 150, "U/L", 12, high=200)  # 0.75 x ULN: the enzymes do not make the disease active
    b.normal_labs()
    b.med_request("Methotrexate 2.5 MG Oral Tablet", "105586", 6, None, 1, 7, day(300))
    b.note(
        "Myositis clinic, follow-up.\n"
        "Weakness of hip flexors persists, rash on knuckles improving.\n"
        "MMT-8: 118/150, PGA 4/10, HAQ-DI 0.75.\n"
        "Last visit 2026-03-02: MMT-8 not done (patient declined); MMT-8 of the left side 72/80 in 2025.\n"
        "Next visit 4/10/2026 is not a score.\n"
        "Plan: continue methotrexate 15 mg weekly.",
        days_before=14,
    )
    out.append(("potential-candidate", "MMT-8, PGA and HAQ only in a clinic note: suggestions", b))

    b = Builder("dm25", "1976-11-30", "male")
    b.dm()
    b.add(
        {
            "resourceType": "Observation",
            "id": b._id("obs"),
            "status": "final",
            "code": {
                "coding": [{"system": LIS, "code": "MYO-CSM", "display": "Myositis core set measures"}],
                "text": "Myositis core set measures",
            },
            "subject": b.subject,
            "effectiveDateTime": day(20),
            "component": [
                {
                    "code": {"coding": [{"system": MYO, "code": "mmt8-total"}], "text": "MMT-8 total"},
                    "valueInteger": 110,
                },
                {
                    "code": {"text": "Patient global assessment VAS"},
                    "valueQuantity": {"value": 5, "unit": "cm", "system": UCUM, "code": "cm"},
                },
                {
                    "code": {"text": "Physician global assessment VAS"},
                    "valueQuantity": {"value": 35, "unit": "mm", "system": UCUM, "code": "mm"},
                },
                {
                    "code": {"coding": [{"system": MYO, "code": "haq-di"}], "text": "HAQ-DI"},
                    "valueQuantity": {"value": 1.25, "unit": "{score}", "system": UCUM, "code": "{score}"},
                },
            ],
        }
    )
    b.obs(CK, 150, "U/L", 12, high=310)
    b.normal_labs(sex="male")
    b.med_request("Methotrexate 2.5 MG Oral Tablet", "105586", 6, None, 1, 7, day(300))
    out.append(("candidate", "activity measures as components of one Observation", b))

    b = Builder("dm26", "1971-02-17", "female")
    b.dm()
    active_disease(b)
    b.normal_labs()
    b.entries = [
        e for e in b.entries if e.get("code", {}).get("coding", [{}])[0].get("code") not in ("718-7", "777-3")
    ]
    creat = next(e for e in b.entries if e.get("code", {}).get("coding", [{}])[0].get("code") == "14682-9")
    del creat["effectiveDateTime"]  # dated only by the report it belongs to
    b.med_request("Methotrexate 2.5 MG Oral Tablet", "105586", 6, None, 1, 7, day(300))
    b.add(
        {
            "resourceType": "DiagnosticReport",
            "id": b._id("report"),
            "status": "final",
            "category": [
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}
            ],
            "code": {
                "coding": [
                    {"system": LOINC, "code": "58410-2", "display": "CBC panel - Blood by Automated count"}
                ]
            },
            "subject": b.subject,
            "effectiveDateTime": day(6),
            "issued": day(6) + "T16:00:00+08:00",
            "contained": [
                {
                    "resourceType": "Observation",
                    "id": "hgb",
                    "status": "final",
                    "code": {"coding": [{"system": LOINC, "code": HGB[1], "display": HGB[2]}]},
                    "valueQuantity": {"value": 76, "unit": "g/L", "system": UCUM, "code": "g/L"},
                },
                {
                    "resourceType": "Observation",
                    "id": "plt",
                    "status": "final",
                    "code": {"coding": [{"system": LOINC, "code": PLT[1], "display": PLT[2]}]},
                    "valueQuantity": {"value": 180, "unit": "10*9/L", "system": UCUM, "code": "10*9/L"},
                },
            ],
            "result": [
                {"reference": "#hgb"},
                {"reference": "#plt"},
                {"reference": f"urn:uuid:{creat['id']}"},
            ],
        }
    )
    out.append(
        ("potential-candidate", "blood count only inside a DiagnosticReport panel (hemoglobin 76 g/L)", b)
    )

    b = Builder("dm27", "1987-06-06", "male")
    b.dm()
    active_disease(b)
    b.normal_labs(sex="male")
    b.entries = [
        e
        for e in b.entries
        if e.get("code", {}).get("coding", [{}])[0].get("code") not in ("5196-1", "13955-0")
    ]
    b.obs(HBSAG, "NEG", None, 60)
    b.obs(HCV, "弱阳性", None, 60)  # weakly positive: needs confirmation, neither excludes nor clears
    b.med_request("Methotrexate 2.5 MG Oral Tablet", "105586", 6, None, 1, 7, day(300))
    out.append(
        ("potential-candidate", 'result words: HBsAg "NEG", anti-HCV "弱阳性" (weakly positive: review)', b)
    )

    b = Builder("dm28", "1979-09-12", "female")
    b.dm()
    b.obs(CK, 150, "U/L", 12, high=200)
    b.normal_labs()
    b.med_request("Methotrexate 2.5 MG Oral Tablet", "105586", 6, None, 1, 7, day(300))
    b.note(
        "<html><body><h3>皮肌炎专科门诊记录</h3>"
        "<p>查体：徒手肌力检查(MMT-8)评分118分，患者总体评价VAS 4cm，医生总体评价(PhGA) 3/10。</p>"
        "<p>HAQ-DI评分0.75分。皮疹较前好转。</p><p>既往MMT-8未做。</p></body></html>",
        days_before=9,
        content_type="text/html; charset=utf-8",
    )
    out.append(
        ("potential-candidate", "MMT-8, PGA, PhGA and HAQ only in a Chinese HTML note: suggestions", b)
    )
    return out


# NCT02728752 (ProDERM) statuses of the same patients, and what decides them.
UNTREATED = "no systemic glucocorticoid or immunosuppressant in 28 days: stable-therapy unknown"
SECOND_TRIAL: dict[str, tuple[str, str]] = {
    "dm01": ("candidate", "stable prednisone and methotrexate; BMI 22"),
    "dm02": ("potential-candidate", "one core set measure known; untreated"),
    "dm03": ("potential-candidate", "prednisone started 20 days ago: stable-therapy unknown"),
    "dm04": ("potential-candidate", "IV methylprednisolone started 9 days ago: stable-therapy unknown"),
    "pm05": ("ineligible", "no dermatomyositis: diagnosis only"),
    "dm06": ("potential-candidate", "76 is young enough (< 80); " + UNTREATED),
    "dm07": ("potential-candidate", UNTREATED),
    "dm08": ("potential-candidate", "HBsAg is not a ProDERM criterion; " + UNTREATED),
    "dm09": ("potential-candidate", UNTREATED),
    "dm10": ("potential-candidate", UNTREATED),
    "dm11": ("ineligible", "MMT-8 146 is not < 142"),
    "dm12": ("candidate", "mycophenolate started 30 days ago: before the 28-day window"),
    "dm13": ("potential-candidate", UNTREATED),
    "dm14": ("potential-candidate", "no body height: BMI unknown; " + UNTREATED),
    "dm15": ("potential-candidate", "lupus is not a ProDERM criterion; " + UNTREATED),
    "dm16": ("potential-candidate", UNTREATED),
    "dm17": ("potential-candidate", UNTREATED),
    "dm18": ("potential-candidate", "prednisone started 10 days ago; no weight or height"),
    "pd19": ("candidate", "78 (< 80), MMT-8 130 (< 142), stable prednisone and methotrexate"),
    "pd20": ("ineligible", "BMI 41.0 kg/m2 (>= 40)"),
    "pd21": ("ineligible", "cancer-associated myositis; malignancy in the last 5 years"),
    "pd22": ("ineligible", "deep vein thrombosis in the last 12 months"),
    "pd23": ("potential-candidate", "methotrexate dose change 10 days ago: stable-therapy unknown"),
    "dm24": ("potential-candidate", "MMT-8 and the core set measures only in a note"),
    "dm25": ("candidate", "MMT-8 110 (< 142), PGA, PhGA and HAQ from components; stable methotrexate"),
    "dm26": ("candidate", "hemoglobin is not a ProDERM criterion; stable methotrexate"),
    "dm27": ("candidate", "serology is not a ProDERM criterion; stable methotrexate"),
    "dm28": ("potential-candidate", "MMT-8 and the core set measures only in a note"),
}


# Statuses that differ from the tables above when a site reads notes (examples/notes-on.toml: suggestions
# only) or lets note scores decide (examples/notes-decide.toml): (NCT05495321 on, NCT02728752 on,
# NCT05495321 decide, NCT02728752 decide, why). Every other patient keeps its status in both runs.
WITH_NOTES: dict[str, tuple[str, str, str, str, str]] = {
    "dm24": (
        "potential-candidate",
        "potential-candidate",
        "candidate",
        "candidate",
        "notes on: MMT-8 118/150, PGA 4/10, HAQ-DI 0.75 are suggestions; decide: they make the disease active",
    ),
    "dm26": (
        "ineligible",
        "candidate",
        "ineligible",
        "candidate",
        "notes on: the CBC panel is read (hemoglobin 76 g/L < 80: anemia), the creatinine takes the report's date",
    ),
    "dm28": (
        "potential-candidate",
        "potential-candidate",
        "candidate",
        "candidate",
        "notes on: the Chinese note's MMT-8 118, PGA 4 cm, PhGA 3/10, HAQ-DI 0.75 are suggestions; decide: they count",
    ),
}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    index = [
        "| patient | NCT05495321 | NCT02728752 | what it shows | NCT02728752: why |",
        "|---|---|---|---|---|",
    ]
    for status, why, b in patients():
        (OUT / f"{b.pid}.json").write_text(
            json.dumps(b.bundle(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        second, second_why = SECOND_TRIAL.get(b.pid, ("?", "?"))
        index.append(f"| {b.pid} | {status} | {second} | {why} | {second_why} |")
    notes = [
        "| patient | NCT05495321 notes on | NCT02728752 notes on | NCT05495321 decide | NCT02728752 decide | why |",
        "|---|---|---|---|---|---|",
        *(f"| {pid} | {' | '.join(row[:4])} | {row[4]} |" for pid, row in WITH_NOTES.items()),
    ]
    (Path(__file__).parent / "patients.md").write_text(
        "# Example patients (screen with `--as-of 2026-06-15`)\n\n"
        "Expected status per trial: `--trial NCT05495321` (the default) and `--trial NCT02728752`.\n\n"
        + "\n".join(index)
        + "\n\n## With clinical notes read\n\n"
        "`--mappings examples/notes-on.toml` reads DocumentReference and DiagnosticReport: values found in notes "
        "are suggestions (in the result and the worklist) and change no verdict. `--mappings "
        "examples/notes-decide.toml` also lets the activity scores of notes decide. The patients whose status "
        "differs from the table above in at least one of these runs (every other patient keeps its status in "
        "both):\n\n" + "\n".join(notes) + "\n",
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
