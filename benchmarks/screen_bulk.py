"""Benchmark: screen hospital-shaped bulk exports, beside merely parsing the same bytes, at 1 and N workers.

    python benchmarks/screen_bulk.py                          # the three populations at their sizes
    python benchmarks/screen_bulk.py --populations a --sizes a=2000 --repeat 1   # a quick look

Populations (benchmarks/populations.py, every resource a clone of a real-world-shaped case):
  a  a quarter of the patients with dermatomyositis, 40 routine results each      (default 8,000 patients)
  b  every patient with dermatomyositis and 1,000 Observations, varied codes and units, some with only
     text or a local code                                                          (default 500 patients)
  c  hospital scale: 1 % dermatomyositis, about 50 resources per patient          (default 100,000)

For each: the json.loads floor (read every line, parse it with the standard library, group it by patient)
and the orjson floor (the same with orjson), then `fhir-adapter screen` at --workers 1 and at every core,
each in a fresh process (best of --repeat; peak RSS of the screen), and a check that every worker count
wrote the same result. The data is written once into --data (default /tmp/fhir-adapter-bench).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from populations import write_population  # noqa: E402

SIZES = {"a": 8000, "b": 500, "c": 100_000}


def _floor(folder: Path, parser: str) -> float:
    """Seconds to read, parse and group every line, in a fresh process."""
    code = f"""
import sys, time, {parser}
from pathlib import Path
start = time.perf_counter()
groups = {{}}
for path in sorted(Path({str(folder)!r}).glob("*.ndjson")):
    with path.open("rb") as fh:
        for line in fh:
            r = {parser}.loads(line)
            s = r.get("subject") or r.get("patient")
            key = s.get("reference") if isinstance(s, dict) else r.get("id")
            groups[key] = groups.get(key, 0) + 1
print(time.perf_counter() - start)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


_MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True)
if done.returncode not in (0, 3):
    sys.exit(done.stderr.decode(errors="replace")[-2000:])
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _screen(folder: Path, workers: int, out: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (KB, the largest process: the main one or a worker) of one screen, in a
    fresh process of its own."""
    command = [sys.executable, "-m", "fhir_adapter", "screen", str(folder), "--as-of", "2026-06-15"]
    command += ["--out", str(out), "--workers", str(workers)]
    measured = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command], check=True, capture_output=True, text=True
    )
    seconds, rss = measured.stdout.split()
    return float(seconds), int(rss)


def _subjects(path: Path) -> list[object]:
    return list(json.loads(path.read_text(encoding="utf-8"))["subjects"])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--populations", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    parser.add_argument("--sizes", nargs="*", default=[], metavar="KIND=N", help="e.g. c=20000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--data", type=Path, default=Path("/tmp/fhir-adapter-bench"))
    args = parser.parse_args()
    sizes = dict(SIZES) | {k: int(v) for k, v in (s.split("=") for s in args.sizes)}
    rows = []
    for kind in args.populations:
        folder = args.data / f"{kind}-{sizes[kind]}"
        stamp = args.data / f"{kind}-{sizes[kind]}.stats.json"
        if not stamp.exists():
            stats = write_population(kind, sizes[kind], folder)  # type: ignore[arg-type]
            stamp.write_text(json.dumps(stats.__dict__))
        stats = json.loads(stamp.read_text())
        floor_json = min(_floor(folder, "json") for _ in range(args.repeat))
        floor_orjson = min(_floor(folder, "orjson") for _ in range(args.repeat))
        timings = {}
        results = {}
        for workers in sorted({1, args.workers}):
            out = args.data / f"result-{kind}-{workers}.json"
            runs = [_screen(folder, workers, out) for _ in range(args.repeat)]
            timings[workers] = (min(s for s, _ in runs), max(r for _, r in runs))
            results[workers] = _subjects(out)
        same = all(r == results[1] for r in results.values())
        rows.append((kind, stats, floor_json, floor_orjson, timings, same))
    print(
        f"{'pop':<3} {'patients':>8} {'resources':>10} {'MB':>7} {'json s':>7} {'orjson s':>8} "
        f"{'w1 s':>7} {'w1/json':>7} {'w1/orj':>6} {'wN s':>7} {'wN/json':>7} {'w1/wN':>6} {'RSS MB':>7} same"
    )
    for kind, stats, fj, fo, timings, same in rows:
        w1, rss1 = timings[1]
        wn, rssn = timings[max(timings)]
        print(
            f"{kind:<3} {stats['patients']:>8} {stats['resources']:>10} {stats['bytes'] / 1e6:>7.0f} {fj:>7.2f} "
            f"{fo:>8.2f} {w1:>7.2f} {w1 / fj:>7.2f} {w1 / fo:>6.2f} {wn:>7.2f} {wn / fj:>7.2f} {w1 / wn:>6.2f} "
            f"{max(rss1, rssn) / 1024:>7.0f} {'yes' if same else 'NO'}"
        )
    print(f"(wN: --workers {args.workers}; RSS: peak of the screens, any worker count)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
