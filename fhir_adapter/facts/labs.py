"""Measurements: latest value in window in the canonical unit, multiples of ULN, qualitative results,
and creatinine clearance (measured, else Cockcroft-Gault)."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from fhir_adapter.config.types import FactSpec
from fhir_adapter.facts import codes, units
from fhir_adapter.facts.context import Context
from fhir_adapter.facts.fhirjson import codings, texts
from fhir_adapter.facts.observations import Reading, has_value, in_window, reading, reference_high
from fhir_adapter.model import Evidence, Fact, Resource


def fmt(value: Decimal) -> str:
    """Human form of a value: at most 3 decimals, truncated toward zero so that a value just below a
    threshold is never displayed as the threshold itself."""
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -3:
        value = value.quantize(Decimal("0.001"), rounding=ROUND_DOWN)
    return format(value.normalize(), "f")


def window_text(spec: FactSpec) -> str:
    if spec.get("window_years") is not None:
        return f"in the last {spec.get('window_years')} calendar years"
    if spec.get("window_months") is not None:
        return f"in the last {spec.get('window_months')} calendar months"
    return f"in the last {spec.get('window_days')} days"


def latest_reading(ctx: Context, spec: FactSpec, concept_name: str) -> tuple[Resource, str, Reading] | Fact:
    """The newest valued result in the window, or an unknown Fact saying why there is none."""
    found = in_window(ctx.matching("Observation", concept_name), ctx.as_of, ctx.window_start(spec))
    valued = [d for d in found if has_value(d.resource)]
    if not valued:
        if found:
            r = reading(found[0].resource)
            return Fact(
                spec.name,
                None,
                reason=f"{spec.label}: {r} ({found[0].resource.get('id')}) {window_text(spec)}",
            )
        return Fact(spec.name, None, reason=f"no {spec.label} {window_text(spec)}")
    obs = valued[0].resource
    r = reading(obs)
    ref = f"Observation/{obs.get('id', '?')}"
    if isinstance(r, str):
        return Fact(spec.name, None, reason=f"{spec.label} {ref}: {r}")
    return obs, valued[0].date.isoformat(), r


def _in_unit(ctx: Context, spec: FactSpec, r: Reading, concept: str) -> Decimal | str:
    target = str(spec.get("unit"))
    source = r.unit
    if source is None:
        if spec.get("unitless_means"):
            source = str(spec.get("unitless_means"))
        else:
            return "has no unit"
    converted = units.convert(ctx.mappings.units, r.value, source, target, concept)
    if converted is None:
        return f"unit {source!r} cannot be converted to {target}"
    return converted


def measurement(ctx: Context, spec: FactSpec) -> Fact:
    concept = str(spec.get("concept"))
    got = latest_reading(ctx, spec, concept)
    if isinstance(got, Fact):
        return got
    obs, date, r = got
    value = _in_unit(ctx, spec, r, concept)
    ref = f"Observation/{obs.get('id', '?')}"
    if isinstance(value, str):
        return Fact(spec.name, None, reason=f"{spec.label} {ref} {value}")
    unit = str(spec.get("unit"))
    shown_unit = "" if unit.startswith("{") else f" {unit}"
    original = f" (reported {r.comparator or ''}{fmt(r.value)} {r.unit})" if r.unit and r.unit != unit else ""
    detail = f"{spec.label} {r.comparator or ''}{fmt(value)}{shown_unit}{original} on {date}"
    return Fact(
        spec.name,
        value,
        unit=unit,
        evidence=(Evidence(ref, detail),),
        reason=detail,
        comparator=r.comparator,
    )


def uln_ratio(ctx: Context, spec: FactSpec) -> Fact:
    """value / ULN; ULN from the result's own range, else the per-sex default table."""
    concept = str(spec.get("concept"))
    got = latest_reading(ctx, spec, concept)
    if isinstance(got, Fact):
        return got
    obs, date, r = got
    ref = f"Observation/{obs.get('id', '?')}"
    unit = str(spec.get("unit"))
    sex = ctx.sex(spec)
    sexes = {
        "female": ctx.concept(str(spec.get("female_concept"))),
        "male": ctx.concept(str(spec.get("male_concept"))),
    }
    high = reference_high(obs, sex, ctx.mappings.units, unit, concept, sexes)
    value = _in_unit(ctx, spec, r, concept)
    if high is not None and high[0] > 0:
        uln, uln_unit = high
        if uln_unit == "?":
            uln_unit = r.unit or unit
        if uln_unit == unit and isinstance(value, Decimal):
            numerator, shown = value, f"{fmt(value)} {unit}"
        elif r.unit is not None and units.normalise_unit(ctx.mappings.units, r.unit) == units.normalise_unit(
            ctx.mappings.units, uln_unit
        ):
            numerator, shown = r.value, f"{fmt(r.value)} {r.unit}"
        else:
            return Fact(
                spec.name,
                None,
                reason=f"{spec.label} {ref}: reference range unit {uln_unit!r} not comparable",
            )
        source = f"ULN {fmt(uln)} {uln_unit} from the result's reference range"
    else:
        if isinstance(value, str):
            return Fact(spec.name, None, reason=f"{spec.label} {ref} {value}")
        table = spec.get("uln") or {}
        default = table.get(sex) if sex else None
        default = default if default is not None else table.get("any")
        if default is None:
            why = "sex unknown" if table and sex is None else "no default"
            return Fact(spec.name, None, reason=f"{spec.label} {ref}: no reference range and no ULN ({why})")
        uln = Decimal(str(default))
        numerator, shown = value, f"{fmt(value)} {unit}"
        source = f"ULN {fmt(uln)} {unit} from the default table" + (f" ({sex})" if "any" not in table else "")
    ratio = numerator / uln
    detail = f"{spec.label} {r.comparator or ''}{shown} on {date} = {fmt(ratio)} x ULN; {source}"
    return Fact(
        spec.name,
        ratio,
        unit="x ULN",
        evidence=(Evidence(ref, detail),),
        reason=detail,
        comparator=r.comparator,
    )


