"""Measurements: latest value in window in the canonical unit, multiples of ULN, qualitative results,
and creatinine clearance (measured, else Cockcroft-Gault)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from fhir_adapter.config.types import FactSpec
from fhir_adapter.facts import codes, notes, units
from fhir_adapter.facts.context import Context
from fhir_adapter.facts.fhirjson import codings, texts
from fhir_adapter.facts.observations import Dated, Reading, has_value, in_window, reading, reference_high
from fhir_adapter.facts.readings import from_note, ref_of, via, where
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


@dataclass(frozen=True, slots=True)
class Latest:
    """The reading that decides a measurement: the resource (or view), its date, its value."""

    obs: Resource
    date: str
    reading: Reading


def evidence(obs: Resource, detail: str) -> Evidence:
    return Evidence(ref_of(obs), detail, from_note=from_note(obs))


def ambiguous(valued: list[Dated]) -> bool:
    """The two newest readings are parts of one resource with the same date (two components of one
    Observation, two results of one report): nothing in the spec orders them."""
    if len(valued) < 2 or valued[0].key != valued[1].key:
        return False
    first, second = valued[0].resource, valued[1].resource
    return via(first) is not None and via(second) is not None and ref_of(first) == ref_of(second)


def latest_reading(
    ctx: Context, spec: FactSpec, concept_name: str, note_values: list[notes.NoteReading] | None = None
) -> Latest | Fact:
    """The newest valued result in the window, or an unknown Fact saying why there is none.

    ``note_values`` (newest first) take part when the site lets notes decide the concept: the newest one
    wins when it is newer than every recorded result.
    """
    found = in_window(ctx.observations(concept_name), ctx.as_of, ctx.window_start(spec))
    valued = [d for d in found if has_value(d.resource)]
    if (
        note_values
        and notes.decides(ctx, concept_name)
        and (not valued or note_values[0].date > valued[0].date)
    ):
        disagree = notes.disagreement(spec, note_values)
        if disagree is not None:
            return disagree
        note = note_values[0]
        return Latest(note.as_view(), note.date.isoformat(), Reading(note.value, note.unit, None))
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
    ref = ref_of(obs)
    if isinstance(r, str):
        return Fact(spec.name, None, reason=f"{spec.label} {ref}{where(obs)}: {r}")
    if ambiguous(valued):
        other = reading(valued[1].resource)
        if not isinstance(other, Reading) or other != r:
            return Fact(
                spec.name,
                None,
                reason=f"{spec.label}: {ref} holds more than one result on {valued[0].date} "
                f"({where(obs).strip(' ()')}; {where(valued[1].resource).strip(' ()')})",
            )
    return Latest(obs, valued[0].date.isoformat(), r)


def _note_values(ctx: Context, spec: FactSpec, concept: str) -> list[notes.NoteReading]:
    return notes.in_window(ctx, spec, concept)


def _suggest(fact: Fact, values: list[notes.NoteReading], got: Latest | Fact) -> Fact:
    if isinstance(got, Latest) and from_note(got.obs):
        return fact  # the note decided: it is evidence, not a suggestion
    decided_on = None
    if isinstance(got, Latest) and fact.value is not None:
        decided_on = dt.date.fromisoformat(got.date)
    return notes.with_suggestions(fact, values, decided_on)


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
    values = _note_values(ctx, spec, concept)
    got = latest_reading(ctx, spec, concept, values)
    fact = got if isinstance(got, Fact) else _measured(ctx, spec, concept, got)
    return _suggest(fact, values, got)


def _measured(ctx: Context, spec: FactSpec, concept: str, got: Latest) -> Fact:
    obs, date, r = got.obs, got.date, got.reading
    value = _in_unit(ctx, spec, r, concept)
    ref = ref_of(obs)
    if isinstance(value, str):
        return Fact(spec.name, None, reason=f"{spec.label} {ref}{where(obs)} {value}")
    unit = str(spec.get("unit"))
    shown_unit = "" if unit.startswith("{") else f" {unit}"
    implausible = _below_minimum(spec, value, f"{fmt(value)}{shown_unit}", f"{ref}{where(obs)}")
    if implausible is not None:
        return implausible
    original = f" (reported {r.comparator or ''}{fmt(r.value)} {r.unit})" if r.unit and r.unit != unit else ""
    detail = f"{spec.label} {r.comparator or ''}{fmt(value)}{shown_unit}{original} on {date}{where(obs)}"
    return Fact(
        spec.name,
        value,
        unit=unit,
        evidence=(evidence(obs, detail),),
        reason=detail,
        comparator=r.comparator,
    )


def _below_minimum(
    spec: FactSpec, value: Decimal, shown: str, ref: str, *, unit_known: bool = True
) -> Fact | None:
    """A result below the fact's ``minimum`` (a negative count or enzyme: a data error) decides nothing;
    the newest result is the one that counts, so the fact is unknown rather than read from an older one.
    ``unit_known`` False: ``value`` is in a unit of its own, so only its sign can be judged (every
    conversion keeps it), against a minimum of zero or above."""
    minimum = spec.get("minimum")
    if minimum is None:
        return None
    floor = Decimal(str(minimum))
    if (value >= floor) if unit_known else (floor < 0 or value >= 0):
        return None
    return Fact(
        spec.name, None, reason=f"{spec.label} {ref}: {shown} is below {minimum}, not a plausible result"
    )


def uln_ratio(ctx: Context, spec: FactSpec) -> Fact:
    """value / ULN; ULN from the result's own range, else the per-sex default table."""
    concept = str(spec.get("concept"))
    values = _note_values(ctx, spec, concept)
    got = latest_reading(ctx, spec, concept, values)
    fact = got if isinstance(got, Fact) else _ratio(ctx, spec, concept, got)
    return _suggest(fact, values, got)


