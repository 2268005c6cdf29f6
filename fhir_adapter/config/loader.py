"""Load mappings/ plus site overlays, validate them, and build the typed ``Mappings``.

Every problem is a ``ConfigError`` naming the file and the key, because the people who edit these files
are analysts, not the authors of this code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from fhir_adapter import data_files
from fhir_adapter.config import kinds, rules
from fhir_adapter.config.toml_file import read_toml
from fhir_adapter.config.types import (
    HIERARCHICAL_SYSTEMS,
    Concept,
    Conversion,
    FactSpec,
    Glucocorticoid,
    Mappings,
    MedicationRules,
    NoteRule,
    NoteSettings,
    NoteShape,
    UnitTable,
)
from fhir_adapter.errors import ConfigError
from fhir_adapter.facts import units as unit_table
from fhir_adapter.facts.fhirjson import is_sane


# Parameter names that refer to other definitions: checked at load, so a typo fails there, not mid-run.
def _is_concept_key(key: str) -> bool:
    return key == "concept" or key.endswith("_concept")


def _is_concepts_key(key: str) -> bool:
    return key == "concepts" or key.endswith("_concepts")


def _is_fact_key(key: str) -> bool:
    return key.endswith("_fact")


def fact_dependencies(spec: FactSpec) -> list[str]:
    """The facts a fact's parameters name (``weight_fact``, ``sex_fact`` ...): computed before it."""
    return [str(v) for k, v in spec.params.items() if _is_fact_key(k) and isinstance(v, str)]


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


def _validate(doc: dict[str, Any], definition: str, path: Path) -> None:
    schema = {"$ref": f"#/$defs/{definition}", **{k: v for k, v in _schema().items() if k != "$id"}}
    validator = jsonschema.Draft202012Validator(schema)
    try:
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    except RecursionError as exc:  # a rule nested deeper than the validator's stack
        raise ConfigError(f"{path}: nested too deeply") from exc
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


_WINDOW_KEYS = frozenset({"window_days", "window_months", "window_years"})


def _positive(value: Any, where: str) -> Decimal:
    """A factor, a limit of normal, a dose rate: a finite number above zero (0 would divide by zero or
    make every value 0; a negative one turns a comparison around)."""
    number = _decimal(value, where)
    if not is_sane(number) or number <= 0:
        raise ConfigError(f"{where}: {value!r} must be a finite number greater than 0")
    return number


def _fraction(value: Any, where: str) -> tuple[Decimal, Decimal]:
    num, _, den = str(value).partition("/")
    return (_positive(num, where), _positive(den or "1", where))


def _split_code(entry: str, where: str) -> tuple[str, str]:
    system, _, code = entry.partition("|")
    if not system or not code:
        raise ConfigError(f"{where}: expected 'system|code', got {entry!r}")
    if code.endswith("*") and system not in HIERARCHICAL_SYSTEMS:
        raise ConfigError(f"{where}: prefix {entry!r} is only allowed for ICD-10, ICD-10-CM and ATC codes")
    if code == "*":
        raise ConfigError(f"{where}: prefix {entry!r} would match every code of the system")
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
            factor=_positive(c["factor"], f"{path}: conversions[{i}].factor"),
            concepts=frozenset(c.get("concepts", [])),
        )
        for i, c in enumerate(raw.get("conversions", []))
    )
    aliases = dict(raw.get("aliases", {}))
    # The case-insensitive fallback only where it is unambiguous: "G/L" (giga per litre) and "g/l" (grams)
    # are both aliases, so "G/l" means neither, and stays an unknown unit.
    targets: dict[str, set[str]] = {}
    for key, target in aliases.items():
        targets.setdefault(key.lower(), set()).add(target)
    lower = {k: next(iter(v)) for k, v in targets.items() if len(v) == 1}
    return UnitTable(aliases=aliases, conversions=conversions, aliases_lower=lower)


