"""Benchmark: the client's CPU per request, beside bare ``requests``, on the same GETs of a live server.

    python benchmarks/request_cpu.py http://127.0.0.1:8591/fhir /tmp/fhir-adapter-bench-server/replay-gets.txt

GETS_FILE is a list of base-relative GETs, one per line (``benchmarks/screen_server.py`` leaves the last
replayed row's in ``--data``/replay-gets.txt). The searches among them (a type and a query; paging links
left out) are sent one at a time, first by a plain ``requests.Session`` as the replay sends them
(``replay_gets.bare_get``), then by ``FhirClient.search`` (deadline, size cap, strict JSON parse,
paging), each after 20 warm-up requests; printed: CPU milliseconds per request (``time.process_time``,
so the server's own time does not count) and wall milliseconds per request. Run it two or three times:
the server shares the machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import requests
from replay_gets import bare_get  # the replay's own GET (this folder is on the path when run)

from fhir_adapter.client.http import FhirClient


def _measure(name: str, one: Callable[[str], None], gets: list[str]) -> None:
    for path in gets[:20]:
        one(path)
    cpu, wall = time.process_time(), time.perf_counter()
    for path in gets:
        one(path)
    n = len(gets)
    print(
        f"{name:<8} {(time.process_time() - cpu) / n * 1000:6.3f} ms CPU/request  "
        f"{(time.perf_counter() - wall) / n * 1000:6.2f} ms wall/request  ({n} requests)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("base", help="FHIR base URL, e.g. http://127.0.0.1:8591/fhir")
    parser.add_argument("gets", type=Path, help="file of base-relative GETs, one per line")
    parser.add_argument("--max", type=int, default=400, help="searches to send (default 400)")
    args = parser.parse_args()

    base = args.base.rstrip("/")
    base_path = urlsplit(base).path
    # Searches only: a paging link (``?_getpages=...`` at the base) names a result set the server may
    # have dropped since.
    paths = (
        line.removeprefix(base_path).lstrip("/")
        for line in args.gets.read_text(encoding="utf-8").splitlines()
    )
    searches = [path for path in paths if "?" in path and not path.startswith("?")][: args.max]
    if not searches:
        raise SystemExit(f"{args.gets}: no searches (paths with a query) to send")

    session = requests.Session()

    def bare(path: str) -> None:
        bare_get(session, f"{base}/{path}")

    client = FhirClient(base)

    def adapter(path: str) -> None:
        where, _, query = path.partition("?")
        for _ in client.search(where, parse_qsl(query)):
            pass

    _measure("requests", bare, searches)
    _measure("adapter", adapter, searches)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