def _ratio(ctx: Context, spec: FactSpec, concept: str, got: Latest) -> Fact:
    obs, date, r = got.obs, got.date, got.reading
    ref = f"{ref_of(obs)}{where(obs)}"
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
    # The minimum is in the fact's unit; a result read in its own unit (its range's) keeps its sign.
    in_unit = value if isinstance(value, Decimal) else numerator
    implausible = _below_minimum(spec, in_unit, shown, ref, unit_known=isinstance(value, Decimal))
    if implausible is not None:
        return implausible
    ratio = numerator / uln
    detail = f"{spec.label} {r.comparator or ''}{shown} on {date} = {fmt(ratio)} x ULN; {source}{where(obs)}"
    return Fact(
        spec.name,
        ratio,
        unit="x ULN",
        evidence=(evidence(obs, detail),),
        reason=detail,
        comparator=r.comparator,
    )


POSITIVE, NEGATIVE, INDETERMINATE = "positive", "negative", "indeterminate"


def _polarity(ctx: Context, spec: FactSpec, obs: Resource) -> str | None:
    """The result word of a qualitative result, from the concepts in mappings: indeterminate first (a
    weak or borderline result is reviewed, never used), then negative ("non-reactive" contains
    "reactive"), then positive; None when no word or code is known."""
    order = (
        (INDETERMINATE, ctx.concept(str(spec.get("indeterminate_concept")))),
        (NEGATIVE, ctx.concept(str(spec.get("negative_concept")))),
        (POSITIVE, ctx.concept(str(spec.get("positive_concept")))),
    )
    value = obs.get("valueCodeableConcept")
    if value is not None:
        for word, concept in order:
            if codes.code_matches(concept, value):
                return word
        candidates = texts(value)
    else:
        s = obs.get("valueString")
        candidates = [s] if isinstance(s, str) else []
    for word, concept in order:
        if codes.text_matches(concept, candidates):
            return word
    for interp in obs.get("interpretation") or []:
        for word, concept in order:
            if codes.code_matches(concept, interp):
                return word
    return None