def _polarity(ctx: Context, spec: FactSpec, obs: Resource) -> bool | None:
    pos = ctx.concept(str(spec.get("positive_concept")))
    neg = ctx.concept(str(spec.get("negative_concept")))
    value = obs.get("valueCodeableConcept")
    if value is not None:
        if codes.code_matches(neg, value):
            return False
        if codes.code_matches(pos, value):
            return True
        candidates = texts(value)
    else:
        s = obs.get("valueString")
        candidates = [s] if isinstance(s, str) else []
    # Negative first: "non-reactive" contains "reactive", "not detected" contains "detected".
    if codes.text_matches(neg, candidates):
        return False
    if codes.text_matches(pos, candidates):
        return True
    for interp in obs.get("interpretation") or []:
        if codes.code_matches(neg, interp):
            return False
        if codes.code_matches(pos, interp):
            return True
    return None


def qualitative(ctx: Context, spec: FactSpec) -> Fact:
    found = in_window(
        ctx.matching("Observation", str(spec.get("concept"))), ctx.as_of, ctx.window_start(spec)
    )
    valued = [d for d in found if has_value(d.resource) or d.resource.get("interpretation")]
    if not valued:
        return Fact(spec.name, None, reason=f"no {spec.label} result {window_text(spec)}")
    obs, date = valued[0].resource, valued[0].date.isoformat()
    ref = f"Observation/{obs.get('id', '?')}"
    polarity = _polarity(ctx, spec, obs)
    shown = _shown_value(obs)
    if polarity is None:
        return Fact(
            spec.name, None, reason=f"{spec.label} {ref} result {shown!r} is neither positive nor negative"
        )
    word = "positive" if polarity else "negative"
    detail = f"{spec.label} {word} ({shown}) on {date}"
    return Fact(spec.name, polarity, evidence=(Evidence(ref, detail),), reason=detail)


def _shown_value(obs: Resource) -> str:
    if isinstance(obs.get("valueString"), str):
        return str(obs["valueString"])[:40]
    value = obs.get("valueCodeableConcept")
    if value is not None:
        for _, code, display in codings(value):
            return display or code
        return str(value.get("text", ""))[:40]
    if "valueQuantity" in obs:
        q = obs["valueQuantity"]
        return f"{q.get('comparator', '')}{q.get('value')} {q.get('unit', '')}".strip()
    return "interpretation only"


