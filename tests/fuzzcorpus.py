"""A seeded corpus of hostile inputs for the file readers, built from real cases.

Each mutant is one patient's file: a real record (an example patient, or a public FHIR case) with one
thing broken: a value replaced by one of another type or an absurd one at a random JSON path, a bad
number or date, nesting as deep as a parser allows, another text encoding, truncation, stray bytes. Whole
-file hazards come too: FIFOs, links to devices and link loops, compression bombs, endless lines, file
names that are not UTF-8. ``write_corpus(folder, n, seed)`` writes n mutants (and the controls: real
patients left alone) and returns what it wrote, so a test can check each one is screened or reported.

    python tests/fuzzcorpus.py OUT_DIR 300     # write a corpus to look at
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import random
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "patients"
Res = dict[str, Any]

ALIENS: list[Any] = [
    None,
    0,
    -0.0,
    5,
    -1,
    1e308,
    3.5,
    True,
    False,
    "",
    " ",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999999",
    "-0",
    "9" * 400,
    "２０２６-０６-０１",  # full-width digits
    "2026-13-45",
    "2026-02-30T25:61:00Z",
    "0000-00-00",
    "\u0000",
    "\ud800" if False else "\U0001f600",  # an emoji (lone surrogates cannot be written as UTF-8)
    "x" * 5000,
    "1" * 200_000,  # long digit strings: a backtracking regex would hang on them
    "<script>alert(1)</script>",
    "Patient/",
    "Patient/../../etc/passwd",
    "urn:uuid:",
    [],
    {},
    [None],
    [1, "a", {}],
    {"coding": 5},
    {"coding": [None, 3, "x"]},
    {"reference": 5},
    {"value": "abc", "unit": 3},
    {"value": "1e999999", "unit": "mg"},
]


@dataclass(frozen=True)
class Mutant:
    path: Path
    patient: str | None  # the patient the mutant was about (None: a hazard with no patient)
    what: str


def _load(path: Path) -> list[Res]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("resourceType") == "Bundle":
        return [e["resource"] for e in doc["entry"] if isinstance(e.get("resource"), dict)]
    return [doc]


def _renamed(resources: list[Res], old: str, new: str) -> list[Res]:
    text = json.dumps(resources, ensure_ascii=False)
    text = re.sub(rf"\b{re.escape(old)}\b", new, text)
    return json.loads(text)


def cases() -> list[tuple[str, list[Res]]]:
    """(patient id, resources) of the real cases the corpus starts from."""
    out = []
    for path in sorted(EXAMPLES.glob("*.json")):
        out.append((path.stem, _load(path)))
    return out


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, (*prefix, i))
    return found


def _set(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


def _bundle(resources: list[Res]) -> bytes:
    entry = [{"fullUrl": f"urn:uuid:{r.get('id')}", "resource": r} for r in resources]
    return json.dumps(
        {"resourceType": "Bundle", "type": "collection", "entry": entry}, ensure_ascii=False
    ).encode()


def _ndjson(resources: list[Res]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in resources)


def write_corpus(folder: Path, n: int, seed: int = 1) -> tuple[list[str], list[Mutant]]:
    """Write the controls (untouched real patients, ids ``ctl-*``) and ``n`` mutants into ``folder``."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    base = cases()
    controls = []
    for stem, resources in base[:6]:
        pid = f"ctl-{stem}"
        (folder / f"{pid}.json").write_bytes(_bundle(_renamed(resources, stem, pid)))
        controls.append(pid)
    mutants: list[Mutant] = []
    makers: list[Callable[[random.Random, Path, int], Mutant | None]] = [
        _type_confusion,
        _type_confusion,
        _type_confusion,
        _type_confusion,
        _bad_number_or_date,
        _bad_number_or_date,
        _deep_nesting,
        _encoding,
        _truncated,
        _stray_bytes,
        _nested_bundles,
        _r5_shapes,
    ]
    i = 0
    while len(mutants) < n:
        made = rng.choice(makers)(rng, folder, i)
        i += 1
        if made is not None:
            mutants.append(made)
    mutants += _hazards(folder)
    return controls, mutants