def qualitative(ctx: Context, spec: FactSpec) -> Fact:
    found = in_window(ctx.observations(str(spec.get("concept"))), ctx.as_of, ctx.window_start(spec))
    valued = [d for d in found if has_value(d.resource) or d.resource.get("interpretation")]
    if not valued:
        return Fact(spec.name, None, reason=f"no {spec.label} result {window_text(spec)}")
    obs, date = valued[0].resource, valued[0].date.isoformat()
    ref = f"{ref_of(obs)}{where(obs)}"
    polarity = _polarity(ctx, spec, obs)
    shown = _shown_value(obs)
    if ambiguous(valued) and _polarity(ctx, spec, valued[1].resource) != polarity:
        return Fact(
            spec.name, None, reason=f"{spec.label}: {ref_of(obs)} holds results that disagree on {date}"
        )
    if polarity == INDETERMINATE:
        return Fact(
            spec.name, None, reason=f"{spec.label} {ref} result {shown!r} is indeterminate: needs review"
        )
    if polarity is None:
        return Fact(
            spec.name,
            None,
            reason=f"{spec.label} {ref} result {shown!r} is an unrecognised result word: neither positive nor negative",
        )
    detail = f"{spec.label} {polarity} ({shown}) on {date}{where(obs)}"
    return Fact(spec.name, polarity == POSITIVE, evidence=(evidence(obs, detail),), reason=detail)


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
    return _with_inputs_suggestions(_cockcroft_gault(ctx, spec, creat), measured, creat)


def _with_inputs_suggestions(fact: Fact, *inputs: Fact) -> Fact:
    """A derived fact carries its inputs' suggestions (a note's creatinine, weight or height)."""
    found = tuple(s for f in inputs for s in f.suggestions if s not in fact.suggestions)
    return dataclasses.replace(fact, suggestions=(*fact.suggestions, *found)) if found else fact


def _cockcroft_gault(ctx: Context, spec: FactSpec, creat: Fact) -> Fact:
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
    if weight.value <= 0:  # a wrong weight, not a clearance of 0 mL/min
        return Fact(spec.name, None, reason=f"Cockcroft-Gault not computable from {weight.reason}")
    mg_dl = creat.value / Decimal(str(spec.get("umol_per_mg_dl")))
    value = (Decimal(140) - age.value) * weight.value / (Decimal(72) * mg_dl)
    if sex.value == "female":
        value *= Decimal(str(spec.get("female_factor")))
    detail = (
        f"Cockcroft-Gault {fmt(value)} mL/min from creatinine {fmt(creat.value)} umol/L "
        f"({fmt(mg_dl)} mg/dL), age {age.value}, {sex.value}, weight {fmt(weight.value)} kg"
    )
    used = (*creat.evidence, *age.evidence, *weight.evidence)
    return _with_inputs_suggestions(
        Fact(spec.name, value, unit="mL/min", evidence=used, reason=detail), weight
    )


def measurement_for(ctx: Context, spec: FactSpec, concept: str) -> Fact:
    return measurement(ctx, FactSpec(spec.name, spec.kind, spec.label, {**spec.params, "concept": concept}))


def quotient(ctx: Context, spec: FactSpec) -> Fact:
    """A value derived from two facts: ``numerator_fact / denominator_fact ** denominator_power`` (BMI
    from weight and height), unless ``measured_fact`` (a reported value) is known. Unknown like any
    fact: a missing or censored input leaves the result unknown, with the reason."""
    measured_name = spec.get("measured_fact")
    measured = ctx.fact(str(measured_name)) if measured_name else None
    if measured is not None and measured.value is not None:
        return Fact(
            spec.name,
            measured.value,
            unit=measured.unit,
            evidence=measured.evidence,
            reason=measured.reason,
            comparator=measured.comparator,
            suggestions=measured.suggestions,
        )
    num = ctx.fact(str(spec.get("numerator_fact")))
    den = ctx.fact(str(spec.get("denominator_fact")))
    inputs = (num, den) if measured is None else (measured, num, den)
    return _with_inputs_suggestions(_quotient(spec, num, den, measured_name is not None), *inputs)


def _quotient(spec: FactSpec, num: Fact, den: Fact, has_measured: bool) -> Fact:
    power = int(spec.get("denominator_power", 1))
    missing = [f.reason for f in (num, den) if f.value is None]
    if missing:
        prefix = "no reported value, and " if has_measured else ""
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
