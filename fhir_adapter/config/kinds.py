"""What each fact kind's value is, so that the loader can refuse a comparison no value could ever match.

A criteria file's ``{ fact = "sex", op = "==", value = "femal" }`` or ``{ fact = "age", op = "==", value
= "old" }`` is valid TOML and valid schema, and is then never met, silently, for every patient. The
kinds are code (``facts/derive.py`` maps each to its function), so their values are declared here, beside
the loader, and a test keeps this table and ``derive.KINDS`` naming the same kinds.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

NUMBER = "a number"
BOOLEAN = "true or false"
SEXES = frozenset({"female", "male"})

# A kind's value: NUMBER (a Decimal), BOOLEAN, or the codes it can take.
VALUES: Mapping[str, str | frozenset[str]] = {
    "age-years": NUMBER,
    "sex": SEXES,
    "condition": BOOLEAN,
    "condition-onset-near": BOOLEAN,
    "condition-class": BOOLEAN,
    "inpatient-stay": BOOLEAN,
    "measurement": NUMBER,
    "uln-ratio": NUMBER,
    "qualitative": BOOLEAN,
    "creatinine-clearance": NUMBER,
    "quotient": NUMBER,
    "prednisone-equivalent-dose": NUMBER,
    "medication-started": BOOLEAN,
    "medication-dose-changed": BOOLEAN,
    "medication-given": BOOLEAN,
    "medication-count": NUMBER,
    "medication-allergy-count": NUMBER,
}


def describe(values: str | frozenset[str]) -> str:
    return values if isinstance(values, str) else "one of " + ", ".join(repr(v) for v in sorted(values))


def mismatch(kind: str, value: Decimal | bool | str) -> str | None:
    """Why ``value`` can never equal a value of ``kind``, or None when it can."""
    values = VALUES[kind]
    if values == NUMBER:
        ok = isinstance(value, Decimal)
    elif values == BOOLEAN:
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, str) and value in values
    return None if ok else f"a fact of kind {kind} is {describe(values)}, never {_shown(value)}"


def _shown(value: Decimal | bool | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, Decimal) else repr(value)


# Parameters that name another fact, and what that fact must give (anything else: a number).
FACT_PARAMETER_VALUES: Mapping[str, str | frozenset[str]] = {"sex_fact": SEXES}