def _check_units(
    table: UnitTable,
    alias_paths: Mapping[str, Path],
    conversion_paths: Sequence[Path],
    concepts: Mapping[str, Concept],
) -> None:
    """Aliases lead to a code in one step, conversions join such codes for known analytes, and no two
    conversions could both apply to one value (the first would win, silently)."""
    for key, target in table.aliases.items():
        further = table.aliases.get(target, target)
        if further != target:
            raise ConfigError(
                f"{alias_paths[key]}: units.aliases.{key}: {target!r} is itself an alias (of {further!r}); "
                "give the code it means"
            )
    # Only conversions between the same two units can compete: compared within their pair, so an
    # overlay with thousands of conversions is checked in linear time.
    by_units: dict[frozenset[str], list[int]] = {}
    for i, conv in enumerate(table.conversions):
        where = f"{conversion_paths[i]}: units.conversions ({conv.source} -> {conv.target})"
        for end, unit in (("from", conv.source), ("to", conv.target)):
            code = unit_table.normalise_unit(table, unit)
            if code != unit:
                raise ConfigError(
                    f"{where}.{end}: {unit!r} is an alias of {code!r}; a conversion joins the codes aliases "
                    "lead to"
                )
        pair = by_units.setdefault(frozenset((conv.source, conv.target)), [])
        for j in pair:
            other = table.conversions[j]
            if not conv.concepts or not other.concepts or conv.concepts & other.concepts:
                raise ConfigError(
                    f"{where}: {conversion_paths[j]} already converts between these units for the same "
                    "analytes; to change its factor, give the same from, to and concepts"
                )
        pair.append(i)
    for i, conv in enumerate(table.conversions):
        for name in sorted(conv.concepts - concepts.keys()):
            raise ConfigError(
                f"{conversion_paths[i]}: units.conversions ({conv.source} -> {conv.target}).concepts: "
                f"unknown concept {name!r}"
            )


def _build_medications(raw: Mapping[str, Any], path: Path) -> MedicationRules:
    gcs = []
    for name, body in raw["glucocorticoids"].items():
        where = f"{path}: glucocorticoids.{name}"
        codes = frozenset(_split_code(c, f"{where}.codes") for c in body.get("codes", []))
        gcs.append(
            Glucocorticoid(
                name=name,
                factor=_positive(body["factor"], f"{where}.factor"),
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
        weight_fact=raw["exposures"]["weight_fact"],
        intravenous_route_concept=raw["exposures"]["intravenous_route_concept"],
        non_systemic_route_concept=raw["exposures"]["non_systemic_route_concept"],
        non_systemic_form_concept=raw["exposures"]["non_systemic_form_concept"],
    )


def _check_facts(
    facts: Mapping[str, FactSpec], concepts: Mapping[str, Concept], path_of: Mapping[str, Path]
) -> None:
    for fact in facts.values():
        where = f"{path_of[fact.name]}: facts.{fact.name}"
        for key, value in fact.params.items():
            names = value if _is_concepts_key(key) else [value] if _is_concept_key(key) else []
            for name in names:
                if name not in concepts:
                    raise ConfigError(f"{where}.{key}: unknown concept {name!r}")
            if _is_fact_key(key):
                _check_fact_parameter(facts, value, key, f"{where}.{key}")
        windows = sorted(_WINDOW_KEYS & fact.params.keys())
        if len(windows) > 1:
            raise ConfigError(f"{where}: {' and '.join(windows)}: one window only (which would count?)")
        if fact.get("minimum") is not None and not is_sane(_decimal(fact.get("minimum"), f"{where}.minimum")):
            raise ConfigError(f"{where}.minimum: {fact.get('minimum')!r} is not a finite number")
        for key in ("uln", "umol_per_mg_dl", "female_factor"):
            value = fact.get(key)
            if isinstance(value, dict):
                for sex, v in value.items():
                    _positive(v, f"{where}.{key}.{sex}")
            elif value is not None:
                _positive(value, f"{where}.{key}")
    _check_no_cycle(facts, path_of)


def _check_fact_parameter(facts: Mapping[str, FactSpec], name: Any, key: str, where: str) -> None:
    """A parameter naming a fact names one whose value it can use: a weight a number, a sex a sex."""
    if name not in facts:
        raise ConfigError(f"{where}: unknown fact {name!r}")
    needed = kinds.FACT_PARAMETER_VALUES.get(key, kinds.NUMBER)
    given = kinds.VALUES[facts[name].kind]
    if given != needed:
        raise ConfigError(
            f"{where}: {name!r} is a fact of kind {facts[name].kind} ({kinds.describe(given)}); "
            f"{key} needs {kinds.describe(needed)}"
        )


def _check_no_cycle(facts: Mapping[str, FactSpec], path_of: Mapping[str, Path]) -> None:
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in trail:
            cycle = " -> ".join((*trail[trail.index(name) :], name))
            raise ConfigError(f"{path_of[name]}: facts.{name}: facts depend on each other: {cycle}")
        if name in done:
            return
        for dependency in fact_dependencies(facts[name]):
            visit(dependency, (*trail, name))
        done.add(name)

    for name in facts:
        visit(name, ())


def _check_medications(
    rules_: MedicationRules, concepts: Mapping[str, Concept], facts: Mapping[str, FactSpec], path: Path
) -> None:
    _check_fact_parameter(facts, rules_.weight_fact, "weight_fact", f"{path}: exposures.weight_fact")
    for key in ("intravenous_route_concept", "non_systemic_route_concept", "non_systemic_form_concept"):
        name = getattr(rules_, key)
        if name not in concepts:
            raise ConfigError(f"{path}: exposures.{key}: unknown concept {name!r}")


def default_trial(mappings_dir: Path | None = None) -> str:
    """The trial ``screen`` uses without ``--trial``: ``default`` in mappings/trials.toml."""
    path = (mappings_dir or default_mappings_dir()) / "trials.toml"
    doc = read_toml(path)
    _validate(doc, "trials_file", path)
    return str(doc["default"])


def criteria_path(trial: str, mappings_dir: Path | None = None) -> Path:
    """``mappings/criteria/<ID>.toml`` for a trial id; a path ending in ``.toml`` is taken as it is, so a
    site can keep its own trials outside the installed package."""
    if trial.endswith(".toml"):
        return Path(trial)
    if not trial or "/" in trial or "\\" in trial or trial.startswith("."):
        raise ConfigError(f"--trial: {trial!r} is neither a trial id nor a .toml file")
    path = (mappings_dir or default_mappings_dir()) / "criteria" / f"{trial}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.toml"))
        raise ConfigError(f"{path}: no criteria file for trial {trial!r} (known: {', '.join(known)})")
    return path