def _pick(rng: random.Random, i: int) -> tuple[str, list[Res]]:
    stem, resources = rng.choice(cases())
    pid = f"m{i:04d}-{stem}"
    return pid, _renamed(resources, stem, pid)


def _type_confusion(rng: random.Random, folder: Path, i: int) -> Mutant:
    pid, resources = _pick(rng, i)
    target = rng.choice([r for r in resources if r["resourceType"] != "Patient"] or resources)
    paths = [p for p in _paths(target) if p[0] not in ("resourceType", "id")]
    path = rng.choice(paths)
    _set(target, path, copy.deepcopy(rng.choice(ALIENS)))
    data = _ndjson(resources) if rng.random() < 0.5 else _bundle(resources)
    name = (
        f"{pid}.ndjson"
        if data.startswith(b'{"resourceType": "Patient"') or b"\n{" in data[:-1]
        else f"{pid}.json"
    )
    (folder / name).write_bytes(data)
    return Mutant(folder / name, pid, f"{target['resourceType']} {'.'.join(map(str, path))}")


def _bad_number_or_date(rng: random.Random, folder: Path, i: int) -> Mutant:
    pid, resources = _pick(rng, i)
    bad = rng.choice(
        ["NaN", "-Infinity", "1e999999", "0x1F", "1,5", "٣", "2026-06-31", "26/06/2026", "-0", ""]
    )
    for r in resources:
        if "effectiveDateTime" in r and rng.random() < 0.5:
            r["effectiveDateTime"] = bad
        q = r.get("valueQuantity")
        if isinstance(q, dict) and rng.random() < 0.5:
            q["value"] = bad
    (folder / f"{pid}.json").write_bytes(_bundle(resources))
    return Mutant(folder / f"{pid}.json", pid, f"bad number or date {bad!r}")


def _deep_nesting(rng: random.Random, folder: Path, i: int) -> Mutant:
    pid, resources = _pick(rng, i)
    target = rng.choice(resources)
    target["extension"] = [{"url": "http://x", "valueString": "v", "nested": "@@DEEP@@"}]
    depth = rng.choice([200, 900, 1100, 5000])
    deep = '{"n":[' * depth + '"bottom"' + "]}" * depth  # written as text: json.dumps would recurse
    (folder / f"{pid}.json").write_bytes(_bundle(resources).replace(b'"@@DEEP@@"', deep.encode()))
    return Mutant(folder / f"{pid}.json", pid, f"nesting {depth} deep")


def _encoding(rng: random.Random, folder: Path, i: int) -> Mutant:
    pid, resources = _pick(rng, i)
    text = _bundle(resources).decode("utf-8")
    enc = rng.choice(["utf-16", "utf-16-le", "latin-1", "gb18030", "utf-8-sig"])
    (folder / f"{pid}.json").write_bytes(text.encode(enc, "replace"))
    return Mutant(folder / f"{pid}.json", pid, f"encoding {enc}")


def _truncated(rng: random.Random, folder: Path, i: int) -> Mutant:
    pid, resources = _pick(rng, i)
    data = _ndjson(resources) if rng.random() < 0.5 else _bundle(resources)
    cut = rng.randint(1, len(data) - 1)
    suffix = ".ndjson" if data.count(b"\n") > 1 else ".json"
    (folder / f"{pid}{suffix}").write_bytes(data[:cut])
    return Mutant(folder / f"{pid}{suffix}", pid, "truncated")


def _stray_bytes(rng: random.Random, folder: Path, i: int) -> Mutant:
    pid, resources = _pick(rng, i)
    data = bytearray(_ndjson(resources))
    for _ in range(rng.randint(1, 5)):
        data[rng.randrange(len(data))] = rng.choice([0, 0xFF, 0x80, ord('"'), ord("{"), ord("\\")])
    (folder / f"{pid}.ndjson").write_bytes(bytes(data))
    return Mutant(folder / f"{pid}.ndjson", pid, "stray bytes")


