#!/usr/bin/env python3
"""A `for_each` over many items in a dry run: time and peak memory.

Runs one flow, a block of three steps per item (a mocked GET, a decision, a
`set`), 8 items at a time, over 10,000 and 100,000 items, quietly, and
prints the wall time per item and the peak RSS of each, then the ratios
of the large run to the small one. Flat means the time per item and the
memory beyond the list itself do not grow with the list.

    scripts/bench-each.py [BINARY]   (default: target/dist/handoff)
"""

import json
import os
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/dist/handoff"
# Not a build older than the code checked out (scripts/build_check.py, beside this one).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_check  # noqa: E402

build_check.fresh(BIN)

FLOW = """
flow: bench-each
fields:
  items:  { type: json, input: true }
  counts: json
steps:
  - id: each
    for_each:
      items: "{{ items }}"
      as: item
      max_items: 1000000
      concurrency: 8
      fields:
        job: json
        state: text
      steps:
        - id: ask
          http: { url: "https://jobs.example.com/jobs/{{ item }}" }
          output: { body: job }
        - id: ready
          decision:
            - when: "job.state == 'done'"
              goto: mark
            - otherwise: end
        - id: mark
          set: { state: "{{ job.state }}" }
      result: "{{ state }}"
    output: { counts: counts }
"""

# The same inputs, read and held, with no loop: what the list itself costs.
BASELINE = """
flow: bench-baseline
fields:
  items: { type: json, input: true }
steps:
  - id: held
    log: "{{ items | length }} items"
"""

MOCK = """
responses:
  - request: GET /jobs/*
    body: { state: done }
"""


def run(n, folder, flow="flow.yaml"):
    inputs = os.path.join(folder, f"items-{n}.json")
    with open(inputs, "w") as f:
        json.dump({"items": list(range(n))}, f, separators=(",", ":"))
    start = time.perf_counter()
    proc = subprocess.Popen(
        [BIN, "run", os.path.join(folder, flow), "--mock",
         os.path.join(folder, "mock.yaml"), "--input", inputs, "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out = proc.stdout.read().decode()
    if status != 0 or "succeeded" not in out:
        sys.exit(f"{n} items: the run failed: {out}{proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024


def main():
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "flow.yaml"), "w") as f:
            f.write(FLOW)
        with open(os.path.join(folder, "mock.yaml"), "w") as f:
            f.write(MOCK)
        with open(os.path.join(folder, "baseline.yaml"), "w") as f:
            f.write(BASELINE)
        results = {}
        for n in (10_000, 100_000):
            best = min((run(n, folder) for _ in range(3)), key=lambda r: r[0])
            base = min(run(n, folder, "baseline.yaml")[1] for _ in range(3))
            results[n] = best + (best[1] - base,)
            wall, rss, beyond = results[n]
            print(f"{n:>7} items: {wall:6.2f} s, {wall / n * 1e6:6.1f} µs an item, "
                  f"peak RSS {rss:6.1f} MB ({base:.1f} MB holding the list alone, {beyond:+.1f} MB for the loop)")
        (w1, _, b1), (w2, _, b2) = results[10_000], results[100_000]
        print(f"ratio 100k/10k: time an item {w2 / 100_000 / (w1 / 10_000):.2f}, "
              f"memory beyond the list {b2:.1f} MB against {b1:.1f} MB")


if __name__ == "__main__":
    main()
