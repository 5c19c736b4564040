#!/usr/bin/env python3
"""Several `handoff serve` workers on one Postgres, against `handoff sim`:

1. throughput: N runs started through the workers' API and completed (a list,
   a read of the task and a PATCH each), with 1, 2 and 3 workers, in runs a
   second and a minute;
2. timer lag: RUNS runs waiting in a timer at once; when they wake, the
   median and 99th percentile of the time between `wake_at` and the step
   starting, from the workers' `handoff_timer_lag_seconds` histograms.

It starts a throwaway cluster with scripts/pg.sh (or uses $HANDOFF_BENCH_PG_URL),
a database per measurement, and checks through /_sim/state that every task
was completed exactly once.

    cargo build --profile dist && scripts/bench-postgres.py [N] [RUNS]   # 2000, 10000
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
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("HANDOFF_BIN") or os.path.join(ROOT, "target", "dist", "handoff")
# Not a build older than the code checked out (scripts/build_check.py, beside this one).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_check  # noqa: E402

build_check.fresh(BIN)
FLOW = os.path.join(ROOT, "flows", "complete-nwc-task.yaml")
TOKEN = "bench-token-0123456789"
KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def read_port(proc, pattern):
    for line in proc.stdout:
        found = re.search(pattern, line)
        if found:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return int(found.group(1))
    raise SystemExit("a process did not start: " + " ".join(proc.args))


def call(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"content-type": "application/json"})
    r = conn.getresponse()
    text = r.read()
    conn.close()
    return r.status, text


def database(base, name):
    subprocess.run(["psql", base, "-q", "-c", f"DROP DATABASE IF EXISTS {name}", "-c", f"CREATE DATABASE {name}"],
                   check=True, capture_output=True)
    u = urllib.parse.urlparse(base)
    return u._replace(path="/" + name).geturl()


def start_workers(url, sim_port, n, flows, binary=None, under=()):
    """N workers on one store; `under` is a command each runs inside (valgrind)."""
    env = dict(os.environ, NWC_BASE_URL=f"http://127.0.0.1:{sim_port}", NWC_TOKEN=TOKEN,
               HANDOFF_STORE_KEY=KEY)
    env.pop("HANDOFF_API_TOKEN", None)
    workers = []
    for _ in range(n):
        p = subprocess.Popen([*under, binary or BIN, "--color", "never", "serve", flows, "--listen", "127.0.0.1:0",
                              "--store", url, "--quiet", "--max-inflight", "64"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        p.stdout = p.stderr
        workers.append((p, read_port(p, r"listening on http://[\d.]+:(\d+)")))
    return workers


def stop(workers):
    for p, _ in workers:
        p.kill()
        p.wait()


def instances(sim_port, n, after_polls=0):
    out = []
    while len(out) < n:
        _, text = call(sim_port, "POST", "/_sim/instances",
                       {"count": min(1000, n - len(out)), "delay": "0s", "after_polls": after_polls})
        out += [(i["id"], i["taskId"]) for i in json.loads(text)["instances"]]
    return out


def start_runs(workers, made, inputs):
    """Starts a run per instance, spread over the workers, 16 requests at a time."""
    todo = list(enumerate(made))
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                if not todo:
                    return
                i, (instance, _) = todo.pop()
            port = workers[i % len(workers)][1]
            status, text = call(port, "POST", "/v1/flows/complete-nwc-task/runs",
                                {"inputs": dict(inputs, instance_id=instance)})
            if status != 201:
                raise SystemExit(f"a start failed: {status} {text[:200]}")

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def metric(port, name):
    _, text = call(port, "GET", "/metrics")
    return text.decode()


def succeeded(url):
    out = subprocess.run(["psql", url, "-tA", "-c", "SELECT count(*) FROM runs WHERE status = 'succeeded'"],
                         check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


def check(sim_port, made):
    _, text = call(sim_port, "GET", "/_sim/state")
    tasks = {t["id"]: t for t in json.loads(text)["tasks"]}
    bad = [t for _, t in made if tasks[t]["completions"] != 1]
    if bad:
        raise SystemExit(f"{len(bad)} tasks were not completed exactly once")


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    waiting = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    cluster = None
    base = os.environ.get("HANDOFF_BENCH_PG_URL")
    if not base:
        cluster = tempfile.mkdtemp(prefix="handoff-bench-pg-")
        base = subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), "start", cluster],
                              check=True, capture_output=True, text=True).stdout.strip()
    flows = tempfile.mkdtemp(prefix="handoff-bench-flows-")
    os.symlink(FLOW, os.path.join(flows, "complete-nwc-task.yaml"))
    sim = subprocess.Popen([BIN, "--color", "never", "sim", "--port", "0", "--quiet", "--token", TOKEN,
                            "--task-delay", "0s"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sim_port = read_port(sim, r"listening on http://[\d.]+:(\d+)")
    try:
        print(f"throughput: {n} runs, each a list, a read of the task and a PATCH, started through the API")
        for count in (1, 2, 3):
            url = database(base, f"bench_{count}")
            workers = start_workers(url, sim_port, count, flows)
            made = instances(sim_port, n)
            t0 = time.perf_counter()
            start_runs(workers, made, {})
            while succeeded(url) < n:
                time.sleep(0.05)
            took = time.perf_counter() - t0
            check(sim_port, made)
            stop(workers)
            print(f"  {count} worker(s): {n / took:7.0f} runs/s  ({n / took * 60:9.0f}/min)  in {took:.2f}s")
        print(f"timer lag: {waiting} runs waiting in a 10 s timer at once, 3 workers")
        url = database(base, "bench_lag")
        workers = start_workers(url, sim_port, 3, flows)
        made = instances(sim_port, waiting, after_polls=1)
        start_runs(workers, made, {"poll_interval": "10s"})
        while succeeded(url) < waiting:
            time.sleep(0.2)
        check(sim_port, made)
        buckets = {}
        for _, port in workers:
            for line in metric(port, "").splitlines():
                found = re.match(r'handoff_timer_lag_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
                if found:
                    buckets[found.group(1)] = buckets.get(found.group(1), 0) + int(found.group(2))
        stop(workers)
        total = buckets.get("+Inf", 0)

        def quantile(q):
            for bound, count in sorted(((float(b) if b != "+Inf" else float("inf")), c) for b, c in buckets.items()):
                if count >= q * total:
                    return bound
            return float("inf")

        print(f"  {total} wakes: median ≤ {quantile(0.5)} s, 99th percentile ≤ {quantile(0.99)} s (histogram bucket bounds)")
    finally:
        sim.kill()
        if cluster:
            subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), "stop", cluster], capture_output=True)


if __name__ == "__main__":
    main()
