#!/usr/bin/env python3
"""Resident memory of `handoff serve` per run waiting in a timer.

Starts `handoff sim` and `handoff serve` (the `dist` build), starts N runs of
flows/complete-nwc-task.yaml whose tasks never appear and whose poll interval
is an hour, waits until all N wait in their timers, and reads the worker's
VmRSS from /proc. Then it restarts the worker on the same store: a worker
that finds N waiting runs holds only what it needs to wake them.

    cargo build --profile dist && scripts/serve-memory.py 10000 [100000 ...]

Prints one line per N: the worker's memory before, after starting the runs,
and after a restart, with the growth per waiting run and the store's size.
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "dist", "handoff")
# Not a build older than the code checked out (scripts/build_check.py, beside this one).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_check  # noqa: E402

build_check.fresh(BIN)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


def start(args, env=None):
    # The simulator says where it listens on stdout, the worker on stderr.
    proc = subprocess.Popen(
        [BIN, "--color", "never", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    for line in proc.stdout:
        found = re.search(r"listening on http://([\d.]+):(\d+)", line)
        if found:
            # Nothing more is read: keep the pipe from filling up.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, (found.group(1), int(found.group(2)))
    raise SystemExit(f"{args[0]} did not start")


def call(conn, method, path, body=None):
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, json.loads(r.read() or b"null")


def waiting(conn):
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    m = re.search(r'handoff_runs\{flow="complete-nwc-task",status="waiting"\} (\d+)', text)
    return int(m.group(1)) if m else 0


def settle(pid, seconds=2.0):
    """RSS once it stops changing (the last checkpoints written)."""
    last, stable_since = rss_kib(pid), time.time()
    while time.time() - stable_since < seconds:
        time.sleep(0.2)
        now = rss_kib(pid)
        if now != last:
            last, stable_since = now, time.time()
    return last


def measure(n):
    work = tempfile.mkdtemp(prefix="handoff-mem-")
    flows = os.path.join(work, "flows")
    os.mkdir(flows)
    shutil.copy(os.path.join(ROOT, "flows", "complete-nwc-task.yaml"), flows)
    db = os.path.join(work, "handoff.db")
    sim, (sh, sp) = start(["sim", "--port", "0", "--quiet", "--token", "mem-token-0123456789"])
    env = {"NWC_BASE_URL": f"http://{sh}:{sp}", "NWC_TOKEN": "mem-token-0123456789"}
    serve_args = ["serve", flows, "--listen", "127.0.0.1:0", "--store", db, "--quiet"]
    worker, (wh, wp) = start(serve_args, env)
    try:
        simc = http.client.HTTPConnection(sh, sp)
        api = http.client.HTTPConnection(wh, wp)
        base = settle(worker.pid, 1.0)
        # One instance for all runs: its task never appears (a million polls away).
        _, created = call(simc, "POST", "/_sim/instances", {"delay": "0s", "after_polls": 10**9})
        instance = created["instances"][0]["id"]
        t0 = time.time()
        for _ in range(n):
            status, _ = call(api, "POST", "/v1/flows/complete-nwc-task/runs",
                             {"inputs": {"instance_id": instance, "poll_interval": "1h"}})
            assert status == 201, status
        while waiting(api) < n:
            time.sleep(0.2)
        started = time.time() - t0
        after = settle(worker.pid)
        worker.terminate()
        worker.wait()
        worker, (wh, wp) = start(serve_args, env)
        api = http.client.HTTPConnection(wh, wp)
        assert waiting(api) == n
        restarted = settle(worker.pid, 1.0)
        size = sum(os.path.getsize(os.path.join(work, f)) for f in os.listdir(work)
                   if f.startswith("handoff.db"))
        print(f"{n} waiting runs (started in {started:.0f} s): worker RSS {base / 1024:.1f} MiB idle, "
              f"{after / 1024:.1f} MiB with them ({(after - base) * 1024 / n / 1024:.1f} KiB a run), "
              f"{restarted / 1024:.1f} MiB after a restart ({(restarted - base) * 1024 / n / 1024:.2f} KiB a run); "
              f"store {size / n / 1024:.1f} KiB a run")
    finally:
        worker.kill()
        sim.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["10000"]:
        measure(int(arg))
