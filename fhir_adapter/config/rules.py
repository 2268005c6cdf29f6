"""Parse the criteria file's rule nodes into the typed rule tree, checking every reference."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from fhir_adapter.config import kinds
from fhir_adapter.config.types import (
    AllOf,
    AnyOf,
    AtLeast,
    Compare,
    Component,
    ComponentRef,
    Constant,
    Criterion,
    FactSpec,
    Not,
    Rule,
    Trial,
)
from fhir_adapter.errors import ConfigError
from fhir_adapter.facts.fhirjson import is_sane
from fhir_adapter.model import Verdict


def _value(raw: Any) -> Decimal | bool | str:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float):
        # str() of a TOML float is its shortest repr, so 1.3 becomes Decimal("1.3"), not 1.30000000000000004.
        return Decimal(str(raw))
    try:
        return Decimal(raw)
    except ArithmeticError:
        return str(raw)


def parse_rule(
    node: Mapping[str, Any], where: str, facts: Mapping[str, FactSpec], components: set[str]
) -> Rule:
    if "fact" in node:
        if node["fact"] not in facts:
            raise ConfigError(f"{where}.fact: unknown fact {node['fact']!r}")
        on_match = Verdict(node["on_match"]) if "on_match" in node else None
        value = _value(node["value"])
        if isinstance(value, Decimal) and not is_sane(value):  # as for data: nan, inf, 1e308 are noise
            raise ConfigError(f"{where}.value: {node['value']!r} is not a finite number any fact can have")
        if node["op"] in {"<", "<=", ">", ">="} and not isinstance(value, Decimal):
            raise ConfigError(f"{where}.value: {node['op']} needs a number, got {node['value']!r}")
        # "femal" for a sex, "old" for an age: valid TOML, and never met for anyone.
        problem = kinds.mismatch(facts[node["fact"]].kind, value)
        if problem:
            raise ConfigError(f"{where}.value: {problem}")
        return Compare(fact=node["fact"], op=node["op"], value=value, on_match=on_match)
    if "all" in node:
        return AllOf(
            tuple(parse_rule(n, f"{where}.all[{i}]", facts, components) for i, n in enumerate(node["all"]))
        )
    if "any" in node:
        return AnyOf(
            tuple(parse_rule(n, f"{where}.any[{i}]", facts, components) for i, n in enumerate(node["any"]))
        )
    if "not" in node:
        return Not(parse_rule(node["not"], f"{where}.not", facts, components))
    if "at_least" in node:
        items = tuple(parse_rule(n, f"{where}.of[{i}]", facts, components) for i, n in enumerate(node["of"]))
        if node["at_least"] > len(items):
            raise ConfigError(f"{where}.at_least: {node['at_least']} is more than the {len(items)} items")
        return AtLeast(node["at_least"], items)
    if "component" in node:
        if node["component"] not in components:
            raise ConfigError(f"{where}.component: unknown component {node['component']!r}")
        return ComponentRef(node["component"])
    return Constant(Verdict(node["verdict"]))


def build_trial(doc: Mapping[str, Any], path: Path, facts: Mapping[str, FactSpec]) -> Trial:
    criteria = []
    seen: set[str] = set()
    for i, raw in enumerate(doc["criteria"]):
        where = f"{path}: criteria[{i}]({raw['id']})"
        if raw["id"] in seen:
            raise ConfigError(f"{where}.id: duplicate criterion id")
        seen.add(raw["id"])
        comp_list = [c["id"] for c in raw.get("components", [])]
        comp_ids = set(comp_list)
        if len(comp_ids) < len(comp_list):
            twice = sorted(c for c, n in Counter(comp_list).items() if n > 1)
            raise ConfigError(f"{where}.components: duplicate component id {', '.join(twice)}")
        components = tuple(
            Component(
                id=c["id"],
                text=c.get("text", ""),
                rule=parse_rule(c["rule"], f"{where}.components[{j}].rule", facts, set()),
            )
            for j, c in enumerate(raw.get("components", []))
        )
        applies = raw.get("applies_when")
        criteria.append(
            Criterion(
                id=raw["id"],
                type=raw["type"],
                text=raw.get("text", ""),
                rule=parse_rule(raw["rule"], f"{where}.rule", facts, comp_ids),
                gate=bool(raw.get("gate", False)),
                applies_when=parse_rule(applies, f"{where}.applies_when", facts, set()) if applies else None,
                components=components,
            )
        )
    return Trial(
        study=doc["study"],
        title=doc.get("title", doc["study"]),
        version=doc["version"],
        criteria=tuple(criteria),
    )
