#!/usr/bin/env python3
"""Runs waiting for signals under one `handoff serve`: memory, and latency.

Starts `handoff serve` (SQLite store in a temporary folder) with a flow that
waits in a `wait_for` for up to an hour and then logs, starts N runs (10,000
by default) and waits until every one of them waits, reading the worker's
resident memory before and after: the memory a waiting run costs. Then it
signals 500 of them one at a time through the API, and reads, in each run's
trace, when the step after the wait started: the time from a signal's
request to the next step, p50 and p99, on this machine's clock.

    scripts/bench-signals.py [BINARY] [RUNS]   (default: target/dist/handoff 10000)
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
from datetime import datetime

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/dist/handoff"
# Not a build older than the code checked out (scripts/build_check.py, beside this one).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_check  # noqa: E402

build_check.fresh(BIN)
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
SIGNALLED = 500

FLOW = """
flow: waits
fields:
  index: { type: number, input: true, default: 0 }
steps:
  - id: hold
    wait_for: { signal: go, timeout: 1h, on_timeout: late }
  - id: after
    log: "signalled"
  - id: done
    end: signalled
  - id: late
    fail: too late
"""


CONN = {}


def call(base, method, path, body=None):
    # One kept-alive connection, as a client in production would use.
    conn = CONN.get(base)
    if conn is None:
        host, port = base.removeprefix("http://").split(":")
        conn = CONN[base] = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request(method, path, body=None if body is None else json.dumps(body),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read().decode()


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def waiting(base):
    _, text = call(base, "GET", "/metrics")
    m = re.search(r'handoff_runs\{flow="waits",status="waiting"\} (\d+)', text)
    return int(m.group(1)) if m else 0


def when(event):
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


def main():
    with tempfile.TemporaryDirectory() as folder:
        flows = os.path.join(folder, "flows")
        os.mkdir(flows)
        with open(os.path.join(flows, "waits.yaml"), "w") as f:
            f.write(FLOW)
        proc = subprocess.Popen(
            [BIN, "serve", flows, "--listen", "127.0.0.1:0", "--quiet",
             "--store", os.path.join(folder, "handoff.db")],
            stderr=subprocess.PIPE, text=True)
        base = None
        said = []
        for line in proc.stderr:
            said.append(line)
            if line.startswith("listening on "):
                base = line.split()[-1]
                break
        if base is None:
            sys.exit("serve did not start:\n" + "".join(said))
        # Nothing more is read: keep the pipe from filling up.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        try:
            time.sleep(0.5)
            before = rss_mb(proc.pid)
            start = time.perf_counter()
            ids = []
            for i in range(RUNS):
                _, text = call(base, "POST", "/v1/flows/waits/runs", {"inputs": {"index": i}})
                ids.append(json.loads(text)["id"])
            while waiting(base) < RUNS:
                time.sleep(0.2)
            started = time.perf_counter() - start
            after = rss_mb(proc.pid)
            print(f"{RUNS} runs started and waiting in {started:.1f} s; worker RSS {before:.1f} MB "
                  f"before, {after:.1f} MB with them waiting: "
                  f"{(after - before) * 1024 * 1024 / RUNS:.0f} bytes a waiting run")
            sent = {}
            for run in ids[:SIGNALLED]:
                sent[run] = time.time()
                status, _ = call(base, "POST", f"/v1/runs/{run}/signals/go", {})
                assert status == 202, status
                time.sleep(0.01)
            latencies = []
            for run in ids[:SIGNALLED]:
                for _ in range(200):
                    _, trace = call(base, "GET", f"/v1/runs/{run}/trace")
                    events = [json.loads(l) for l in trace.splitlines() if l]
                    nxt = [e for e in events if e.get("event") == "step_started" and e.get("step") == "after"]
                    if nxt:
                        latencies.append((when(nxt[0]) - sent[run]) * 1000)
                        break
                    time.sleep(0.05)
            latencies.sort()
            p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
            print(f"signal → next step, {len(latencies)} runs signalled one at a time: "
                  f"p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, max {latencies[-1]:.1f} ms")
            print(f"worker RSS after: {rss_mb(proc.pid):.1f} MB")
        finally:
            proc.terminate()
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
