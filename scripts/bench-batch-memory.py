#!/usr/bin/env python3
"""A batch's memory against its row count: `handoff run --each` of 10,000,
100,000 and 1,000,000 rows, as a dry run against the reference flow's mock
(`--quiet`), each in its own process, its peak resident memory read from the
kernel (wait4's ru_maxrss). The goal: flat, and under 100 MB at a million.
The 10,000-row run is the baseline; the figures are also shown as ratios to
it, so the result does not depend on this machine's speed.

    cargo build --profile dist && scripts/bench-batch-memory.py [MAX_ROWS]

$HANDOFF_BIN runs another build (an older commit, say) for comparison.
"""
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
FLOW = os.path.join(ROOT, "flows", "complete-nwc-task.yaml")
MOCK = os.path.join(ROOT, "flows", "complete-nwc-task.mock.yaml")


def rows_file(folder, count):
    path = os.path.join(folder, f"rows-{count}.jsonl")
    with open(path, "w") as f:
        for i in range(count):
            f.write(f'{{"instance_id": "7c1e4b52-{i:08d}"}}\n')
    return path


def measure(path):
    args = [BIN, "--color", "never", "run", FLOW, "--each", path, "--mock", MOCK, "--quiet"]
    env = {**os.environ, "NWC_TOKEN": "bench-secret-token-0123"}
    start = time.perf_counter()
    child = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    out = child.stdout.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"the batch failed: {out}{child.stderr.read().decode()}")
    return usage.ru_maxrss / 1024, wall, out.strip().splitlines()[-1]


def main():
    top = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    counts = [c for c in (10_000, 100_000, 1_000_000) if c <= top]
    with tempfile.TemporaryDirectory() as folder:
        base = None
        print(f"{'rows':>9}  {'peak RSS':>10}  {'ratio':>6}  {'time':>8}  summary")
        for count in counts:
            rss, wall, summary = measure(rows_file(folder, count))
            base = base or rss
            print(f"{count:>9}  {rss:>7.1f} MB  {rss / base:>5.2f}×  {wall:>6.1f} s  {summary}")


if __name__ == "__main__":
    main()
