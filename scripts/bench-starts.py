#!/usr/bin/env python3
"""Starting durable runs through `handoff serve`: one HTTP call a run, against
a bulk start (`{"runs": [...]}`, 100 a call, kept in one transaction), on a
SQLite store, with a no-op flow (scripts/bench/noop.yaml) so that the start
path is what is measured. N runs each way, on a fresh store, timed until the
worker's /metrics count them all succeeded.

    cargo build --profile dist && scripts/bench-starts.py [N]   # 2000
"""
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("HANDOFF_BIN") or os.path.join(ROOT, "target", "dist", "handoff")
# Not a build older than the code checked out (scripts/build_check.py, beside this one).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_check  # noqa: E402

build_check.fresh(BIN)
FLOW = os.path.join(ROOT, "scripts", "bench", "noop.yaml")


def serve(tmp, store=None):
    """`handoff serve` of the no-op flow on `store` (a SQLite file in `tmp` by
    default, or a Postgres URL): the process and its port."""
    flows = os.path.join(tmp, "flows")
    os.makedirs(flows, exist_ok=True)
    with open(FLOW) as src, open(os.path.join(flows, "noop.yaml"), "w") as dst:
        dst.write(src.read())
    proc = subprocess.Popen(
        [BIN, "--color", "never", "serve", flows, "--listen", "127.0.0.1:0", "--quiet",
         "--store", store or os.path.join(tmp, "handoff.db")],
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HANDOFF_STORE_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="})
    for line in proc.stderr:
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, int(found.group(1))
    raise SystemExit("serve did not start")


def succeeded(conn):
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    found = re.search(r'handoff_runs\{flow="noop",status="succeeded"\} (\d+)', text)
    return int(found.group(1)) if found else 0


def measure(n, bulk):
    tmp = tempfile.mkdtemp(prefix="handoff-bench-starts-")
    proc, port = serve(tmp)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    start = time.perf_counter()
    if bulk:
        for first in range(0, n, bulk):
            runs = [{"inputs": {"item": i}} for i in range(first, min(n, first + bulk))]
            conn.request("POST", "/v1/flows/noop/runs", json.dumps({"runs": runs}),
                         {"Content-Type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 201, answer.status
    else:
        for i in range(n):
            conn.request("POST", "/v1/flows/noop/runs", json.dumps({"inputs": {"item": i}}),
                         {"Content-Type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 201, answer.status
    while succeeded(conn) < n:
        time.sleep(0.02)
    took = time.perf_counter() - start
    proc.terminate()
    proc.wait()
    return took


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    one = min(measure(n, None) for _ in range(2))
    many = min(measure(n, 100) for _ in range(2))
    print(f"{n} no-op durable runs through serve, SQLite, best of two:")
    print(f"  one start a call:     {one:6.2f} s, {n / one:6.0f} runs/s (baseline)")
    print(f"  100 starts a call:    {many:6.2f} s, {n / many:6.0f} runs/s ({one / many:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
