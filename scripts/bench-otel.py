#!/usr/bin/env python3
"""What exporting traces costs a batch: `handoff run --each --jobs 8` against
`handoff sim`, with OpenTelemetry export off, on (`--otlp`, to a loopback
collector in this script that reads each export and answers 200), and on but
sampling nothing (`OTEL_TRACES_SAMPLER=always_off`), in one run on the same
machine, alternating, five times each on fresh instances; the best of each
counts. Also the CPU the handoff process used (user and system) and
the spans and bytes the collector received. Every task is checked to have
been completed exactly once.

    cargo build --profile dist && scripts/bench-otel.py [N]      # N defaults to 2000
"""
import http.client
import importlib.util
import http.server
import json
import os
import resource
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
FLOW = os.path.join(ROOT, "flows", "complete-nwc-task.yaml")
TRIES = 5


class Collector(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received = {"requests": 0, "bytes": 0}

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        Collector.received["requests"] += 1
        Collector.received["bytes"] += len(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


# The simulator, its instances and the exactly-once check: bench-batch.py's.
_spec = importlib.util.spec_from_file_location(
    "bench_batch", os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench-batch.py"))
_batch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_batch)
start_sim, instances, check = _batch.start_sim, _batch.instances, _batch.check


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    sim, host, port = start_sim()
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    otlp = f"http://127.0.0.1:{collector.server_address[1]}"
    env = {**os.environ, "NWC_BASE_URL": f"http://{host}:{port}", "NWC_TOKEN": _batch.TOKEN}
    for var in list(env):
        if var.startswith("OTEL_"):
            del env[var]
    conn = http.client.HTTPConnection(host, port)
    work = tempfile.mkdtemp(prefix="handoff-bench-otel-")
    rows = os.path.join(work, "rows.jsonl")
    ways = {"off": ([], {}), "on": (["--otlp", otlp], {}),
            "unsampled": (["--otlp", otlp], {"OTEL_TRACES_SAMPLER": "always_off"})}
    best = {way: (0.0, None) for way in ways}
    try:
        for _ in range(TRIES):
            for way, (extra_args, extra_env) in ways.items():
                made = instances(conn, n)
                with open(rows, "w") as f:
                    for instance, _ in made:
                        f.write(json.dumps({"instance_id": instance}) + "\n")
                args = [BIN, "--color", "never", "run", FLOW, "--each", rows, "--jobs", "8", "--quiet"]
                args += extra_args
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                subprocess.run(args, env={**env, **extra_env}, stdout=subprocess.DEVNULL, check=True)
                seconds = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                check(conn, made)
                rate = n / seconds
                print(f"export {way:<9} {rate:8.0f} completions/s  {cpu * 1e6 / n:6.0f} µs CPU a completion")
                if rate > best[way][0]:
                    best[way] = (rate, cpu * 1e6 / n)
        got = Collector.received
        print()
        for way, (rate, cpu) in best.items():
            print(f"best {way:<9} {rate:6.0f}/s ({rate / best['off'][0]:.2f} of off), "
                  f"{cpu:4.0f} µs CPU a completion ({cpu / best['off'][1]:.2f}×)")
        print(f"the collector took {got['requests']} exports, {got['bytes'] / TRIES / n:.0f} bytes a sampled run")
    finally:
        sim.kill()
        collector.shutdown()


if __name__ == "__main__":
    main()
