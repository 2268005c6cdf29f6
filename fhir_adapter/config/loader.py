"""Load mappings/ plus site overlays, validate them, and build the typed ``Mappings``.

Every problem is a ``ConfigError`` naming the file and the key, because the people who edit these files
are analysts, not the authors of this code.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from fhir_adapter import data_files
from fhir_adapter.config import rules
from fhir_adapter.config.types import (
    HIERARCHICAL_SYSTEMS,
    Concept,
    Conversion,
    FactSpec,
    Glucocorticoid,
    Mappings,
    MedicationRules,
    UnitTable,
)
from fhir_adapter.errors import ConfigError

DEFAULT_TRIAL = "NCT05495321"

# Facts each kind needs to reference by concept name: checked so a typo fails at load, not mid-run.
_CONCEPT_KEYS = (
    "concept",
    "measured_concept",
    "creatinine_concept",
    "heart_failure_concept",
    "nyha_observation_concept",
    "class_3_4_concept",
    "class_1_2_concept",
    "encounter_concept",
    "reason_concept",
    "route",
)


def default_mappings_dir() -> Path:
    return data_files.mappings_dir()


def profiles_dir() -> Path:
    return data_files.profiles_dir()


@cache
def _schema() -> dict[str, Any]:
    path = profiles_dir() / "mappings.schema.json"
    try:
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the mappings schema ({exc.strerror})") from exc
    return loaded


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc


def _validate(doc: dict[str, Any], definition: str, path: Path) -> None:
    schema = {"$ref": f"#/$defs/{definition}", **{k: v for k, v in _schema().items() if k != "$id"}}
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        # The deepest error under a oneOf says the most; report the first one, keyed by its path.
        err = jsonschema.exceptions.best_match(errors)
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"{path}: {key}: {err.message}")


def _decimal(value: Any, where: str) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise ConfigError(f"{where}: not a number: {value!r}") from exc


def _fraction(value: Any, where: str) -> tuple[Decimal, Decimal]:
    num, _, den = str(value).partition("/")
    result = (_decimal(num, where), _decimal(den or "1", where))
    if result[1] == 0:
        raise ConfigError(f"{where}: division by zero in {value!r}")
    return result


def _split_code(entry: str, where: str) -> tuple[str, str]:
    system, _, code = entry.partition("|")
    if not system or not code:
        raise ConfigError(f"{where}: expected 'system|code', got {entry!r}")
    if code.endswith("*") and system not in HIERARCHICAL_SYSTEMS:
        raise ConfigError(f"{where}: prefix {entry!r} is only allowed for ICD-10, ICD-10-CM and ATC codes")
    return system, code


def _build_concepts(raw: Mapping[str, dict[str, Any]], path_of: Mapping[str, str]) -> dict[str, Concept]:
    def resolve(name: str, seen: tuple[str, ...]) -> dict[str, list[str]]:
        if name in seen:
            raise ConfigError(f"{path_of[name]}: concepts.{name}.include: include cycle {' -> '.join(seen)}")
        body = raw[name]
        merged = {k: list(body.get(k, [])) for k in ("codes", "text", "text_exclude", "text_exact")}
        for inc in body.get("include", []):
            if inc not in raw:
                raise ConfigError(f"{path_of[name]}: concepts.{name}.include: unknown concept {inc!r}")
            sub = resolve(inc, (*seen, name))
            for k in merged:
                merged[k].extend(sub[k])
        return merged

    concepts: dict[str, Concept] = {}
    for name in raw:
        body = resolve(name, ())
        where = f"{path_of[name]}: concepts.{name}.codes"
        exact: set[tuple[str, str]] = set()
        prefixes: list[tuple[str, str]] = []
        for entry in body["codes"]:
            system, code = _split_code(entry, where)
            if code.endswith("*"):
                prefixes.append((system, code[:-1].upper()))
            else:
                exact.add((system, code))
        concepts[name] = Concept(
            name=name,
            codes=frozenset(exact),
            prefixes=tuple(prefixes),
            text=tuple(t.lower() for t in body["text"]),
            text_exclude=tuple(t.lower() for t in body["text_exclude"]),
            text_exact=frozenset(t.strip().lower() for t in body["text_exact"]),
            systems=frozenset(s for s, _ in exact) | frozenset(s for s, _ in prefixes),
        )
    return concepts


def _merge_concepts(
    base: dict[str, dict[str, Any]], overlay: Mapping[str, Any], path: Path, path_of: dict[str, str]
) -> None:
    for name, body in overlay.items():
        if name not in base:
            # Concept names are fixed by the spec; an unknown one is almost always a typo.
            known = ", ".join(sorted(base))
            raise ConfigError(f"{path}: concepts.{name}: unknown concept (known: {known})")
        for key in ("codes", "text", "text_exclude", "text_exact", "include"):
            if key in body:
                base[name].setdefault(key, [])
                base[name][key] = [*base[name][key], *body[key]]
        path_of[name] = f"{path_of[name]} + {path}"


def _build_units(raw: Mapping[str, Any], path: str) -> UnitTable:
    conversions = tuple(
        Conversion(
            source=c["from"],
            target=c["to"],
            factor=_decimal(c["factor"], f"{path}: conversions[{i}].factor"),
            concepts=frozenset(c.get("concepts", [])),
        )
        for i, c in enumerate(raw.get("conversions", []))
    )
    aliases = dict(raw.get("aliases", {}))
    return UnitTable(
        aliases=aliases, conversions=conversions, aliases_lower={k.lower(): v for k, v in aliases.items()}
    )


def _build_medications(raw: Mapping[str, Any], path: Path) -> MedicationRules:
    gcs = []
    for name, body in raw["glucocorticoids"].items():
        where = f"{path}: glucocorticoids.{name}"
        codes = frozenset(_split_code(c, f"{where}.codes") for c in body.get("codes", []))
        gcs.append(
            Glucocorticoid(
                name=name,
                factor=_decimal(body["factor"], f"{where}.factor"),
                codes=codes,
                names=tuple(n.lower() for n in body["names"]),
            )
        )
    return MedicationRules(
        glucocorticoids=tuple(gcs),
        taken_statuses=frozenset(raw["statuses"]["taken"]),
        administered_statuses=frozenset(raw["statuses"]["administered"]),
        never_statuses=frozenset(raw["statuses"]["never"]),
        frequency_codes={
            k.upper(): _fraction(v, f"{path}: frequency_codes.{k}") for k, v in raw["frequency_codes"].items()
        },
        periods_per_day={
            k: _fraction(v, f"{path}: periods_per_day.{k}") for k, v in raw["periods_per_day"].items()
        },
        count_units=frozenset(u.lower() for u in raw["dose_units"].get("count", [])),
    )


def _check_facts(
    facts: Mapping[str, FactSpec], concepts: Mapping[str, Concept], path_of: Mapping[str, Path]
) -> None:
    for fact in facts.values():
        path = path_of[fact.name]
        for key in _CONCEPT_KEYS:
            name = fact.get(key)
            if name is not None and name not in concepts:
                raise ConfigError(f"{path}: facts.{fact.name}.{key}: unknown concept {name!r}")
        for name in fact.get("concepts", []) or []:
            if name not in concepts:
                raise ConfigError(f"{path}: facts.{fact.name}.concepts: unknown concept {name!r}")
        weight = fact.get("weight_fact")
        if weight is not None and weight not in facts:
            raise ConfigError(f"{path}: facts.{fact.name}.weight_fact: unknown fact {weight!r}")
        for key in ("uln", "umol_per_mg_dl", "female_factor"):
            value = fact.get(key)
            if isinstance(value, dict):
                for sex, v in value.items():
                    _decimal(v, f"{path}: facts.{fact.name}.{key}.{sex}")
            elif value is not None:
                _decimal(value, f"{path}: facts.{fact.name}.{key}")


def load_mappings(
    mappings_dir: Path | None = None,
    overlays: Iterable[Path] = (),
    trial: str = DEFAULT_TRIAL,
) -> Mappings:
    """Read, validate and merge mappings/ and the site overlays (applied in order)."""
    base = mappings_dir or default_mappings_dir()
    files: list[Path] = []

    def read(name: str, definition: str) -> tuple[dict[str, Any], Path]:
        path = base / name
        doc = _read_toml(path)
        _validate(doc, definition, path)
        files.append(path)
        return doc, path

    concepts_doc, concepts_path = read("concepts.toml", "concepts_file")
    units_doc, units_path = read("units.toml", "units_file")
    facts_doc, facts_path = read("facts.toml", "facts_file")
    meds_doc, meds_path = read("medications.toml", "medications_file")
    criteria_doc, criteria_path = read(f"criteria/{trial}.toml", "criteria_file")

    raw_concepts: dict[str, dict[str, Any]] = {k: dict(v) for k, v in concepts_doc["concepts"].items()}
    path_of = dict.fromkeys(raw_concepts, str(concepts_path))
    raw_facts: dict[str, dict[str, Any]] = {k: dict(v) for k, v in facts_doc["facts"].items()}
    # The file that last set each fact, so an error in an overlay names the overlay.
    fact_paths = dict.fromkeys(raw_facts, facts_path)
    aliases = dict(units_doc.get("aliases", {}))
    conversions = list(units_doc.get("conversions", []))

    for overlay in overlays:
        doc = _read_toml(overlay)
        _validate(doc, "overlay_file", overlay)
        files.append(overlay)
        _merge_concepts(raw_concepts, doc.get("concepts", {}), overlay, path_of)
        for name, body in doc.get("facts", {}).items():
            if name not in raw_facts:
                raise ConfigError(
                    f"{overlay}: facts.{name}: unknown fact (an overlay changes existing facts only)"
                )
            merged = {**raw_facts[name], **body}
            _validate({"facts": {name: merged}}, "facts_file", overlay)
            raw_facts[name] = merged
            fact_paths[name] = overlay
        units = doc.get("units", {})
        aliases.update(units.get("aliases", {}))
        conversions.extend(units.get("conversions", []))

    concepts = _build_concepts(raw_concepts, path_of)
    facts = {
        name: FactSpec(name=name, kind=body["kind"], label=body.get("label", name), params=body)
        for name, body in raw_facts.items()
    }
    _check_facts(facts, concepts, fact_paths)
    trial_obj = rules.build_trial(criteria_doc, criteria_path, facts)

    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return Mappings(
        concepts=concepts,
        units=_build_units({"aliases": aliases, "conversions": conversions}, str(units_path)),
        facts=facts,
        medications=_build_medications(meds_doc, meds_path),
        trial=trial_obj,
        files=tuple(str(p) for p in files),
        fingerprint=f"{trial_obj.version}+{digest.hexdigest()[:12]}",
    )
