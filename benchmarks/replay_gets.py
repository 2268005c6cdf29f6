"""The bare client of benchmarks/screen_server.py, as a program of its own: the GETs of a file (one path
per line), in order, ``concurrency`` at a time, each on a plain ``requests.Session`` per thread, bodies
read and dropped. Prints the seconds the requests took (without the interpreter's start).

    python benchmarks/replay_gets.py ORIGIN CONCURRENCY GETS_FILE

It runs in a process of its own so that it can be timed like the adapter: from launch to exit.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests


def bare_get(session: requests.Session, url: str) -> None:
    """One GET as a client that does nothing with the answer makes it: the body read and dropped."""
    with session.get(url, headers={"Accept": "application/fhir+json"}, stream=True, timeout=120) as resp:
        for _ in resp.iter_content(65536):
            pass


def replay(origin: str, gets: list[str], concurrency: int) -> float:
    local = threading.local()

    def one(path: str) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        bare_get(session, origin + path)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, gets))
    return time.perf_counter() - start


def main() -> int:
    if len(sys.argv) != 4 or not sys.argv[2].isdigit():
        raise SystemExit("usage: python benchmarks/replay_gets.py ORIGIN CONCURRENCY GETS_FILE")
    origin, concurrency, gets_file = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    gets = [line for line in gets_file.read_text(encoding="utf-8").splitlines() if line]
    print(f"{replay(origin, gets, concurrency):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