def creatinine_clearance(ctx: Context, spec: FactSpec) -> Fact:
    measured_spec = FactSpec(
        spec.name, "measurement", "measured creatinine clearance", {**spec.params, "unit": "mL/min"}
    )
    measured = measurement_for(ctx, measured_spec, str(spec.get("measured_concept")))
    if measured.value is not None:
        return measured
    creat_spec = FactSpec(spec.name, "measurement", "serum creatinine", {**spec.params, "unit": "umol/L"})
    creat = measurement_for(ctx, creat_spec, str(spec.get("creatinine_concept")))
    age, sex = ctx.fact(str(spec.get("age_fact"))), ctx.fact(str(spec.get("sex_fact")))
    weight = ctx.fact(str(spec.get("weight_fact")))
    missing = [f.reason for f in (creat, age, sex, weight) if f.value is None]
    if missing or not isinstance(creat.value, Decimal) or not isinstance(age.value, Decimal):
        return Fact(
            spec.name,
            None,
            reason="no measured creatinine clearance, and Cockcroft-Gault lacks: " + "; ".join(missing),
        )
    if creat.comparator is not None or weight.comparator is not None or creat.value <= 0:
        return Fact(spec.name, None, reason=f"Cockcroft-Gault not computable from {creat.reason}")
    assert isinstance(weight.value, Decimal)
    mg_dl = creat.value / Decimal(str(spec.get("umol_per_mg_dl")))
    value = (Decimal(140) - age.value) * weight.value / (Decimal(72) * mg_dl)
    if sex.value == "female":
        value *= Decimal(str(spec.get("female_factor")))
    detail = (
        f"Cockcroft-Gault {fmt(value)} mL/min from creatinine {fmt(creat.value)} umol/L "
        f"({fmt(mg_dl)} mg/dL), age {age.value}, {sex.value}, weight {fmt(weight.value)} kg"
    )
    evidence = (*creat.evidence, *age.evidence, *weight.evidence)
    return Fact(spec.name, value, unit="mL/min", evidence=evidence, reason=detail)


def measurement_for(ctx: Context, spec: FactSpec, concept: str) -> Fact:
    return measurement(ctx, FactSpec(spec.name, spec.kind, spec.label, {**spec.params, "concept": concept}))


def quotient(ctx: Context, spec: FactSpec) -> Fact:
    """A value derived from two facts: ``numerator_fact / denominator_fact ** denominator_power`` (BMI
    from weight and height), unless ``measured_fact`` (a reported value) is known. Unknown like any
    fact: a missing or censored input leaves the result unknown, with the reason."""
    measured_name = spec.get("measured_fact")
    if measured_name:
        measured = ctx.fact(str(measured_name))
        if measured.value is not None:
            return Fact(
                spec.name,
                measured.value,
                unit=measured.unit,
                evidence=measured.evidence,
                reason=measured.reason,
                comparator=measured.comparator,
            )
    num = ctx.fact(str(spec.get("numerator_fact")))
    den = ctx.fact(str(spec.get("denominator_fact")))
    power = int(spec.get("denominator_power", 1))
    missing = [f.reason for f in (num, den) if f.value is None]
    if missing:
        prefix = "no reported value, and " if measured_name else ""
        return Fact(spec.name, None, reason=f"{spec.label}: {prefix}" + "; ".join(missing))
    if not isinstance(num.value, Decimal) or not isinstance(den.value, Decimal) or den.value <= 0:
        return Fact(spec.name, None, reason=f"{spec.label}: inputs are not positive numbers")
    if num.comparator is not None or den.comparator is not None:
        return Fact(
            spec.name, None, reason=f"{spec.label}: an input is censored ({num.reason}; {den.reason})"
        )
    value = num.value / den.value**power
    unit = str(spec.get("unit"))
    detail = f"{spec.label} {fmt(value)} {unit} from {num.reason} and {den.reason}"
    return Fact(spec.name, value, unit=unit, evidence=(*num.evidence, *den.evidence), reason=detail)
