#!/usr/bin/env python3
"""No-op durable runs on Postgres beside Graphile Worker, a Postgres job queue,
on the same throwaway cluster (scripts/pg.sh), the work added the same way on
both sides:

- one at a time: handoff `serve` started by one `POST /v1/flows/noop/runs` a
  run, in turn on one kept-alive connection, while it runs them; Graphile
  Worker running while its jobs are added by one `addJob` call each, in turn;
- in bulk: handoff `serve` started by bulk starts of 1,000 runs a call, and
  `handoff run --each ROWS --durable` into the store; Graphile Worker's jobs
  inserted first in one `addJobs` call, then its worker started (the time to
  insert them is not counted: the issue's bar).

Graphile Worker (pinned below) is installed with npm into target/npm-gw when
it is missing. It runs at concurrency 8 (as `--jobs 8`), with and without its
local queue (jobs fetched in batches of 100, its setting for throughput); the
better of the two is the bar. Every way runs on a fresh database, three times,
alternating, and its best counts. handoff's runs are the no-op flow
scripts/bench/noop.yaml (one `end` step); a run counts when the worker's
/metrics counts it succeeded (asked every 20 ms).

    cargo build --profile dist && scripts/bench-queue.py [N] [one|bulk]
    # N defaults to 5000; the second argument measures one of the two ways alone
"""
import http.client
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.environ.get("HANDOFF_BIN") or os.path.join(ROOT, "target", "dist", "handoff")
# Not a build older than the code checked out (scripts/build_check.py, beside this one).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_check  # noqa: E402

build_check.fresh(BIN)
FLOW = os.path.join(HERE, "bench", "noop.yaml")
DRIVER = os.path.join(HERE, "bench", "graphile.mjs")
GRAPHILE = "graphile-worker@0.17.3"  # the newest that runs on Node 20
MODULES = os.path.join(ROOT, "target", "npm-gw")
KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
TRIES = 3
JOBS = 8


def _load(name, file):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, file))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# `serve` of the no-op flow, and its count of succeeded runs: the start benchmark's.
_starts = _load("bench_starts", "bench-starts.py")


def install_graphile():
    if not os.path.exists(os.path.join(MODULES, "node_modules", "graphile-worker")):
        os.makedirs(MODULES, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", MODULES, GRAPHILE],
                       check=True, capture_output=True)


def database(base, name):
    subprocess.run(["psql", base, "-q", "-c", f"DROP DATABASE IF EXISTS {name}", "-c", f"CREATE DATABASE {name}"],
                   check=True, capture_output=True)
    return urllib.parse.urlparse(base)._replace(path="/" + name).geturl()


def graphile(url, mode, n, local_queue):
    out = subprocess.run(["node", DRIVER, url, mode, str(n), str(JOBS), str(local_queue)], check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "GRAPHILE_MODULES": os.path.join(MODULES, "node_modules")})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["done"] != n:
        raise SystemExit(f"Graphile Worker did {result['done']} of {n} jobs")
    return result["seconds"]


def post(conn, body):
    conn.request("POST", "/v1/flows/noop/runs", json.dumps(body), {"Content-Type": "application/json"})
    answer = conn.getresponse()
    text = answer.read()
    if answer.status not in (200, 201, 202):
        raise SystemExit(f"a start failed: {answer.status} {text[:200]}")


def served(url, n, bulk, work):
    proc, port = _starts.serve(work, url)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        watch = http.client.HTTPConnection("127.0.0.1", port)
        start = time.perf_counter()
        if bulk:
            for first in range(0, n, 1000):
                post(conn, {"runs": [{"inputs": {"item": i}} for i in range(first, min(n, first + 1000))]})
        else:
            for i in range(n):
                post(conn, {"inputs": {"item": i}})
        while _starts.succeeded(watch) < n:
            time.sleep(0.02)
        return time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait()


def each(url, n, work):
    rows = os.path.join(work, "rows.jsonl")
    with open(rows, "w") as f:
        for i in range(n):
            f.write(json.dumps({"item": i}) + "\n")
    start = time.perf_counter()
    subprocess.run([BIN, "--color", "never", "run", FLOW, "--each", rows, "--durable", "--store", url,
                    "--jobs", str(JOBS), "--quiet"], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "HANDOFF_STORE_KEY": KEY})
    seconds = time.perf_counter() - start
    found = subprocess.run(["psql", url, "-tA", "-c", "SELECT count(*) FROM runs WHERE status = 'succeeded'"],
                           check=True, capture_output=True, text=True).stdout.strip()
    if int(found) != n:
        raise SystemExit(f"run --each --durable kept {found} of {n} runs succeeded")
    return seconds


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    install_graphile()
    work = tempfile.mkdtemp(prefix="handoff-bench-queue-")
    pg_dir = tempfile.mkdtemp(prefix="handoff-bench-queue-pg-")
    base = subprocess.run([os.path.join(HERE, "pg.sh"), "start", pg_dir], check=True, capture_output=True,
                          text=True).stdout.strip().splitlines()[-1]
    ways = {
        "one at a time": [
            ("Graphile Worker", lambda url, _: graphile(url, "one", n, 0)),
            ("Graphile Worker, local queue", lambda url, _: graphile(url, "one", n, 100)),
            ("handoff serve", lambda url, w: served(url, n, False, w)),
        ],
        "in bulk": [
            ("Graphile Worker, inserted first", lambda url, _: graphile(url, "bulk", n, 0)),
            ("Graphile Worker, inserted first, local queue", lambda url, _: graphile(url, "bulk", n, 100)),
            ("handoff serve, 1,000 a call", lambda url, w: served(url, n, True, w)),
            ("handoff run --each --durable", lambda url, w: each(url, n, w)),
        ],
    }
    only = {"one": "one at a time", "bulk": "in bulk"}.get(sys.argv[2] if len(sys.argv) > 2 else "")
    ways = {group: entries for group, entries in ways.items() if only in (None, group)}
    best = {}
    try:
        for attempt in range(TRIES):
            for g, (group, entries) in enumerate(ways.items()):
                for k, (name, measure) in enumerate(entries):
                    round_dir = os.path.join(work, f"{attempt}-{g}-{k}")
                    os.makedirs(round_dir)
                    url = database(base, f"bench_queue_{g}_{k}")
                    seconds = measure(url, round_dir)
                    rate = n / seconds
                    print(f"{group:<14} {name:<46} {rate:7.0f}/s", flush=True)
                    best[(group, name)] = max(best.get((group, name), 0), rate)
        print()
        for group, entries in ways.items():
            bar = max(best[(group, name)] for name, _ in entries if name.startswith("Graphile"))
            for name, _ in entries:
                rate = best[(group, name)]
                print(f"best, {group:<14} {name:<46} {rate:7.0f}/s  {rate / bar:4.2f} of Graphile Worker's best")
    finally:
        subprocess.run([os.path.join(HERE, "pg.sh"), "stop", pg_dir], capture_output=True)
        shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