def load_mappings(
    mappings_dir: Path | None = None,
    overlays: Iterable[Path] = (),
    trial: str | None = None,
) -> Mappings:
    """One trial's rules: mappings/ plus the site overlays; the default trial when none is named."""
    return load_trials([trial] if trial else [], overlays, mappings_dir)[0]


def load_trials(
    trials: Sequence[str] = (),
    overlays: Iterable[Path] = (),
    mappings_dir: Path | None = None,
) -> list[Mappings]:
    """Read, validate and merge mappings/, the trials' criteria files and the site overlays (in order).

    Every trial shares the concepts, facts, units and medication rules; a criteria file may define new
    concepts and facts of its own (never redefine one), and overlays then extend them all. One
    ``Mappings`` per trial, in the order given (duplicates dropped).
    """
    base = mappings_dir or default_mappings_dir()
    wanted = list(dict.fromkeys(trials)) or [default_trial(base)]
    files: list[Path] = []

    def read(path: Path, definition: str) -> dict[str, Any]:
        doc = read_toml(path)
        _validate(doc, definition, path)
        return doc

    concepts_path, units_path = base / "concepts.toml", base / "units.toml"
    facts_path, meds_path = base / "facts.toml", base / "medications.toml"
    concepts_doc = read(concepts_path, "concepts_file")
    units_doc = read(units_path, "units_file")
    facts_doc = read(facts_path, "facts_file")
    meds_doc = read(meds_path, "medications_file")
    files += [concepts_path, units_path, facts_path, meds_path]
    notes_path = base / "notes.toml"
    # Optional, so a site's own copy of an older mappings/ still loads (notes then stay off).
    notes_doc = read(notes_path, "notes_file") if notes_path.is_file() else {"notes": {}}
    if notes_path.is_file():
        files.append(notes_path)
    raw_notes: dict[str, Any] = _copy_notes(notes_doc["notes"])
    notes_paths = dict.fromkeys(raw_notes["rules"], str(notes_path))
    trial_docs = [(path, read(path, "criteria_file")) for path in (criteria_path(t, base) for t in wanted)]

    raw_concepts: dict[str, dict[str, Any]] = {k: dict(v) for k, v in concepts_doc["concepts"].items()}
    path_of = dict.fromkeys(raw_concepts, str(concepts_path))
    raw_facts: dict[str, dict[str, Any]] = {k: dict(v) for k, v in facts_doc["facts"].items()}
    # The file that last set each fact, so an error in an overlay names the overlay.
    fact_paths = dict.fromkeys(raw_facts, facts_path)
    for path, doc in trial_docs:
        _define_new(raw_concepts, doc.get("concepts", {}), path, "concepts", path_of)
        _define_new(raw_facts, doc.get("facts", {}), path, "facts", fact_paths)
    aliases = dict(units_doc.get("aliases", {}))
    alias_paths = dict.fromkeys(aliases, units_path)
    conversions = list(units_doc.get("conversions", []))
    conversion_paths = [units_path] * len(conversions)  # the file each conversion came from

    for overlay in overlays:
        doc = read(overlay, "overlay_file")
        files.append(overlay)
        _merge_concepts(raw_concepts, doc.get("concepts", {}), overlay, path_of)
        for name, body in doc.get("facts", {}).items():
            if name not in raw_facts:
                raise ConfigError(
                    f"{overlay}: facts.{name}: unknown fact (an overlay changes existing facts only)"
                )
            base_body = raw_facts[name]
            if body.get("kind", base_body["kind"]) != base_body["kind"]:
                # The shipped parameters would stay, read by nothing or misread by the new kind.
                raise ConfigError(
                    f"{overlay}: facts.{name}.kind: an overlay changes a fact's parameters, not its kind "
                    f"({base_body['kind']!r} in {fact_paths[name]})"
                )
            if _WINDOW_KEYS & body.keys():
                # The overlay's window replaces the shipped one, whatever its unit (days for months).
                base_body = {k: v for k, v in base_body.items() if k not in _WINDOW_KEYS}
            merged = {**base_body, **body}
            _validate({"facts": {name: merged}}, "facts_file", overlay)
            raw_facts[name] = merged
            fact_paths[name] = overlay
        _merge_notes(raw_notes, doc.get("notes", {}), overlay, notes_paths)
        units = doc.get("units", {})
        _merge_aliases(aliases, alias_paths, units.get("aliases", {}), overlay)
        _merge_conversions(conversions, conversion_paths, units.get("conversions", []), overlay)

    defaults: Mapping[str, Mapping[str, Any]] = facts_doc.get("defaults", {})
    concepts = _build_concepts(raw_concepts, path_of)
    facts = {
        name: FactSpec(
            name=name,
            kind=body["kind"],
            label=body.get("label", name),
            params={**defaults.get(body["kind"], {}), **body},
        )
        for name, body in raw_facts.items()
    }
    _check_facts(facts, concepts, fact_paths)
    medications = _build_medications(meds_doc, meds_path)
    _check_medications(medications, concepts, facts, meds_path)
    units_table = _build_units({"aliases": aliases, "conversions": conversions}, str(units_path))
    _check_units(units_table, alias_paths, conversion_paths, concepts)
    notes = _build_notes(raw_notes, notes_paths, concepts, facts, units_table)

    shared = hashlib.sha256()
    for path in files:
        shared.update(path.read_bytes())
    out: list[Mappings] = []
    for path, doc in trial_docs:
        trial_obj = rules.build_trial(doc, path, facts)
        if any(m.trial.study == trial_obj.study for m in out):
            raise ConfigError(f"{path}: study: {trial_obj.study} is given twice")
        digest = shared.copy()
        digest.update(path.read_bytes())
        out.append(
            Mappings(
                concepts=concepts,
                units=units_table,
                facts=facts,
                medications=medications,
                trial=trial_obj,
                files=tuple(str(p) for p in (*files, path)),
                fingerprint=f"{trial_obj.version}+{digest.hexdigest()[:12]}",
                notes=notes,
            )
        )
    return out


