"""Which patients to screen on a server: a search for what a trial's gate reads, a Group, or given ids.

A FHIR token search matches codes exactly, while the value set in ``mappings/`` also has prefixes
(ICD-10 ``M33.1*``) and text patterns. What the search can and cannot see:

- exact codes (SNOMED, and any exact code a site adds in its overlay) are searched as they are;
- a prefix ``M33.1*`` is searched as the stem itself (``M33.1``, a WHO ICD-10 code) and the stem plus
  one digit (``M33.10`` .. ``M33.19``, where every ICD-10-CM code under M33.0/M33.1 lives); deeper
  codes are not found this way;
- a text pattern is searched with the ``:text`` modifier, which servers implement as "the text or
  display *starts with*" (HAPI does), not "contains" as the file path matches it, so a local code
  whose text reads "Juvenile dermatomyositis" is not found by ``dermatomyositis``. A server that
  rejects ``:text`` costs only that part of the search: the rest still runs, with a warning.

Local codes are therefore best added to the site overlay as exact codes, or the patients listed with
``--patient``/``--group``. Every Condition a search returns is checked again with the same matcher
as the file path, so the extra width of the search (stems, ``:text``) never adds a patient the gate
cannot admit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from fhir_adapter.client.http import FhirClient
from fhir_adapter.config.types import Concept
from fhir_adapter.errors import AuthError, ServerError, ServerUnreachable, UsageError
from fhir_adapter.facts.fhirjson import patient_of, ref_id
from fhir_adapter.screening import Gate

log = logging.getLogger(__name__)

# Long OR-lists make long URLs; proxies in front of hospital servers often cap the request line at 4-8 KB.
CODES_PER_SEARCH: Final = 20
# The records' searches' page size: with only the code and the subject of each entry (_elements), a page
# is small, and each further page is a round trip (and on HAPI a wait while the search finishes loading).
PAGE_SIZE: Final = 500
_ID_RE: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# ICD-10 / ICD-10-CM codes below a 4-character stem (M33.1) have one more digit at most (M33.10..M33.19).
_STEM_CHILDREN: Final = tuple(str(d) for d in range(10))


@dataclass(frozen=True, slots=True)
class Candidates:
    """Patient ids to screen (sorted, unique), how many requests finding them took, and warnings."""

    patient_ids: tuple[str, ...]
    requests: int
    warnings: tuple[str, ...] = field(default=())


def search_tokens(concept: Concept) -> list[str]:
    """``system|code`` tokens that a FHIR token search can use for the concept (see the module doc)."""
    tokens = {f"{system}|{code}" for system, code in concept.codes}
    for system, prefix in concept.prefixes:
        stem = prefix.rstrip("*").rstrip(".")
        if not stem:
            continue
        tokens.add(f"{system}|{stem}")
        if "." in stem:  # M33.1 -> M33.10 .. M33.19; a bare chapter prefix (C) would be unbounded
            tokens.update(f"{system}|{stem}{d}" for d in _STEM_CHILDREN)
    # Commas separate OR-ed values in a token search, so a code containing one must be escaped.
    return sorted(t.replace(",", "\\,") for t in tokens)


def find_candidates(
    client: FhirClient,
    gate: Gate,
    concurrency: int = 1,
    *,
    pool: Executor | None = None,
    on_found: Callable[[str], None] | None = None,
) -> Candidates:
    """Patients with a resource that can pass a trial's gate, found by token and ``:text`` searches
    of each type the gate reads (a Condition search for a diagnosis gate).

    The searches (one per chunk of codes, one per text) are independent, so ``concurrency`` of them run
    at a time: a server's paging can make each take a while (HAPI holds the second page of a search
    about half a second while it finishes loading), and one after the other those waits add up before
    the first record is fetched. Every search runs whatever the concurrency, and their results are
    merged in search order, so the candidates and warnings do not depend on it.

    ``pool``: run the searches there (a caller's pool, shared with record fetches so that one bound
    holds for both) instead of a pool of their own; ``on_found(pid)``: called, from a search's thread,
    for each patient a page admits (once per search), as soon as the page is read.
    """
    if gate.everyone:
        raise UsageError(
            "every patient can pass this trial's gate, so the server cannot be searched for candidates: "
            "give --patient or --group (or use a Bulk Data export)"
        )
    searches: list[_Search] = []
    for rtype, concepts in gate.selectors:
        tokens = sorted({t for c in concepts for t in search_tokens(c)})
        texts = sorted({t for c in concepts for t in c.text})
        for start in range(0, len(tokens), CODES_PER_SEARCH):
            searches.append(_Search(rtype, "code", ",".join(tokens[start : start + CODES_PER_SEARCH])))
        searches.extend(_Search(rtype, "code:text", text) for text in texts)

    def run(search: _Search) -> _Found:
        before = client.thread_request_count  # counted per thread: this search's own requests
        found = _run_search(client, gate, search, on_found)
        return dataclasses.replace(found, requests=client.thread_request_count - before)

    workers = max(1, min(concurrency, len(searches)))
    if pool is None and workers == 1:
        outcomes = [run(search) for search in searches]
    else:
        with contextlib.ExitStack() as stack:
            # A caller's pool stays open for the record fetches; a pool of our own closes with the searches.
            runner = (
                pool
                if pool is not None
                else stack.enter_context(ThreadPoolExecutor(workers, thread_name_prefix="candidates"))
            )
            # In search order: the first search that failed is the one raised, as one at a time.
            outcomes = _in_search_order([runner.submit(run, search) for search in searches])
    patients: set[str] = set()
    warnings: list[str] = []
    rejected: set[str] = set()
    for outcome in outcomes:
        patients |= outcome.patients
        if outcome.rejected is not None and outcome.rtype not in rejected:
            # One warning per type: a server that refuses :text refuses every text of it.
            rejected.add(outcome.rtype)
            warnings.append(outcome.rejected)
    requests = sum(o.requests for o in outcomes)
    log.info("candidate search: %d patient(s) with a resource that can pass the gate", len(patients))
    return Candidates(tuple(sorted(patients)), requests, tuple(warnings))


@dataclass(frozen=True, slots=True)
class _Search:
    rtype: str
    param: str  # "code" (a chunk of system|code tokens) or "code:text"
    value: str


@dataclass(frozen=True, slots=True)
class _Found:
    rtype: str
    patients: frozenset[str]
    rejected: str | None = None  # the warning, when the server refused a :text search
    requests: int = 0


def _in_search_order(futures: list[Future[_Found]]) -> list[_Found]:
    try:
        return [future.result() for future in futures]
    finally:
        for future in futures:
            future.cancel()  # after a failure, the searches not started yet are not sent


def _run_search(
    client: FhirClient, gate: Gate, search: _Search, on_found: Callable[[str], None] | None
) -> _Found:
    patients: set[str] = set()
    try:
        for resource in client.search(search.rtype, _params(search.param, search.value)):
            pid = patient_of(resource)
            if pid is not None and pid not in patients and gate.admits(resource):
                patients.add(pid)
                if on_found is not None:
                    on_found(pid)
    except AuthError:
        raise
    except ServerError as exc:
        if search.param != "code:text" or isinstance(exc, ServerUnreachable) or (exc.status or 0) >= 500:
            raise
        # Only this part of the search is lost; say so instead of failing the whole run.
        warning = (
            f"the server rejected {search.rtype}?code:text= ({exc}); patients whose {search.rtype} has "
            "only a local code are not found: add the code to the site overlay"
        )
        return _Found(search.rtype, frozenset(), warning)
    return _Found(search.rtype, frozenset(patients))


def group_members(client: FhirClient, group_id: str) -> Candidates:
    """The Patient members of ``Group/group_id`` (inactive memberships skipped)."""
    before = client.thread_request_count
    response = client.read("Group", check_id(group_id, "--group"))
    if response is None or response.body is None:
        raise UsageError(f"Group/{group_id} does not exist on the server")
    ids: set[str] = set()
    skipped = 0
    for member in response.body.get("member") or []:
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        ref = ref_id(member.get("entity"))
        if ref and ref.startswith("Patient/"):
            ids.add(ref.removeprefix("Patient/"))
        else:
            skipped += 1
    warnings = (
        (f"Group/{group_id}: {skipped} member(s) are not Patients and were skipped",) if skipped else ()
    )
    return Candidates(tuple(sorted(ids)), client.thread_request_count - before, warnings)


def given_patients(ids: list[str]) -> Candidates:
    """``--patient`` ids (``Patient/`` prefix optional), checked, deduplicated and sorted."""
    clean = {check_id(pid.removeprefix("Patient/"), "--patient") for pid in ids}
    return Candidates(tuple(sorted(clean)), 0)


def check_id(value: str, option: str) -> str:
    if not _ID_RE.fullmatch(value) or value in (".", ".."):
        raise UsageError(f"{option}: {value!r} is not a FHIR id (A-Z a-z 0-9 - . up to 64 characters)")
    return value


def _params(name: str, value: str) -> list[tuple[str, str | int]]:
    # _elements keeps the pages small: the matcher needs only the code, the patient only the subject.
    return [(name, value), ("_elements", "code,subject"), ("_count", PAGE_SIZE)]
