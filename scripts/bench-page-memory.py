#!/usr/bin/env python3
"""What one large page of tasks costs: `get_tasks` reads a page of 1, 5 and
9.5 MB (a response is at most 10 MB) from a local file server, and the process's peak resident memory is
read from the kernel (wait4's ru_maxrss). The 1 MB page is the baseline; the
figures are shown as memory per byte of page, so they do not depend on
this machine.

    cargo build --profile dist && scripts/bench-page-memory.py

$HANDOFF_BIN runs another build (an older commit, say) for comparison.
"""
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("HANDOFF_BIN") or os.path.join(ROOT, "target", "dist", "handoff")
# Not a build older than the code checked out (scripts/build_check.py, beside this one).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_check  # noqa: E402

build_check.fresh(BIN)
FLOW = os.path.join(ROOT, "scripts", "bench", "big-page.yaml")


def page(megabytes):
    task = {"id": "", "name": "Inspect container", "status": "active", "workflowName": "Inspection",
            "workflowInstanceId": "7c1e4b52-0000-0000-0000-000000000000", "createdDate": "2026-12-01T10:00:00Z",
            "outcomes": ["Completed", "Canceled"], "description": "x" * 40}
    tasks, size, i = [], 0, 0
    while size < megabytes * 1024 * 1024:
        t = dict(task, id=f"task-{i:08d}")
        tasks.append(t)
        size += len(json.dumps(t)) + 1
        i += 1
    return json.dumps({"tasks": tasks}).encode()


def main():
    with tempfile.TemporaryDirectory() as folder:
        os.makedirs(os.path.join(folder, "workflows", "v2"))
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        handler = lambda *a: Quiet(*a, directory=folder)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        print(f"{'page':>7}  {'tasks':>7}  {'peak RSS':>10}  {'RSS per page byte':>18}")
        for mb in (1, 5, 9.5):
            body = page(mb)
            with open(os.path.join(folder, "workflows", "v2", "tasks"), "wb") as f:
                f.write(body)
            env = {**os.environ, "NWC_BASE_URL": base, "NWC_TOKEN": "bench-secret-token-0123"}
            child = subprocess.Popen([BIN, "--color", "never", "run", FLOW, "--quiet"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(child.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(child.stdout.read().decode() + child.stderr.read().decode())
            rss = usage.ru_maxrss * 1024
            count = body.count(b'"id"')
            print(f"{len(body) / 2**20:>5.1f} MB  {count:>7}  {rss / 2**20:>7.1f} MB  {rss / len(body):>17.1f}×")
        server.shutdown()


if __name__ == "__main__":
    main()