def _merge_aliases(
    aliases: dict[str, str], paths: dict[str, Path], new: Mapping[str, str], overlay: Path
) -> None:
    """An overlay adds aliases; changing what a unit already means would change every verdict that
    reads it, so it is refused, naming the file that gave the first meaning."""
    for key, target in new.items():
        if key in aliases and aliases[key] != target:
            raise ConfigError(
                f"{overlay}: units.aliases.{key}: already an alias of {aliases[key]!r} in {paths[key]}; "
                "an overlay adds aliases, it does not change one"
            )
        aliases[key] = target
        paths.setdefault(key, overlay)


def _merge_conversions(
    conversions: list[dict[str, Any]], paths: list[Path], new: Sequence[Mapping[str, Any]], overlay: Path
) -> None:
    """An overlay's conversion with the same from, to and concepts as an earlier one replaces it (a
    laboratory's own factor); any other is added."""

    def key(c: Mapping[str, Any]) -> tuple[Any, Any, frozenset[str]]:
        return (c["from"], c["to"], frozenset(c.get("concepts", [])))

    first: dict[tuple[Any, Any, frozenset[str]], int] = {}  # the first conversion of each key
    for i, c in enumerate(conversions):
        first.setdefault(key(c), i)
    for conversion in new:
        at = first.get(key(conversion))
        if at is not None:
            conversions[at] = dict(conversion)
            paths[at] = overlay
        else:
            first[key(conversion)] = len(conversions)
            conversions.append(dict(conversion))
            paths.append(overlay)


