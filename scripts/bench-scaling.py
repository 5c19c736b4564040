#!/usr/bin/env python3
"""Whether costs grow as they should: two claims tests/hostile.rs used to make
with a CPU cap alone, measured here as ratios instead.

- `deserialize_id … where:` over N tasks (tests/files/hostile/where.yaml, the
  wanted task last, N = 500 to 16,000, dry run on a mock): linear.
- Renders that read a secret (tests/files/hostile/log-secret-length.yaml,
  R = 1,000 to 32,000 rounds): each must cost the same, so linear too.

Each run is the best of five. The sizes double; the figure is what a step
adds over what the step before added: 2 for a linear cost, 4 for a quadratic
one, whatever the process's start-up costs.

    cargo build --profile dist && scripts/bench-scaling.py

$HANDOFF_BIN runs another build for comparison.
"""
import json
import os
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
WHERE = os.path.join(ROOT, "tests", "files", "hostile", "where.yaml")
SECRET = os.path.join(ROOT, "tests", "files", "hostile", "log-secret-length.yaml")


def timed(args, env):
    best = None
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run(args, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        took = time.perf_counter() - start
        best = took if best is None else min(best, took)
    return best


def where_mock(n, path):
    # Small tasks: a mock file is read up to 1 MB.
    tasks = [{"id": f"t{i}", "assignee": f"u{i}"} for i in range(n)]
    with open(path, "w") as f:
        json.dump({"responses": [{"step": "find_task", "status": 200, "body": {"tasks": tasks}}]},
                  f, separators=(",", ":"))


def series(name, sizes, run):
    """Each step doubles the size; what a step adds, against what the step
    before added, is 2 for a linear cost and 4 for a quadratic one, whatever
    start-up costs (it cancels out)."""
    times = [(n, run(n)) for n in sizes]
    print(name)
    for k, (n, t) in enumerate(times):
        line = f"  {n:>6}: {t * 1000:7.1f} ms"
        if k >= 2:
            added = t - times[k - 1][1]
            before = times[k - 1][1] - times[k - 2][1]
            line += f"; added {added * 1000:6.1f} ms, {added / max(before, 1e-6):4.2f}× what the step before added"
        print(line)


def main():
    tmp = tempfile.mkdtemp(prefix="handoff-bench-scaling-")

    def where(n):
        mock = os.path.join(tmp, f"where-{n}.mock.json")
        where_mock(n, mock)
        return timed([BIN, "--color", "never", "run", WHERE, "--mock", mock, "--quiet",
                      "--set", "instance_id=i-1", "--set", f"wanted=u{n - 1}"],
                     {"NWC_BASE_URL": "https://nwc.invalid"})

    def secret(rounds):
        return timed([BIN, "--color", "never", "run", SECRET, "--dry-run", "--quiet",
                      "--set", f"rounds={rounds}"], {"NWC_TOKEN": "bench-secret-token-7c2d"})

    series("where: over N tasks, the last one wanted", [500, 1_000, 2_000, 4_000, 8_000, 16_000], where)
    series("renders that read a secret: R rounds", [1_000, 2_000, 4_000, 8_000, 16_000, 32_000], secret)


if __name__ == "__main__":
    sys.exit(main())