def _nested_bundles(rng: random.Random, folder: Path, i: int) -> Mutant:
    pid, resources = _pick(rng, i)
    doc: Res = json.loads(_bundle(resources))
    for _ in range(rng.choice([2, 20])):
        doc = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": doc}]}
    (folder / f"{pid}.json").write_text(json.dumps(doc), encoding="utf-8")
    return Mutant(folder / f"{pid}.json", pid, "Bundles in Bundles")


def _r5_shapes(rng: random.Random, folder: Path, i: int) -> Mutant:
    pid, resources = _pick(rng, i)
    for r in resources:
        if r["resourceType"].startswith("Medication") and r["resourceType"] != "Medication":
            r["medication"] = rng.choice(
                ["prednisone", ["a", "b"], {"concept": 5}, {"reference": {"reference": 3}}]
            )
        if r["resourceType"] == "Encounter":
            r["class"] = rng.choice(["IMP", [5], {"coding": "IMP"}])
    (folder / f"{pid}.json").write_bytes(_bundle(resources))
    return Mutant(folder / f"{pid}.json", pid, "R5-shaped fields of unexpected types")


def _hazards(folder: Path) -> list[Mutant]:
    out = []
    fifo = folder / "pipe.ndjson"
    os.mkfifo(fifo)
    out.append(Mutant(fifo, None, "a FIFO"))
    (folder / "zero.ndjson").symlink_to("/dev/zero")
    out.append(Mutant(folder / "zero.ndjson", None, "a link to a device"))
    loop = folder / "loop"
    loop.mkdir()
    (loop / "again").symlink_to(loop)
    out.append(Mutant(loop / "again", None, "a folder link loop"))
    (folder / "dangling.json").symlink_to(folder / "does-not-exist.json")
    out.append(Mutant(folder / "dangling.json", None, "a dangling link"))
    zeros = folder / "zeros.ndjson.gz"
    with gzip.open(zeros, "wb", compresslevel=9) as fh:
        for _ in range(64):  # 64 MiB of zeros in about 64 KiB: a ratio of 1000
            fh.write(b"\0" * (1 << 20))
    out.append(Mutant(zeros, None, "a compression bomb of zeros"))
    bomb = folder / "bomb.ndjson.gz"
    line = b'{"resourceType":"Observation","status":"final","subject":{"reference":"Patient/bomb"}}\n'
    with gzip.open(bomb, "wb", compresslevel=9) as fh:
        for _ in range(256):  # 256 MiB of one line repeated, in a few hundred KiB
            fh.write(line * ((1 << 20) // len(line)))
    out.append(Mutant(bomb, None, "a compression bomb of valid lines"))
    endless = folder / "endless.ndjson"
    endless.write_bytes(b'{"resourceType":"Observation","note":"' + b"a" * (3 << 20))
    out.append(Mutant(endless, None, "a line without end"))
    odd = folder / os.fsdecode(b"caf\xe9-\xff.json")
    odd.write_bytes(_bundle(_renamed(cases()[0][1], cases()[0][0], "oddname")))
    out.append(Mutant(odd, "oddname", "a file name that is not UTF-8"))
    deep_dirs = folder
    for level in range(300):
        deep_dirs = deep_dirs / f"d{level % 10}"
    deep_dirs.mkdir(parents=True)
    (deep_dirs / "deep.json").write_bytes(_bundle(_renamed(cases()[1][1], cases()[1][0], "deepdir")))
    out.append(Mutant(deep_dirs / "deep.json", "deepdir", "a very deep folder tree"))
    return out


if __name__ == "__main__":
    controls, made = write_corpus(Path(sys.argv[1]), int(sys.argv[2]))
    print(f"{len(controls)} controls, {len(made)} mutants")