_NOTE_SCALARS = ("enabled", "max_attachment_bytes", "max_text_chars", "max_sentence_chars")


def _copy_notes(doc: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: doc[k] for k in _NOTE_SCALARS if k in doc}
    out["connectors"] = list(doc.get("connectors", []))
    out["negations"] = list(doc.get("negations", []))
    out["rules"] = {
        name: {
            "phrases": list(body.get("phrases", [])),
            "shapes": list(body.get("shapes", [])),
            "decide": bool(body.get("decide", False)),
        }
        for name, body in doc.get("rules", {}).items()
    }
    return out


def _merge_notes(base: dict[str, Any], overlay: Mapping[str, Any], path: Path, paths: dict[str, str]) -> None:
    """An overlay's ``[notes]``: settings replace, word lists and a rule's phrases and shapes are added,
    ``decide`` replaces; a rule for a concept without one starts empty."""
    for key in _NOTE_SCALARS:
        if key in overlay:
            base[key] = overlay[key]
    base["connectors"] += list(overlay.get("connectors", []))
    base["negations"] += list(overlay.get("negations", []))
    for name, body in overlay.get("rules", {}).items():
        rule = base["rules"].setdefault(name, {"phrases": [], "shapes": [], "decide": False})
        rule["phrases"] += list(body.get("phrases", []))
        rule["shapes"] += list(body.get("shapes", []))
        if "decide" in body:
            rule["decide"] = bool(body["decide"])
        paths[name] = f"{paths[name]} + {path}" if name in paths else str(path)


def _build_notes(
    raw: Mapping[str, Any],
    paths: Mapping[str, str],
    concepts: Mapping[str, Concept],
    facts: Mapping[str, FactSpec],
    table: UnitTable,
) -> NoteSettings:
    rules: dict[str, NoteRule] = {}
    for name, body in raw["rules"].items():
        where = f"{paths[name]}: notes.rules.{name}"
        if name not in concepts:
            raise ConfigError(f"{where}: unknown concept (a rule is named after the concept it reads)")
        if not body["phrases"] or not body["shapes"]:
            raise ConfigError(f"{where}: a rule needs at least one phrase and one shape")
        shapes = []
        for i, shape in enumerate(body["shapes"]):
            shapes.append(
                NoteShape(
                    after="".join(str(shape["after"]).lower().split()),
                    unit=str(shape["unit"]),
                    max=_decimal(shape["max"], f"{where}.shapes[{i}].max"),
                )
            )
            _check_note_unit(shapes[-1], i, name, where, facts, table)
        rules[name] = NoteRule(
            concept=name,
            phrases=tuple(dict.fromkeys(p.lower() for p in body["phrases"])),
            shapes=tuple(sorted(shapes, key=lambda s: -len(s.after))),
            decide=body["decide"],
        )
    caps = {
        k: int(raw[k]) for k in ("max_attachment_bytes", "max_text_chars", "max_sentence_chars") if k in raw
    }
    return NoteSettings(
        enabled=bool(raw.get("enabled", False)),
        **caps,
        connectors=tuple(sorted({c.lower() for c in raw["connectors"]}, key=lambda c: (-len(c), c))),
        negations=tuple(dict.fromkeys(n.lower() for n in raw["negations"])),
        rules=rules,
    )


def _check_note_unit(
    shape: NoteShape, i: int, concept: str, where: str, facts: Mapping[str, FactSpec], table: UnitTable
) -> None:
    """A note's number must convert to the unit of every fact that reads the concept, or it could never
    be used: say so at load, naming the fact."""
    for fact in facts.values():
        if fact.get("concept") != concept or fact.get("unit") is None:
            continue
        target = str(fact.get("unit"))
        if unit_table.factor(table, shape.unit, target, concept) is None:
            raise ConfigError(
                f"{where}.shapes[{i}].unit: {shape.unit!r} cannot be converted to {target!r}, the unit of "
                f"facts.{fact.name}"
            )


def _define_new(
    existing: dict[str, dict[str, Any]],
    new: Mapping[str, Any],
    path: Path,
    table: str,
    path_of: dict[str, Any],
) -> None:
    """A criteria file's own concepts or facts: new names only, so a trial cannot change another's."""
    for name, body in new.items():
        if name in existing:
            raise ConfigError(
                f"{path}: {table}.{name}: already defined in {path_of[name]}; a criteria file defines new "
                f"{table} only (extend existing ones in a site overlay)"
            )
        existing[name] = dict(body)
        path_of[name] = path if table == "facts" else str(path)
