#!/usr/bin/env python3
"""The dry-run engine's speed: steps a second, and the whole process's time.

Runs scripts/bench/loop.yaml (a counting loop with a secret field, as
`--dry-run --trace jsonl --trace-file`, stdout to /dev/null) at 10, 10,000
and 100,000 iterations, best of nine each, with the release build. The
10-iteration run is the baseline: what starting the process costs. Steps a
second are measured past it, (steps - baseline steps) / (time - baseline
time), so the figure is the engine's, whatever the machine's start-up.

    cargo build --profile dist && scripts/bench-engine.py

$HANDOFF_BIN runs another build (an older commit, say) for comparison.
"""
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("HANDOFF_BIN") or os.path.join(ROOT, "target", "dist", "handoff")
# Not a build older than the code checked out (scripts/build_check.py, beside this one).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_check  # noqa: E402

build_check.fresh(BIN)
FLOW = os.path.join(ROOT, "scripts", "bench", "loop.yaml")


def once(iterations, trace_file, quiet):
    args = [BIN, "--color", "never", "run", FLOW, "--dry-run", "--set", f"max_tries={iterations}"]
    args += ["--quiet"] if quiet else ["--trace", "jsonl", "--trace-file", trace_file]
    env = {**os.environ, "NWC_TOKEN": "bench-secret-token-0123"}
    start = time.perf_counter()
    subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_maxrss


def best(iterations, trace_file, quiet, runs=9):
    results = [once(iterations, trace_file, quiet) for _ in range(runs)]
    return min(r[0] for r in results), max(r[1] for r in results)


def main():
    trace_file = os.path.join(tempfile.gettempdir(), "handoff-bench-trace.jsonl")
    for quiet in (False, True):
        mode = "--quiet, no trace file" if quiet else "--trace jsonl --trace-file"
        base, _ = best(10, trace_file, quiet)
        print(f"{mode}: the process alone (10 iterations) {base * 1000:.0f} ms")
        for n in (10_000, 100_000):
            wall, rss = best(n, trace_file, quiet)
            steps = 2 * n + 2
            rate = (steps - 22) / max(wall - base, 1e-9)
            print(f"  {n:>7} iterations ({steps} steps): {wall * 1000:6.0f} ms, "
                  f"{rate / 1000:6.0f} k steps/s past start-up, peak RSS {rss / 1024:.1f} MiB")
    os.remove(trace_file)


if __name__ == "__main__":
    sys.exit(main())
